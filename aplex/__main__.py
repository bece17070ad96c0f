"""The ``python -m aplex`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aplex", description="aplex's tools.")
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    bench = commands.add_parser(
        "bench",
        help="a quick benchmark against the standard library (under a minute)",
        description=(
            "Benchmark aplex's process and thread executors against the standard "
            "library's, pools of 2, each system in a fresh process per round. A live "
            "progress line goes to stderr, the Markdown table to stdout."
        ),
    )
    bench.add_argument(
        "--rounds", type=_positive, default=3, help="rounds; the table shows medians (default 3)"
    )
    bench.add_argument("--quick", action="store_true", help="smaller sizes, a few seconds a round")
    args = parser.parse_args(argv)

    from . import _bench

    return _bench.main(rounds=args.rounds, quick=args.quick)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
