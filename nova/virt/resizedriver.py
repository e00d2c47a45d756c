"""Shim: lets nova.conf say
``compute_driver = resizedriver.LibvirtResizeDriver``.

Nova loads ``nova.virt.<compute_driver>``; this module lives there and
resolves the real class through the ``resizedriver.compute_drivers``
entry point group, so setup.cfg stays the one place that names it.
"""

from importlib import metadata


def _load(name: str) -> type:
    for ep in metadata.entry_points(group='resizedriver.compute_drivers'):
        if ep.name == name:
            return ep.load()
    raise ImportError(f'no resizedriver compute driver named {name!r}: '
                      f'is the resizedriver package installed?')


LibvirtResizeDriver = _load('LibvirtResizeDriver')
