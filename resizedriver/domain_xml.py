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


def _parse(xml: str) -> etree._Element:
    parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False,
                             no_network=True)
    return etree.fromstring(xml.encode(), parser)


def _to_string(root: etree._Element) -> str:
    return etree.tostring(root, pretty_print=True, encoding='unicode')


def file_disks(xml: str) -> list[DomainDisk]:
    """The file-backed disks of a domain, in definition order."""
    root = _parse(xml)
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


def boot_files(xml: str) -> dict[str, str]:
    """{'kernel': path, 'ramdisk': path} for direct kernel boot domains."""
    root = _parse(xml)
    found = {}
    for tag, name in (('kernel', 'kernel'), ('initrd', 'ramdisk')):
        el = root.find(f'./os/{tag}')
        if el is not None and el.text:
            found[name] = el.text
    return found


def vifs(xml: str) -> list[DomainVif]:
    root = _parse(xml)
    result = []
    for iface in root.iterfind('./devices/interface'):
        mac = iface.find('mac')
        source = iface.find('source')
        result.append(DomainVif(
            mac=mac.get('address') if mac is not None else '',
            bridge=source.get('bridge') if source is not None else None,
            type=iface.get('type')))
    return result


def vcpus_and_memory(xml: str) -> tuple[int, int]:
    """(vCPUs, memory in MiB) of the definition."""
    root = _parse(xml)
    vcpus = int(root.findtext('vcpu'))
    mem = root.find('memory')
    unit = mem.get('unit', 'KiB')
    factor = {'b': 1, 'bytes': 1, 'KiB': KiB, 'k': KiB, 'MiB': KiB ** 2,
              'M': KiB ** 2, 'GiB': KiB ** 3, 'G': KiB ** 3}[unit]
    return vcpus, int(mem.text) * factor // KiB ** 2


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


def _set_vcpus(root: etree._Element, vcpus: int) -> None:
    el = root.find('vcpu')
    if el is None:
        el = etree.SubElement(root, 'vcpu')
    el.attrib.pop('current', None)
    el.text = str(vcpus)


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
    root = _parse(source_xml)
    root.set('type', virt_type)
    _set_vcpus(root, flavor.vcpus)
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
    return _to_string(root)
