"""Sphinx configuration: Markdown pages (MyST) and the API from docstrings."""

from __future__ import annotations

import aplex

project = "aplex"
author = "the aplex developers"
copyright = "2026, the aplex developers"
release = aplex.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# No intersphinx: CI has no network to fetch other projects' inventories.
nitpicky = False

html_theme = "furo"
html_title = f"aplex {release}"
