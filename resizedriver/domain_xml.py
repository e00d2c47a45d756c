"""Reading and rewriting libvirt domain XML with lxml.

A resize rewrites the source definition instead of generating a new one:
every device we do not own (controllers, channels, video, RNG, whatever the
operator added) is kept as it was; we change only the CPU and memory
amounts, the domain type, and paths that live in the instance directory
(disks, kernel/initrd, console log), plus the swap disk that comes and goes
with the flavor.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from lxml import etree

from resizedriver.model import DiskFile, DiskRole, Flavor

KiB = 1024


@dataclasses.dataclass(frozen=True)
class DomainDisk:
    target_dev: str
    path: str
    driver_type: Optional[str]


@dataclasses.dataclass(frozen=True)
class DomainVif:
    mac: str
    bridge: Optional[str]
    type: str
    #: ``<virtualport type>``: openvswitch, 802.1Qbh, ... (their bridges
    #: are not Linux bridges and are someone else's to make)
    virtualport: Optional[str] = None


def parse(xml: str) -> etree._Element:
    parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False,
                             no_network=True)
    return etree.fromstring(xml.encode(), parser)


def to_string(root: etree._Element) -> str:
    return etree.tostring(root, pretty_print=True, encoding='unicode')


def file_disks(xml: str) -> list[DomainDisk]:
    """The file-backed disks of a domain, in definition order."""
    root = parse(xml)
    disks = []
    for disk in root.iterfind('./devices/disk[@type="file"]'):
        source = disk.find('source')
        target = disk.find('target')
        if source is None or source.get('file') is None or target is None:
            continue
        driver = disk.find('driver')
        disks.append(DomainDisk(
            target_dev=target.get('dev'), path=source.get('file'),
            driver_type=driver.get('type') if driver is not None else None))
    return disks


def guest_writes(xml: str) -> set[str]:
    """The files the guest may write: disks attached neither as a CD-ROM
    nor ``<readonly/>``.  Nova 34 attaches its config drive as a CD-ROM
    with ``config_drive_format = iso9660`` but as a plain writable disk
    with ``vfat`` (``blockinfo.get_config_drive_type``), so whether a
    copy taken while the guest runs is final depends on this."""
    return {source.get('file')
            for disk in parse(xml).iterfind('./devices/disk[@type="file"]')
            if disk.get('device') != 'cdrom' and
            disk.find('readonly') is None and
            (source := disk.find('source')) is not None and
            source.get('file')}


def disks_elsewhere(xml: str, instance_dir: str) -> dict[str, str]:
    """Disks whose storage is not a file directly in ``instance_dir``,
    by target device, each described for a log line: network disks (Ceph
    RBD, iSCSI, ...), block devices (LVM, a SAN LUN), storage-pool
    volumes, files elsewhere (NFS volumes, ploop).  Read-only CD-ROM
    image files and empty drives are the host's, not the instance's
    storage, and are left out."""
    root = parse(xml)
    found = {}
    for disk in root.iterfind('./devices/disk'):
        target = disk.find('target')
        source = disk.find('source')
        dev = target.get('dev', '?') if target is not None else '?'
        kind = disk.get('type', '?')
        if source is None or (kind == 'file' and
                              disk.get('device') == 'cdrom' and
                              disk.find('readonly') is not None):
            continue
        if kind == 'file' and os.path.dirname(source.get('file', '')) == \
                instance_dir:
            continue
        where = ' '.join(filter(None, (
            source.get('protocol'), source.get('pool'), source.get('name'),
            source.get('volume'), source.get('dev'), source.get('file'))))
        found[dev] = f'a {kind} disk ({where or "no source"})'
    return found


def rbd_disks(xml: str) -> dict[str, str]:
    """Ceph RBD disks (``<disk type='network'>``, protocol rbd) by target
    device: their source name, ``<pool>/<image>``."""
    found = {}
    for disk in parse(xml).iterfind('./devices/disk[@type="network"]'):
        source, target = disk.find('source'), disk.find('target')
        if source is not None and target is not None and \
                source.get('protocol') == 'rbd' and source.get('name'):
            found[target.get('dev', '?')] = source.get('name')
    return found


def boot_files(xml: str) -> dict[str, str]:
    """{'kernel': path, 'ramdisk': path} for direct kernel boot domains."""
    root = parse(xml)
    found = {}
    for tag, name in (('kernel', 'kernel'), ('initrd', 'ramdisk')):
        el = root.find(f'./os/{tag}')
        if el is not None and el.text:
            found[name] = el.text
    return found


def vifs(xml: str) -> list[DomainVif]:
    root = parse(xml)
    result = []
    for iface in root.iterfind('./devices/interface'):
        mac = iface.find('mac')
        source = iface.find('source')
        port = iface.find('virtualport')
        result.append(DomainVif(
            mac=mac.get('address') if mac is not None else '',
            bridge=source.get('bridge') if source is not None else None,
            type=iface.get('type'),
            virtualport=port.get('type') if port is not None else None))
    return result


def unit_bytes(unit: str) -> int:
    """libvirt's memory units: b/bytes, KB (10^3), k/KiB (2^10), ... E/EiB."""
    if unit in ('b', 'bytes'):
        return 1
    power = 'KMGTPE'.index(unit[0].upper()) + 1
    if len(unit) == 2 and unit[1] == 'B':
        return 1000 ** power
    if unit[1:] in ('', 'iB'):
        return KiB ** power
    raise ValueError(f'unknown memory unit {unit!r}')


def _set_memory(root: etree._Element, memory_mib: int) -> None:
    for tag in ('memory', 'currentMemory'):
        el = root.find(tag)
        if el is None:
            if tag == 'memory':
                el = etree.SubElement(root, tag)
            else:
                continue
        el.set('unit', 'KiB')
        el.text = str(memory_mib * KiB)


def set_vcpus(root: etree._Element, vcpus: int,
              most: Optional[int] = None) -> None:
    """``vcpus`` online out of ``most`` (hot-pluggable up to it).  With
    ``most`` None a definition with a ``current`` count keeps its maximum
    (the headroom it was given) unless ``vcpus`` is above it, and an
    unchanged count leaves the element exactly as it was."""
    el = root.find('vcpu')
    if el is None:
        el = etree.SubElement(root, 'vcpu')
    elif most is None and int(el.get('current', el.text)) == vcpus:
        return
    if most is None:
        most = max(vcpus, int(el.text)) if 'current' in el.attrib else vcpus
    most = max(most, vcpus)
    if most == vcpus:
        el.attrib.pop('current', None)
    else:
        el.set('current', str(vcpus))
    el.text = str(most)
    _fit_topology(root.find('./cpu/topology'), most)


def _fit_topology(topo: Optional[etree._Element], vcpus: int) -> None:
    """libvirt refuses a topology whose product is not the vCPU count:
    keep cores/threads per socket when they divide it, else one socket per
    vCPU."""
    if topo is None:
        return
    per_socket = 1
    for attr in ('dies', 'cores', 'threads'):
        per_socket *= int(topo.get(attr, '1'))
    if vcpus % per_socket == 0:
        topo.set('sockets', str(vcpus // per_socket))
    else:
        topo.attrib.update({'sockets': str(vcpus), 'cores': '1',
                            'threads': '1'})
        if 'dies' in topo.attrib:
            topo.set('dies', '1')


def _relocate(path: Optional[str], old_dir: str, new_dir: str) -> \
        Optional[str]:
    if path and os.path.dirname(path) == old_dir:
        return os.path.join(new_dir, os.path.basename(path))
    return path


def _next_free_dev(root: etree._Element) -> str:
    used = {t.get('dev') for t in root.iterfind('./devices/disk/target')}
    for letter in 'abcdefghijklmnopqrstuvwxyz':
        if f'vd{letter}' not in used:
            return f'vd{letter}'
    raise ValueError('no free virtio disk name')


def _add_file_disk(root: etree._Element, path: str, fmt: str,
                   dev: str) -> None:
    devices = root.find('devices')
    disk = etree.SubElement(devices, 'disk', type='file', device='disk')
    etree.SubElement(disk, 'driver', name='qemu', type=fmt, cache='none')
    etree.SubElement(disk, 'source', file=path)
    etree.SubElement(disk, 'target', dev=dev, bus='virtio')


def for_flavor(source_xml: str, *, flavor: Flavor, virt_type: str,
               old_dir: str, new_dir: str, disks: list[DiskFile]) -> str:
    """The definition for the resized guest.

    ``disks`` are the files as they will be in ``new_dir`` (paths, formats);
    a swap file in ``disks`` with no disk in the source gains a new disk
    device, and a swap disk in the source with none in ``disks`` is dropped.
    """
    root = parse(source_xml)
    root.set('type', virt_type)
    set_vcpus(root, flavor.vcpus)
    _set_memory(root, flavor.memory_mib)
    by_name = {d.name: d for d in disks}
    devices = root.find('devices')

    for disk in list(root.iterfind('./devices/disk[@type="file"]')):
        source = disk.find('source')
        if source is None or os.path.dirname(source.get('file', '')) \
                != old_dir:
            continue          # not ours (a volume, an ISO elsewhere)
        name = os.path.basename(source.get('file'))
        new = by_name.get(name)
        if new is None:
            devices.remove(disk)   # e.g. swap gone with the new flavor
            continue
        source.set('file', new.path)
        for bs in disk.findall('backingStore'):
            disk.remove(bs)        # let libvirt re-read the new chain
        driver = disk.find('driver')
        if driver is None:
            driver = etree.SubElement(disk, 'driver', name='qemu')
        driver.set('type', new.format)

    present = {os.path.basename(s.get('file'))
               for s in root.iterfind('./devices/disk/source[@file]')}
    for new in disks:
        if new.role is DiskRole.SWAP and new.name not in present:
            _add_file_disk(root, new.path, new.format, _next_free_dev(root))

    for tag in ('kernel', 'initrd'):
        el = root.find(f'./os/{tag}')
        if el is not None:
            el.text = _relocate(el.text, old_dir, new_dir)
    for log in root.iterfind('./devices/*/log'):
        log.set('file', _relocate(log.get('file'), old_dir, new_dir))
    for source in root.iterfind('./devices/serial/source[@path]'):
        source.set('path', _relocate(source.get('path'), old_dir, new_dir))
    return to_string(root)


def keepable_host_files(xml: str) -> dict[str, str]:
    """Host files of devices that stay as they are across a resize, by
    kind: read-only CD-ROM images ('cdrom'), unix chardev sockets QEMU
    binds ('socket'), read-only firmware and variable-store templates
    ('firmware'), the domain's UEFI variable store ('nvram')."""
    root = parse(xml)
    found = {}
    for disk in root.iterfind('./devices/disk[@type="file"][@device="cdrom"]'):
        source = disk.find('source')
        if disk.find('readonly') is not None and source is not None and \
                source.get('file'):
            found[source.get('file')] = 'cdrom'
    for tag in _CHARDEVS:
        for source in root.iterfind(f'./devices/{tag}[@type="unix"]/source'):
            if source.get('mode') == 'bind' and source.get('path'):
                found[source.get('path')] = 'socket'
    for loader in root.iterfind('./os/loader'):
        if loader.get('readonly') == 'yes' and loader.text:
            found[loader.text] = 'firmware'
    for nvram in root.iterfind('./os/nvram'):
        if nvram.get('template'):
            found[nvram.get('template')] = 'firmware'
        if nvram.text:
            found[nvram.text] = 'nvram'
    return found


#: Character devices whose ``<source path>`` is a host file QEMU opens
#: (type file, dev, pipe, unix); a pty's path is only libvirt's report.
_CHARDEVS = ('serial', 'console', 'parallel', 'channel')
#: Under ``<os>``: files QEMU loads (kernel, firmware, ACPI tables).
_OS_FILES = ('kernel', 'initrd', 'dtb', 'loader', 'nvram', 'acpi/table')
_QEMU_NS = 'http://libvirt.org/schemas/domain/qemu/1.0'


def foreign_files(xml: str, instance_dir: str) -> list[str]:
    """Host paths the definition would make QEMU open that are not files
    directly in ``instance_dir``.

    A definition from another host must not make this one hand its own
    files (``/etc/shadow`` as a kernel, a cdrom, a serial log to
    overwrite) to a guest: ``for_flavor`` moves only files directly in the
    instance directory.  Block, network and other non-file disks are
    volumes, attached by their own means, and are left out, as are
    ``<backingStore>`` chains (``for_flavor`` drops them) and the emulator.
    QEMU command-line passthrough can open anything, so each of its
    arguments is listed as ``qemu:arg VALUE``.
    """
    root = parse(xml)
    found = [el.text for path in _OS_FILES
             for el in root.iterfind(f'./os/{path}') if el.text]
    found += [el.get('template') for el in root.iterfind('./os/nvram')
              if el.get('template')]
    found += [el.text for el in root.iterfind('./devices/memory/source/path')
              if el.text]
    for el in root.iter('source', 'log', 'script', 'downscript'):
        if any(a.tag == 'backingStore' or
               (a.tag == 'disk' and a.get('type') not in ('file', 'dir'))
               for a in el.iterancestors()):
            continue
        device = el.getparent()
        found += [el.get(attr) for attr in ('file', 'dir') if el.get(attr)]
        if el.get('path') and (
                el.tag == 'source' and device.tag in _CHARDEVS and
                device.get('type') != 'pty' or
                el.tag != 'source' and device.tag == 'interface'):
            found.append(el.get('path'))   # chardev file, tap scripts
    found += [f'qemu:arg {el.get("value")}'
              for el in root.iter(f'{{{_QEMU_NS}}}arg')]
    return [p for p in found
            if os.path.dirname(p) != instance_dir or
            os.path.basename(p) in ('', '.', '..')]
