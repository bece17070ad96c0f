"""aplex's static types, as a user's type checker sees them.

``mypy --strict`` runs on user-side code in tests/typing/ (never collected,
never run): ``ok.py`` holds correct uses, with ``assert_type``, and must be
clean; ``mistakes.py`` holds planted mistakes, each line tagged
``# E: <codes>``, and mypy must report an error on each tagged line, with one
of its codes, and on no other line.

Both are checked against aplex built into a wheel and installed apart from
the source tree, as a user gets it; that wheel must hold every module and
``py.typed``. The last test checks that mypy finds aplex as this environment
installed it: in CI, the README's editable install.

Select these tests with ``python -m pytest -m typing``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.typing, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
TYPING = ROOT / "tests" / "typing"
OK = TYPING / "ok.py"
MISTAKES = TYPING / "mistakes.py"

# A build and a mypy run take seconds; the bound is for a loaded machine.
SUBPROCESS_TIMEOUT = 240

ERROR = re.compile(
    r"^(?P<path>.+?):(?P<line>\d+): error: (?P<message>.*?)(?:  \[(?P<code>[a-z-]+)\])?$"
)
TAG = re.compile(r"#\s*E:\s*(?P<codes>[a-z|-]+)\s*$")


@dataclass(frozen=True)
class MypyError:
    path: Path
    line: int
    code: str | None
    message: str

    @property
    def file(self) -> str:
        return self.path.name

    def __str__(self) -> str:
        text = self.path.read_text().splitlines() if self.path.is_file() else []
        source = text[self.line - 1].strip() if 0 < self.line <= len(text) else ""
        return f"  {self.file}:{self.line}: [{self.code}] {self.message}\n      {source}"


def _not_sources(directory: str, names: list[str]) -> set[str]:
    """What the copy of the work tree leaves out: VCS, virtual environments,
    caches and earlier builds (a stale build/ would reach the wheel)."""
    return {
        name
        for name in names
        if name.startswith(".")
        or name in {"build", "dist", "venv", "__pycache__", "_build"}
        or name.endswith(".egg-info")
    }


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding aplex as its wheel installs it, and nothing else.

    Built offline from a copy of the work tree, with this environment's
    setuptools (the test extra pins one that builds wheels).
    """
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=_not_sources)
    target = base / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--no-compile",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert (target / "aplex" / "__init__.py").is_file()
    return target


def _run_mypy(
    files: list[Path], cwd: Path, *, only_site: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``mypy --strict`` as a user would, from ``cwd`` (outside the repo,
    so that mypy does not pick the source tree up from its working directory
    nor the repo's own [tool.mypy] settings).

    With ``only_site``, aplex is looked up there and not in this environment:
    python runs without ``site`` (so no ``.pth`` file, the editable install's
    included, adds anything), with ``only_site`` ahead of this environment's
    site-packages on its path. mypy takes its search path from it and, as for
    any installed package, requires ``py.typed``.
    """
    config = cwd / "mypy.ini"
    config.write_text("[mypy]\n")
    env = {key: value for key, value in os.environ.items() if key not in ("MYPYPATH", "PYTHONPATH")}
    command = [sys.executable]
    if only_site is not None:
        command.append("-S")
        env["PYTHONPATH"] = os.pathsep.join([str(only_site), *site.getsitepackages()])
    command += [
        "-m",
        "mypy",
        "--strict",
        "--config-file",
        str(config),
        "--cache-dir",
        str(cwd / ".mypy_cache"),
        "--no-error-summary",
        "--show-absolute-path",
        *map(str, files),
    ]
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT
    )


def _errors(completed: subprocess.CompletedProcess[str]) -> list[MypyError]:
    """mypy's errors; any other failure of mypy (a crash, a bad option) fails the test."""
    output = completed.stdout + completed.stderr
    assert completed.returncode in (0, 1), f"mypy failed to run:\n{output}"
    errors = []
    for line in completed.stdout.splitlines():
        match = ERROR.match(line)
        if match:
            errors.append(
                MypyError(Path(match["path"]), int(match["line"]), match["code"], match["message"])
            )
    assert bool(errors) == (completed.returncode == 1), f"unparsed mypy output:\n{output}"
    return errors


@pytest.fixture(scope="module")
def wheel_errors(wheel_site: Path, tmp_path_factory: pytest.TempPathFactory) -> list[MypyError]:
    """mypy's errors on the user-side files, checked against the wheel."""
    cwd = tmp_path_factory.mktemp("mypy")
    # The check below is only worth anything if aplex comes from the wheel.
    origin = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import importlib.util as u; print(u.find_spec('aplex').origin)",
        ],
        cwd=cwd,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(wheel_site), *site.getsitepackages()]),
        },
        capture_output=True,
        text=True,
        check=True,
        timeout=SUBPROCESS_TIMEOUT,
    ).stdout.strip()
    assert Path(origin).is_relative_to(wheel_site), origin
    # Copies, as a user's own files: in place, mypy would take tests/typing
    # for a namespace package of the tests package, and the work tree's
    # aplex through it.
    files = [Path(shutil.copy(path, cwd)) for path in (OK, MISTAKES)]
    return _errors(_run_mypy(files, cwd, only_site=wheel_site))


def test_the_wheel_ships_every_module_and_py_typed(wheel_site: Path):
    """What pip installs from the wheel is the whole package: a subpackage left
    out of pyproject's package list fails every import of it there, while the
    editable install, which reads the work tree, hides the miss (and mypy
    silences errors inside an installed package, so the checks below would
    not show it either)."""
    package = ROOT / "aplex"
    wanted = {path.relative_to(ROOT).as_posix() for path in package.rglob("*.py")}
    wanted.add("aplex/py.typed")
    shipped = {
        path.relative_to(wheel_site).as_posix()
        for path in (wheel_site / "aplex").rglob("*")
        if path.is_file()
    }
    assert wanted <= shipped, f"missing from the wheel: {sorted(wanted - shipped)}"


def test_correct_uses_type_check_cleanly(wheel_errors: list[MypyError]):
    # Errors anywhere but in the planted mistakes count: in ok.py, or in an
    # aplex module mypy would not silence as it does an installed package's.
    errors = [error for error in wheel_errors if error.file != MISTAKES.name]
    assert not errors, "mypy --strict rejects correct uses of aplex:\n" + "\n".join(
        map(str, errors)
    )


def test_every_planted_mistake_and_nothing_else_is_reported(
    wheel_errors: list[MypyError],
):
    source = MISTAKES.read_text().splitlines()
    tagged = {
        number: set(match["codes"].split("|"))
        for number, text in enumerate(source, start=1)
        if (match := TAG.search(text))
    }
    assert len(tagged) >= 12, "the planted mistakes went missing"
    errors = [error for error in wheel_errors if error.file == MISTAKES.name]
    codes_by_line: dict[int, set[str | None]] = {}
    for error in errors:
        codes_by_line.setdefault(error.line, set()).add(error.code)

    problems = []
    for number, expected in sorted(tagged.items()):
        found = codes_by_line.get(number)
        if found is None:
            problems.append(f"  not caught, line {number}: {source[number - 1].strip()}")
        elif not found & expected:
            problems.append(
                f"  caught as {sorted(map(str, found))}, not {sorted(expected)}, "
                f"line {number}: {source[number - 1].strip()}"
            )
    unexpected = [error for error in errors if error.line not in tagged]
    if unexpected:
        problems.append(
            "  errors on lines with no planted mistake:\n" + "\n".join(map(str, unexpected))
        )
    assert not problems, (
        f"mypy --strict on {MISTAKES.name} ({len(tagged)} planted mistakes):\n"
        + "\n".join(problems)
    )


def test_mypy_finds_aplex_as_installed_in_this_environment(tmp_path: Path):
    """A user's mypy, run in their own project, finds aplex and its types.

    With setuptools' default editable install (an import hook mypy cannot
    see) this fails with "Cannot find implementation or library stub".
    """
    spec = importlib.util.find_spec("aplex")
    assert spec is not None and spec.origin is not None
    script = tmp_path / "user_script.py"
    script.write_text(
        "from typing_extensions import assert_type\n"
        "\n"
        "import aplex\n"
        "import aplex.backends.trio\n"
        "\n"
        "assert_type(aplex.__version__, str)\n"
    )
    completed = _run_mypy([script], tmp_path)
    assert _errors(completed) == [], (
        f"mypy does not see aplex as installed at {Path(spec.origin).parent}:\n"
        + completed.stdout
        + completed.stderr
    )
