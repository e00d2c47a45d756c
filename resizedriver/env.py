"""What every operation needs from the host it runs on."""

from __future__ import annotations

import dataclasses
import socket
from typing import Callable, Optional

from oslo_config import cfg

from resizedriver.host import Host
from resizedriver.model import GiB
from resizedriver.qemuimg import QemuImg
from resizedriver.transport import LocalTransport, Transport

#: progress(what, bytes done, bytes total)
CopyProgress = Callable[[str, int, int], None]


@dataclasses.dataclass
class HostEnv:
    conf: cfg.ConfigOpts
    host: Host
    progress: Optional[CopyProgress] = None

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
