"""Sphinx configuration of the jaxrestore documentation (MyST Markdown pages, API reference
generated from the docstrings). Build: ``sphinx-build -W -b html docs docs/_build/html``."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from jaxrestore import __version__  # noqa: E402

project = "jaxrestore"
author = "the jaxrestore developers"
release = version = __version__
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.autosummary", "sphinx.ext.napoleon", 
              "sphinx.ext.mathjax", "sphinx-mathjax-offline", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
html_theme = "furo"
html_title = f"jaxrestore {version}"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
