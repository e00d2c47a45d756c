"""The Ceph cluster of Nova's RBD images, as the ``rbd`` plan uses it
(``resizedriver.operations.rbd.RbdImages``): Nova's own ``RBDDriver``,
so its ``[libvirt] images_rbd_ceph_conf`` and ``rbd_user`` apply, as to
Nova's own resize, in the pool each image names."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

from nova.storage import rbd_utils


class _SessionDriver(rbd_utils.RBDDriver):
    """Nova's driver, connecting through ``images`` (which keeps the
    connection while a session is open) instead of once per call."""

    def __init__(self, images: 'NovaRbdImages', pool: str) -> None:
        super().__init__(pool=pool)
        self._images = images

    def _connect_to_rados(self, pool: Any = None) -> tuple[Any, Any]:
        return self._images.connection(self, str(pool or self.pool))

    def _disconnect_from_rados(self, client: Any, ioctx: Any) -> None:
        self._images.release(client, ioctx)


class NovaRbdImages:
    """``RbdImages`` through librbd.  Outside a session each call
    connects and disconnects, as Nova's own; within one
    (:meth:`session`), the first call's connection (client and pool
    context) serves every later one until the last session ends: a
    librados connect (0.02 s here, more on a cluster with more monitors
    or farther away) takes longer than the call it serves (a few ms),
    and the ``rbd`` plan makes several calls with the guest down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions = 0
        #: pool -> (client, ioctx), while a session is open
        self._open: dict[str, tuple[Any, Any]] = {}

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Operations of several instances may overlap: the connection
        goes when the last of their sessions ends."""
        with self._lock:
            self._sessions += 1
        try:
            yield
        finally:
            with self._lock:
                self._sessions -= 1
                done = [] if self._sessions else list(self._open.values())
                if not self._sessions:
                    self._open.clear()
            for client, ioctx in done:
                ioctx.close()
                client.shutdown()

    def connection(self, driver: rbd_utils.RBDDriver,
                   pool: str) -> tuple[Any, Any]:
        """The session's connection to ``pool`` (made now if it has none
        yet), or a connection of the caller's own outside a session."""
        with self._lock:
            if not self._sessions:
                return rbd_utils.RBDDriver._connect_to_rados(driver, pool)
            if pool not in self._open:
                self._open[pool] = rbd_utils.RBDDriver._connect_to_rados(
                    driver, pool)
            return self._open[pool]

    def release(self, client: Any, ioctx: Any) -> None:
        """A call is done with its connection: kept if the session's."""
        with self._lock:
            if (client, ioctx) in self._open.values():
                return
        ioctx.close()
        client.shutdown()

    def _driver(self, image: str) -> tuple[rbd_utils.RBDDriver, str]:
        pool, _, name = image.partition('/')
        return _SessionDriver(self, pool), name

    def size(self, image: str) -> int:
        driver, name = self._driver(image)
        return int(driver.size(name))

    def resize(self, image: str, size: int) -> None:
        driver, name = self._driver(image)
        driver.resize(name, size)

    def snapshots(self, image: str) -> list[str]:
        driver, name = self._driver(image)
        with rbd_utils.RBDVolumeProxy(driver, name, read_only=True) as vol:
            return sorted(s['name'] for s in vol.list_snaps())

    def create_snapshot(self, image: str, snap: str) -> None:
        driver, name = self._driver(image)
        driver.create_snap(name, snap)

    def remove_snapshot(self, image: str, snap: str) -> None:
        """Gone already is fine (``ignore_errors``: no warning then)."""
        driver, name = self._driver(image)
        driver.remove_snap(name, snap, ignore_errors=True)

    def rollback(self, image: str, snap: str) -> None:
        driver, name = self._driver(image)
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
    with own.session():             # one connection for every image
        dropped = [image for image in images
                   if snap in own.snapshots(image)]
        for image in dropped:
            own.remove_snapshot(image, snap)
    return dropped
