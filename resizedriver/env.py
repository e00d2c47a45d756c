"""What every operation needs from the host it runs on."""

from __future__ import annotations

import dataclasses
import socket
from typing import Callable, ContextManager, Optional, Protocol

from oslo_config import cfg

from resizedriver.host import Host
from resizedriver.model import GiB
from resizedriver.qemuimg import QemuImg
from resizedriver.transport import LocalTransport, Transport

#: progress(what, bytes done, bytes total)
CopyProgress = Callable[[str, int, int], None]


class RbdImages(Protocol):
    """The cluster as the ``rbd`` plan needs it (the Nova adapter's:
    librbd through Nova's ``RBDDriver``, with ``[libvirt]``'s ceph.conf
    and user).
    ``image``: ``<pool>/<name>``, as ``DiskFile.path`` of an RBD disk."""

    def session(self) -> ContextManager[None]:
        """Within it, every call reuses one connection to the cluster
        (made on first use): an operation's calls, some of them with the
        guest down, do not each connect anew."""

    def size(self, image: str) -> int: ...

    def resize(self, image: str, size: int) -> None: ...

    def snapshots(self, image: str) -> list[str]: ...

    def create_snapshot(self, image: str, snap: str) -> None: ...

    def remove_snapshot(self, image: str, snap: str) -> None: ...

    def rollback(self, image: str, snap: str) -> None: ...


@dataclasses.dataclass
class HostEnv:
    conf: cfg.ConfigOpts
    host: Host
    progress: Optional[CopyProgress] = None
    #: the Ceph cluster of the instances' RBD images (the ``rbd`` plan's);
    #: only an integration that owns RBD disks (Nova's) gives one
    rbd: Optional[RbdImages] = None

    @property
    def instances_path(self) -> str:
        return self.conf.instances_path

    @property
    def hostname(self) -> str:
        return socket.gethostname()

    @property
    def virt_type(self) -> str:
        return self.host.virt_type(self.conf.libvirt.virt_type)

    @property
    def local(self) -> Transport:
        return LocalTransport()

    def qemu_img(self, transport: Optional[Transport] = None) -> QemuImg:
        return QemuImg(transport or self.local,
                       self.conf.resizedriver.max_virtual_size_gb * GiB)
