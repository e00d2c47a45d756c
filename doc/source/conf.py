"""Sphinx configuration of the documentation (``tox -e docs``)."""

project = 'resizedriver'
copyright = '2026, resizedriver developers'
extensions = [
    'sphinx.ext.autodoc',
    # the configuration reference, from the options themselves
    'oslo_config.sphinxext',
]
master_doc = 'index'
exclude_patterns: list[str] = []
html_theme = 'alabaster'
html_static_path: list[str] = []
templates_path: list[str] = []
# the chooser's rule table is its module docstring: show it, not members
autodoc_default_options = {'members': False}
