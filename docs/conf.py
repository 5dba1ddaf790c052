"""Sphinx configuration: the API reference (api.rst, from the docstrings of
the installed netcore) and the guides (Markdown, through myst-parser).

    python -m sphinx -W -b html docs docs/_build/html

tests/test_docs.py builds it with -W, so a broken reference or docstring fails
the suite. Nothing is fetched from the network (no intersphinx).
"""
import importlib
import pkgutil

import netcore

# Every module of netcore imported before autodoc looks: Sphinx 9 documents a
# compiled module that is not imported yet from its .pyi stub instead (and
# puts the stub in sys.modules), which has the types but not the docstrings.
for _module in pkgutil.iter_modules(netcore.__path__):
    importlib.import_module(f"netcore.{_module.name}")

project = "netcore"
release = version = netcore.__version__
author = "the netcore developers"
copyright = "netcore"

extensions = ["sphinx.ext.autodoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# The compiled classes document their constructor in the class docstring.
autoclass_content = "both"
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
add_module_names = False

# Headings become link targets (architecture.md#more-than-one-process-...).
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"netcore {release}"
