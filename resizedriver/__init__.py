"""resizedriver: resize and cold migration for Nova's libvirt driver.

``resizedriver.LibvirtResizeDriver`` (the Nova driver class) is resolved on
first access so that the engine and the operator CLI never import Nova.
"""


def __getattr__(name: str):
    if name == 'LibvirtResizeDriver':
        from resizedriver.nova.driver import LibvirtResizeDriver
        return LibvirtResizeDriver
    raise AttributeError(name)
