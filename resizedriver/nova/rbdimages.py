"""The Ceph cluster of Nova's RBD images, as the ``rbd`` plan uses it
(``resizedriver.operations.rbd.RbdImages``): Nova's own ``RBDDriver``,
so its ``[libvirt] images_rbd_ceph_conf`` and ``rbd_user`` apply, as to
Nova's own resize, in the pool each image names."""

from __future__ import annotations

from nova.storage import rbd_utils


def _driver(image: str) -> tuple[rbd_utils.RBDDriver, str]:
    pool, _, name = image.partition('/')
    return rbd_utils.RBDDriver(pool=pool), name


class NovaRbdImages:
    """``RbdImages`` through librbd, one connection per call (a resize
    makes a handful)."""

    def size(self, image: str) -> int:
        driver, name = _driver(image)
        return int(driver.size(name))

    def resize(self, image: str, size: int) -> None:
        driver, name = _driver(image)
        driver.resize(name, size)

    def snapshots(self, image: str) -> list[str]:
        driver, name = _driver(image)
        with rbd_utils.RBDVolumeProxy(driver, name, read_only=True) as vol:
            return sorted(s['name'] for s in vol.list_snaps())

    def create_snapshot(self, image: str, snap: str) -> None:
        driver, name = _driver(image)
        driver.create_snap(name, snap)

    def remove_snapshot(self, image: str, snap: str) -> None:
        """Gone already is fine (``ignore_errors``: no warning then)."""
        driver, name = _driver(image)
        driver.remove_snap(name, snap, ignore_errors=True)

    def rollback(self, image: str, snap: str) -> None:
        driver, name = _driver(image)
        driver.rollback_to_snap(name, snap)


def drop_snapshots_of(uuid: str, snap: str) -> list[str]:
    """Remove ``snap`` from each image of instance ``uuid`` in Nova's pool
    (``images_rbd_pool``: the names Nova's ``_cleanup_rbd`` picks); the
    images it was on.  For Nova's delete, whose cleanup removes its own
    ``nova-resize`` snapshot before an image, and no other."""
    driver = rbd_utils.RBDDriver()
    with rbd_utils.RADOSClient(driver, driver.pool) as client:
        names = rbd_utils.RbdProxy().list(client.ioctx)
    images = [f'{driver.pool}/{name}' for name in names
              if name.startswith(uuid)]
    own = NovaRbdImages()
    dropped = [image for image in images if snap in own.snapshots(image)]
    for image in dropped:
        own.remove_snapshot(image, snap)
    return dropped
