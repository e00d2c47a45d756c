"""Find what an instance is made of, from its definition and its files.

Every path comes from the domain definition, but is trusted only once it is
known to be a regular file directly inside the instance directory (symlinks
resolved) with a name whose role we know; backing files must resolve into
``_base``.  Anything else is refused before anything is touched.

Disk contents are guest-controlled and the record comes from the other
host: a disk is read only as the format it is declared to be (never
probed), and the same checks (``inspect_disk``, ``check_base``) guard both
the source (``discover``) and the destination (``check_copy``).
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from resizedriver import domain_xml
from resizedriver import headroom
from resizedriver import exception
from resizedriver.layout import InstanceLayout
from resizedriver.model import (GROWABLE, RBD, DiskFile, DiskRole, Flavor,
                                role_for_name)
from resizedriver.qemuimg import ImageInfo, QemuImg, read_header

#: Roles whose files are plain files, not disk images.
BOOT_ROLES = (DiskRole.KERNEL, DiskRole.RAMDISK)


def inside(path: str, directory: str) -> bool:
    """Whether ``path`` (symlinks resolved) is directly in ``directory``."""
    real = os.path.realpath(path)
    return os.path.dirname(real) == os.path.realpath(directory)


def _checked(path: str, inst: InstanceLayout,
             name: Optional[str] = None) -> tuple[str, DiskRole]:
    """The name and role of a file of the instance directory (``name``:
    the instance file it stands for, default its own)."""
    name = name or os.path.basename(path)
    if not inside(path, inst.dir):
        raise exception.UnsafePath(
            f'{path} resolves outside the instance directory {inst.dir}')
    role = role_for_name(name)
    if role is None:
        raise exception.UnsupportedDisk(
            f'{path}: unknown file in the instance directory')
    if not os.path.isfile(path):
        raise exception.UnsupportedDisk(f'{path}: not a regular file')
    return name, role


def inspect_disk(path: str, fmt: str, qemu_img: QemuImg) -> ImageInfo:
    """qemu-img info of an untrusted local disk, read as ``fmt`` only.

    ``fmt`` is what the definition or the record claims.  A raw disk's
    bytes are guest data: one that holds a qcow2 header pointing anywhere
    is simply raw (CVE-2024-32498).  A disk claimed to be qcow2 must carry
    a qcow2 header with no external data file before qemu-img may open it.
    A recorded backing format must be raw, so that nothing ever probes
    the backing file.
    """
    header = read_header(path)            # also refuses FIFOs, devices
    if fmt == 'qcow2' and header.format != 'qcow2':
        raise exception.UnsupportedDisk(
            f'{path}: declared qcow2 but the file is '
            f'{header.format or "raw data"}: refused')
    if fmt == 'qcow2' and header.data_file:
        raise exception.UnsupportedDisk(
            f'{path}: qcow2 image with an external data file: refused '
            f'before qemu-img opens it')
    info = qemu_img.info(path, fmt)
    if info.backing_file and info.backing_format not in (None, 'raw'):
        raise exception.UnsupportedDisk(
            f'{path}: backing file format {info.backing_format!r} is '
            f'refused (backing files must be raw)')
    return info


def check_base(disk: str, backing: str, base_dir: str) -> None:
    """Refuse ``backing`` unless it is a plain raw file in ``base_dir``.

    Directly in ``base_dir`` once symlinks are resolved, a regular file,
    and not an image itself: a base that is a qcow2 (or vmdk, qed) would
    make a chain deeper than one whose far end nobody checked.  Nova keeps
    only raw files in ``_base``.
    """
    if not (inside(backing, base_dir) and os.path.isfile(backing)):
        raise exception.UnsafePath(
            f'{disk}: backing file {backing} is not a file in {base_dir}')
    found = read_header(backing).format
    if found:
        raise exception.UnsupportedDisk(
            f'{disk}: backing file {backing} is itself a {found} image: '
            f'backing chains deeper than one are refused')


def discover(xml: str, inst: InstanceLayout, qemu_img: QemuImg) \
        -> list[DiskFile]:
    """The instance's own files: disks in its directory, kernel, ramdisk.

    A disk is read as the format its ``<driver type>`` declares; none
    declared means raw, as libvirt (which no longer probes) hands it to
    QEMU.  A backing file must be named by a plain absolute path (no
    ``..``, no ``json:``) to a file in this host's ``_base``; one in the
    instance directory is refused too, since a resize carries backing
    files only through ``_base``.
    """
    disks = []
    for d in domain_xml.file_disks(xml):
        if os.path.dirname(d.path) != inst.dir:
            continue              # a volume or an ISO: not ours to move
        name, role = _checked(d.path, inst)
        info = inspect_disk(d.path, d.driver_type or 'raw', qemu_img)
        backing = info.backing_file
        if backing and not (os.path.isabs(backing) and
                            os.path.normpath(backing) == backing):
            raise exception.UnsafePath(
                f'{d.path}: backing file {backing!r} is not a plain '
                f'absolute path')
        if backing:
            check_base(d.path, backing, inst.base_dir)
        disks.append(DiskFile(
            name=name, role=role, path=d.path,
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


def own_rbd(xml: str, uuid: str) -> dict[str, str]:
    """The instance's own RBD images, by target device: their Nova name
    (``disk``, ``disk.local``, ...).  Nova names them
    ``<pool>/<uuid>_<name>``; any other RBD disk (a volume, another
    instance's image, a namespace) is not the instance's."""
    own = {}
    for dev, source in domain_xml.rbd_disks(xml).items():
        pool, _, image = source.partition('/')
        name = image.removeprefix(f'{uuid}_')
        role = role_for_name(name) if name != image else None
        if pool and role is not None and role not in BOOT_ROLES:
            own[dev] = name
    return own


def rbd_disks(xml: str, uuid: str,
              capacity: Callable[[str], int]) -> list[DiskFile]:
    """The instance's own RBD images (:func:`own_rbd`), their size the
    one the running guest's QEMU reads from librbd (``capacity``: target
    device -> bytes; libvirt's blockInfo).  Nothing of them is copied
    (``actual_size`` 0): the cluster is shared."""
    sources = domain_xml.rbd_disks(xml)
    disks = []
    for dev, name in own_rbd(xml, uuid).items():
        role = role_for_name(name)
        assert role is not None                 # own_rbd made sure
        disks.append(DiskFile(name=name, role=role, path=sources[dev],
                              format=RBD, virtual_size=capacity(dev),
                              actual_size=0, target_dev=dev))
    return disks


def check_copy(disk: DiskFile, inst: InstanceLayout,
               qemu_img: QemuImg, path: Optional[str] = None) -> None:
    """Refuse a disk copied here (to ``path``, default ``disk.path``)
    unless it is what the record says it is.

    The record is the other host's word.  The copy is read as the format
    the record claims; its header must name exactly the backing file the
    record does, whose namesake must be a plain raw file in our ``_base``
    (the path the header names is the other host's and is never opened).
    """
    path = path or disk.path
    _checked(path, inst, disk.name)
    if (disk.format == 'file') != (disk.role in BOOT_ROLES):
        raise exception.UnsupportedDisk(
            f'{path}: format {disk.format!r} does not fit a '
            f'{disk.role.value} file')
    if disk.format == 'file':
        return
    info = inspect_disk(path, disk.format, qemu_img)
    if info.virtual_size != disk.virtual_size:
        raise exception.UnsupportedDisk(
            f'{path} is {info.format}/{info.virtual_size}, the source '
            f'sent {disk.format}/{disk.virtual_size}')
    if info.backing_file != disk.backing_file:
        raise exception.UnsafePath(
            f'{path}: backing file {info.backing_file!r}, the source '
            f'sent {disk.backing_file!r}')
    if disk.backing_file:
        check_base(path, inst.base_path(disk.base_name), inst.base_dir)


def check_top(disk: DiskFile, inst: InstanceLayout, qemu_img: QemuImg,
              layer: str) -> None:
    """Refuse the copied top of a pre-copied disk (``disk.path``) unless
    it is a plain qcow2 of the recorded size backed by exactly ``layer``
    (checked with :func:`check_copy`), recorded as qcow2."""
    _checked(disk.path, inst)
    header = read_header(disk.path)
    if header.format != 'qcow2' or header.data_file:
        raise exception.UnsupportedDisk(
            f'{disk.path}: not a plain qcow2 image: refused')
    info = qemu_img.info(disk.path, 'qcow2')
    if (info.backing_file, info.backing_format) != (layer, 'qcow2') or \
            info.virtual_size != disk.virtual_size:
        raise exception.UnsupportedDisk(
            f'{disk.path}: backing {info.backing_file!r} as '
            f'{info.backing_format!r}, {info.virtual_size} bytes; wanted '
            f'{layer!r} as qcow2, {disk.virtual_size} bytes')


def current_flavor(xml: str, disks: list[DiskFile]) -> Flavor:
    """The flavor an instance has now, read off its definition and disks."""
    now = headroom.of_domain(xml)
    vcpus, memory_mib = now.vcpus, now.memory_mib

    def size(role: DiskRole) -> int:
        return max((d.virtual_size for d in disks if d.role is role),
                   default=0)
    return Flavor(vcpus=vcpus, memory_mib=memory_mib,
                  root_bytes=size(DiskRole.ROOT),
                  ephemeral_bytes=size(DiskRole.EPHEMERAL),
                  swap_bytes=size(DiskRole.SWAP))


def larger_than_asked(disks: list[DiskFile], new: Flavor) -> list[DiskFile]:
    """The root and ephemeral disks already larger than ``new`` asks (0
    asks for none): grown outside the flavor, or kept grown by the revert
    of a live resize.  A resize keeps them at their size
    (``model.grown_size``); whether it may run at all is the shrink
    rule's to say (:func:`check_no_shrink`, or an integration's)."""
    return [d for d in disks if d.role in GROWABLE and
            0 < new.size_for(d.role) < d.virtual_size]


def check_no_shrink(disks: list[DiskFile], new: Flavor) -> None:
    """The operator command's shrink rule: refuse a new size below a
    disk's size.

    The command has no flavor on record, only the disks, and the sizes
    it asks for are the operator's own for this resize (``--root-size``;
    a size left out is the disk's size, so a disk is never in the way of
    a CPU or memory change).  A disk larger than asked can be neither
    shrunk (its filesystem may use the space) nor silently kept (the
    resize would not do what was asked): refused before anything is
    touched.  Nova decides from its flavors instead (the Nova adapter's
    ``NovaMigrate``)."""
    for d in larger_than_asked(disks, new):
        raise exception.DiskShrinkRefused(
            f'cannot shrink {d.name} from {d.virtual_size} to '
            f'{new.size_for(d.role)} bytes: resizing a disk down is not '
            f'supported')


#: mkswap refuses a swap area of fewer than 10 pages.
MKSWAP_MIN_PAGES = 10
SECTOR = 512


def check_new_sizes(new: Flavor, max_virtual_size: int) -> None:
    """Refuse disk sizes the destination would fail on after power off, or
    that would make an instance every later operation rejects."""
    min_swap = MKSWAP_MIN_PAGES * os.sysconf('SC_PAGESIZE')
    for what, size in (('root disk', new.root_bytes),
                       ('ephemeral disk', new.ephemeral_bytes),
                       ('swap', new.swap_bytes)):
        if size % SECTOR:
            raise exception.ResizeRefused(
                f'new {what} size {size} bytes is not a multiple of '
                f'{SECTOR}')
        if size > max_virtual_size:
            raise exception.ResizeRefused(
                f'new {what} size {size} bytes is larger than '
                f'max_virtual_size_gb allows ({max_virtual_size} bytes)')
    if 0 < new.swap_bytes < min_swap:
        raise exception.ResizeRefused(
            f'new swap size {new.swap_bytes} bytes is below the '
            f'{min_swap} bytes mkswap needs (0 removes swap)')


def written_config_drives(disks: list[DiskFile], xml: str) -> list[DiskFile]:
    """The config drives among ``disks`` that the guest defined by ``xml``
    may write (``domain_xml.guest_writes``: Nova's vfat ones).  A copy of
    one taken while the guest runs may miss its last writes, and a hard
    link to one would carry the resized guest's writes into the source
    copy a revert goes back to: they are copied, with the guest off."""
    writes = domain_xml.guest_writes(xml)
    return [d for d in disks if d.role is DiskRole.CONFIG and
            d.path in writes]
