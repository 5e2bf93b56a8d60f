"""Sphinx configuration of the API reference, generated from the docstrings.

Build it with ``make docs`` (or ``sphinx-build -W -b html docs/api
build/docs/html``); ``tests/test_docs.py`` builds it with warnings as
errors. The docstrings are written for readers of the source (reST roles where
they help, plain prose elsewhere), so cross-references that do not resolve are
not reported (``nitpicky`` off) and type hints are shown in the description.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # document the checkout, not whatever copy is installed

import secagg  # noqa: E402

project = "secagg"
author = "the secagg authors"
copyright = "the secagg authors"
release = secagg.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build"]
nitpicky = False
default_role = "literal"  # `name` in a docstring is code, as in the Markdown docs

autodoc_default_options = {
    "members": True,
    "undoc-members": False,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autoclass_content = "class"
# the docstrings name the modules' public API in __all__; a name re-exported in
# several places is documented where it is defined
autodoc_inherit_docstrings = True

napoleon_google_docstring = False
napoleon_numpy_docstring = True

# The Flower adapter is documented only where flwr is installed (the 'flower'
# extra); without it its modules are imported against a stand-in.
if importlib.util.find_spec("flwr") is None:
    autodoc_mock_imports = ["flwr"]

html_theme = "alabaster"
html_title = f"secagg {release} API reference"
html_static_path: list[str] = []
