"""Sphinx configuration of the release notes (``tox -e releasenotes``)."""

project = 'resizedriver Release Notes'
copyright = '2026, resizedriver developers'
extensions = ['reno.sphinxext']
master_doc = 'index'
exclude_patterns: list[str] = []
html_theme = 'alabaster'
html_static_path: list[str] = []
templates_path: list[str] = []
