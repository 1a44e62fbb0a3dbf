"""Sphinx configuration: the guide pages (Markdown, through MyST) and the API reference
(``api.rst``, autodoc of every name in ``chanserv_trio.__all__``).

Build with ``nox -s docs`` or ``sphinx-build -W -b html docs docs/_build/html``;
``tests/test_sphinx.py`` builds it too, with warnings as errors.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

# Document this tree's package, not whatever chanserv_trio is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
chanserv_trio = importlib.import_module("chanserv_trio")

project = "chanserv_trio"
author = "the chanserv_trio authors"
copyright = "the chanserv_trio authors"
version = release = chanserv_trio.__version__

extensions = ["sphinx.ext.autodoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Headings (down to ####) get anchors like GitHub's: links to "page.md#a-heading" work.
myst_heading_anchors = 4

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_class_signature = "separated"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = f"chanserv_trio {release}"
