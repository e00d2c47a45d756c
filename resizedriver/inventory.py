"""Find what an instance is made of, from its definition and its files.

Every path comes from the domain definition, but is trusted only once it is
known to be a file directly inside the instance directory (symlinks
resolved) with a name whose role we know; backing files must resolve into
``_base``.  Anything else is refused before anything is touched.
"""

from __future__ import annotations

import os

from resizedriver import domain_xml
from resizedriver import exception
from resizedriver.layout import InstanceLayout
from resizedriver.model import DiskFile, DiskRole, Flavor, role_for_name
from resizedriver.qemuimg import QemuImg


def inside(path: str, directory: str) -> bool:
    """Whether ``path`` (symlinks resolved) is directly in ``directory``."""
    real = os.path.realpath(path)
    return os.path.dirname(real) == os.path.realpath(directory)


def _checked(path: str, inst: InstanceLayout) -> str:
    name = os.path.basename(path)
    if not inside(path, inst.dir):
        raise exception.UnsafePath(
            f'{path} resolves outside the instance directory {inst.dir}')
    if role_for_name(name) is None:
        raise exception.UnsupportedDisk(
            f'{path}: unknown file in the instance directory')
    return name


def discover(xml: str, inst: InstanceLayout, qemu_img: QemuImg) \
        -> list[DiskFile]:
    """The instance's own files: disks in its directory, kernel, ramdisk."""
    disks = []
    for d in domain_xml.file_disks(xml):
        if os.path.dirname(d.path) != inst.dir:
            continue              # a volume or an ISO: not ours to move
        name = _checked(d.path, inst)
        info = qemu_img.info(d.path)
        if d.driver_type and d.driver_type != info.format:
            raise exception.UnsupportedDisk(
                f'{d.path}: defined as {d.driver_type} but the file is '
                f'{info.format}')
        if info.backing_file and not inside(info.backing_file,
                                            inst.base_dir):
            raise exception.UnsafePath(
                f'{d.path}: backing file {info.backing_file} is not in '
                f'{inst.base_dir}')
        disks.append(DiskFile(
            name=name, role=role_for_name(name), path=d.path,
            format=info.format, virtual_size=info.virtual_size,
            actual_size=info.actual_size, backing_file=info.backing_file,
            target_dev=d.target_dev))
    for name, path in domain_xml.boot_files(xml).items():
        if os.path.dirname(path) != inst.dir:
            continue
        _checked(path, inst)
        size = os.path.getsize(path)
        disks.append(DiskFile(name=name, role=DiskRole(name), path=path,
                              format='file', virtual_size=size,
                              actual_size=size))
    return disks


def current_flavor(xml: str, disks: list[DiskFile]) -> Flavor:
    """The flavor an instance has now, read off its definition and disks."""
    vcpus, memory_mib = domain_xml.vcpus_and_memory(xml)

    def size(role: DiskRole) -> int:
        return max((d.virtual_size for d in disks if d.role is role),
                   default=0)
    return Flavor(vcpus=vcpus, memory_mib=memory_mib,
                  root_bytes=size(DiskRole.ROOT),
                  ephemeral_bytes=size(DiskRole.EPHEMERAL),
                  swap_bytes=size(DiskRole.SWAP))


def check_no_shrink(disks: list[DiskFile], new: Flavor) -> None:
    """Refuse to shrink root or ephemeral disks (0 means keep the size)."""
    for d in disks:
        want = {DiskRole.ROOT: new.root_bytes,
                DiskRole.EPHEMERAL: new.ephemeral_bytes}.get(d.role)
        if want and want < d.virtual_size:
            raise exception.DiskShrinkRefused(
                f'cannot shrink {d.name} from {d.virtual_size} to {want} '
                f'bytes: resizing a disk down is not supported')
