"""Host files outside the instance directory that a definition may keep.

A resize moves only the files in the instance directory.  A few devices
name host files elsewhere that belong to the host, not to the instance,
and must simply be there wherever the guest runs: a read-only CD-ROM
image, a guest-agent (or other chardev) socket libvirt's QEMU creates,
UEFI firmware and its variable-store template.  They are kept as they are
(``domain_xml.for_flavor`` leaves them alone).  Anything else outside the
instance directory is refused, before the guest is powered off on the
source and again on the destination, since a definition from another host
must not make this one hand its own files to a guest.

On another hypervisor the kept files must already exist there, checked
before power off.  A per-domain UEFI variable store cannot be, so moving a
UEFI guest to another host is refused (it stays on the source, running)
rather than booting it with its variables reset.
"""

from __future__ import annotations

import dataclasses
import os
import stat

from resizedriver import domain_xml
from resizedriver import exception
from resizedriver.transport import Transport

#: Where distributions install firmware images QEMU loads read-only.
FIRMWARE_DIRS = ('/usr/share/OVMF/', '/usr/share/ovmf/', '/usr/share/AAVMF/',
                 '/usr/share/edk2/', '/usr/share/qemu/', '/usr/share/seabios/')
#: libvirt's per-domain UEFI variable stores.
NVRAM_DIR = '/var/lib/libvirt/qemu/nvram'
#: Where libvirt's QEMU may create chardev sockets (Nova puts the guest
#: agent's at /var/lib/libvirt/qemu/org.qemu.guest_agent.0.<name>.sock).
SOCKET_DIRS = ('/var/lib/libvirt/qemu/', '/run/libvirt/qemu/')
#: An ISO 9660 image has "CD001" at byte 1 of sector 16.
ISO9660_MAGIC = (32769, b'CD001')


@dataclasses.dataclass(frozen=True)
class HostFile:
    path: str
    #: 'cdrom', 'socket', 'firmware' or 'nvram' (see domain_xml)
    kind: str

    @property
    def needed(self) -> str:
        """What must exist where the guest runs: a socket's directory
        (QEMU creates the socket), else the file itself."""
        return os.path.dirname(self.path) if self.kind == 'socket' \
            else self.path


def _allowed(kind: str | None, path: str) -> bool:
    if kind is None or not os.path.isabs(path) or \
            os.path.normpath(path) != path:
        return False
    if kind == 'socket':
        return path.startswith(SOCKET_DIRS)
    if kind == 'firmware':
        return path.startswith(FIRMWARE_DIRS)
    if kind == 'nvram':
        return os.path.dirname(path) == NVRAM_DIR
    return kind == 'cdrom'        # checked to be an ISO where it is used


def kept(xml: str, instance_dir: str) -> list[HostFile]:
    """The host files ``xml`` keeps; refuses any other foreign file."""
    keepable = domain_xml.keepable_host_files(xml)
    foreign = domain_xml.foreign_files(xml, instance_dir)
    refused = [p for p in foreign if not _allowed(keepable.get(p), p)]
    if refused:
        raise exception.UnsafePath(
            f'the source definition refers to files outside the instance '
            f'directory {instance_dir}: {", ".join(refused)}')
    return [HostFile(p, keepable[p]) for p in foreign]


def check_on(transport: Transport, files: list[HostFile]) -> None:
    """Before power off: another hypervisor has every kept file."""
    for f in files:
        if f.kind == 'nvram':
            raise exception.ResizeRefused(
                f'the UEFI variable store {f.path} is this host\'s; moving '
                f'a UEFI guest to another host is not supported: resize it '
                f'on this host')
    for f in files:
        if not transport.exists(f.needed):
            raise exception.ResizeRefused(
                f'{f.needed} ({f.kind}) does not exist on the destination; '
                f'the guest needs it there')


def check_here(files: list[HostFile]) -> None:
    """On the destination, for a definition from another host: each kept
    file is here and what it claims to be; a CD-ROM must be an ISO 9660
    image, so that no host file is handed to the guest as one."""
    for f in files:
        if f.kind == 'cdrom':
            _check_iso(f.path)
        elif not os.path.exists(f.needed):
            raise exception.ResizeRefused(
                f'{f.needed} ({f.kind}) does not exist on this host')


def _check_iso(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise exception.ResizeRefused(f'CD-ROM image {path}: {e}') from e
    try:
        offset, magic = ISO9660_MAGIC
        ok = (stat.S_ISREG(os.fstat(fd).st_mode) and
              os.pread(fd, len(magic), offset) == magic)
    finally:
        os.close(fd)
    if not ok:
        raise exception.UnsafePath(
            f'read-only CD-ROM {path} is not an ISO 9660 image: refused')
