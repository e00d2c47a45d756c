"""Headroom: the maxima a domain is started with, so it can grow live.

A running guest can only gain vCPUs and memory up to what its definition
allowed when it was started.  Domains we define (at spawn under Nova, and
after every cold resize) get headroom when the operator asks for it
(``[resizedriver] headroom_*``, per flavor by extra specs, lowered per
image by a property: :func:`wanted`):

* vCPUs: ``<vcpu current='N'>MAX</vcpu>``; QEMU hot-plugs the others
  (``virDomainSetVcpusFlags``).
* memory: one virtio-mem device on guest NUMA node 0 with
  ``<maxMemory>``; the guest boots with the flavor's memory and grows by
  raising the device's ``<requested>`` size (KubeVirt does the same).
  virtio-mem also shrinks, unlike DIMMs, and unlike a balloon the guest
  sees its real size.  Domains with their own NUMA layout get no memory
  headroom (which node would grow is theirs to say).

The guest must online what it gets: Linux needs
``memhp_default_state=online_movable`` on its command line (or a udev
rule ``SUBSYSTEM=="memory", ACTION=="add", ATTR{state}="online_movable"``;
*movable* so that it can be unplugged again) and onlines hot-added CPUs
with ``SUBSYSTEM=="cpu", ACTION=="add", ATTR{online}="1"``.

:func:`of_domain` reads back what a definition (or the live domain) has:
nothing here claims a size the hypervisor did not report.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from lxml import etree

from resizedriver import domain_xml
from resizedriver.model import DiskFile, Flavor

KiB = 1024
#: virtio-mem block size (x86-64 Linux wants at least its 2 MiB THP size)
BLOCK_MIB = 2
#: Linux adds hot-plugged memory in memory blocks (128 MiB on x86-64): a
#: virtio-mem device smaller than one is of no use to the guest (seen: it
#: never plugged 64 MiB), so memory headroom comes in whole such blocks
REGION_MIB = 128
#: hot-pluggable memory slots libvirt must reserve with <maxMemory>
MEMORY_SLOTS = 16
#: flavor extra specs (operator's) and image properties (user's: they may
#: only lower the headroom)
SPEC_VCPUS = 'resizedriver:max_vcpus'
SPEC_MEMORY = 'resizedriver:max_memory_mb'
IMAGE_VCPUS = 'resizedriver_max_vcpus'
IMAGE_MEMORY = 'resizedriver_max_memory_mb'


@dataclasses.dataclass(frozen=True)
class Headroom:
    """The most a domain may grow to live (0: no headroom of that kind)."""

    max_vcpus: int = 0
    max_memory_mib: int = 0

    def vcpus_for(self, vcpus: int) -> int:
        return max(self.max_vcpus, vcpus)

    def device_mib(self, memory_mib: int) -> int:
        """The virtio-mem device's size above ``memory_mib``: whole
        guest memory blocks, never beyond ``max_memory_mib`` (0: none)."""
        extra = max(self.max_memory_mib - memory_mib, 0)
        return extra - extra % REGION_MIB


def _int(value: Any, what: str) -> Optional[int]:
    if value in (None, ''):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(
            f'{what} must be a whole number, not {value!r}') from None
    if number < 0:
        raise ValueError(f'{what} must not be negative, not {value!r}')
    return number


def wanted(conf: Any, vcpus: int, memory_mib: int,
           extra_specs: Mapping[str, Any] = {},
           image_properties: Mapping[str, Any] = {}) -> Headroom:
    """The headroom for a flavor of ``vcpus`` and ``memory_mib``.

    ``[resizedriver] headroom_max_vcpus`` / ``headroom_max_memory_mb`` are
    absolute maxima and ``headroom_vcpus_factor`` /
    ``headroom_memory_factor`` multiples of the flavor (the larger wins;
    all 0 by default: no headroom).  A flavor's extra specs replace them;
    an image property may lower them (0 turns headroom off): images are
    the user's, and headroom is the operator's to grant.
    """
    rd = conf.resizedriver
    max_vcpus = max(rd.headroom_max_vcpus,
                    int(vcpus * rd.headroom_vcpus_factor))
    max_memory = max(rd.headroom_max_memory_mb,
                     int(memory_mib * rd.headroom_memory_factor))
    spec_vcpus = _int(extra_specs.get(SPEC_VCPUS), SPEC_VCPUS)
    spec_memory = _int(extra_specs.get(SPEC_MEMORY), SPEC_MEMORY)
    if spec_vcpus is not None:
        max_vcpus = spec_vcpus
    if spec_memory is not None:
        max_memory = spec_memory
    image_vcpus = _int(image_properties.get(IMAGE_VCPUS), IMAGE_VCPUS)
    image_memory = _int(image_properties.get(IMAGE_MEMORY), IMAGE_MEMORY)
    if image_vcpus is not None:
        max_vcpus = min(max_vcpus, image_vcpus)
    if image_memory is not None:
        max_memory = min(max_memory, image_memory)
    return Headroom(max_vcpus=max_vcpus if max_vcpus > vcpus else 0,
                    max_memory_mib=max_memory
                    if max_memory >= memory_mib + REGION_MIB else 0)


@dataclasses.dataclass(frozen=True)
class VirtioMem:
    alias: Optional[str]
    size_mib: int          # the most the device can plug
    requested_mib: int     # what it was asked to plug
    current_mib: int       # what the guest plugged (live XML only)
    node: int


@dataclasses.dataclass(frozen=True)
class DomainHeadroom:
    """What a domain definition (or its live XML) allows."""

    vcpus: int              # online (``current``)
    max_vcpus: int
    #: memory without the virtio-mem device (the NUMA cells / <memory>)
    boot_memory_mib: int
    virtio_mem: Optional[VirtioMem]

    @property
    def memory_mib(self) -> int:
        """The memory the guest has: boot memory plus what virtio-mem
        plugged (live XML) or was asked for (a definition)."""
        if self.virtio_mem is None:
            return self.boot_memory_mib
        return self.boot_memory_mib + self.virtio_mem.current_mib

    #: ``<maxMemory>``: the headroom the domain was given (its virtio-mem
    #: device may be smaller, in whole guest memory blocks)
    memory_limit_mib: int = 0

    @property
    def max_memory_mib(self) -> int:
        """The most the guest can have live."""
        if self.virtio_mem is None:
            return self.boot_memory_mib
        return self.boot_memory_mib + self.virtio_mem.size_mib


def _mib(el: Optional[etree._Element]) -> int:
    if el is None or not el.text:
        return 0
    return int(el.text) * domain_xml.unit_bytes(el.get('unit', 'KiB')) \
        // KiB ** 2


def _virtio_mem(root: etree._Element) -> Optional[VirtioMem]:
    dev = root.find('./devices/memory[@model="virtio-mem"]')
    if dev is None:
        return None
    target = dev.find('target')
    alias = dev.find('alias')
    requested = _mib(target.find('requested'))
    current = target.find('current')
    return VirtioMem(
        alias=alias.get('name') if alias is not None else None,
        size_mib=_mib(target.find('size')), requested_mib=requested,
        current_mib=_mib(current) if current is not None else requested,
        node=int(target.findtext('node', '0')))


def of_domain(xml: str) -> DomainHeadroom:
    root = domain_xml.parse(xml)
    vcpu = root.find('vcpu')
    most = int(vcpu.text)
    mem = _virtio_mem(root)
    cells = root.findall('./cpu/numa/cell')
    boot = sum(int(c.get('memory')) * domain_xml.unit_bytes(
        c.get('unit', 'KiB')) // KiB ** 2 for c in cells) if cells \
        else _mib(root.find('memory'))
    return DomainHeadroom(vcpus=int(vcpu.get('current', most)),
                          max_vcpus=most, boot_memory_mib=boot,
                          virtio_mem=mem,
                          memory_limit_mib=_mib(root.find('maxMemory')))


def apply(xml: str, headroom: Headroom, vcpus: int,
          memory_mib: int) -> str:
    """``xml`` (a definition for a flavor of ``vcpus`` and ``memory_mib``)
    with ``headroom``: vCPUs online out of a maximum, and memory that
    boots at the flavor's size on a virtio-mem device able to grow to the
    maximum.  No headroom of a kind removes that kind (a definition made
    again for a flavor at or above its old maximum)."""
    root = domain_xml.parse(xml)
    domain_xml.set_vcpus(root, vcpus, most=headroom.vcpus_for(vcpus))
    _set_memory_headroom(root, memory_mib, headroom.max_memory_mib,
                         headroom.device_mib(memory_mib))
    return domain_xml.to_string(root)


def _set_memory_headroom(root: etree._Element, memory_mib: int,
                         max_mib: int, device_mib: int) -> None:
    devices = root.find('devices')
    for dev in root.findall('./devices/memory[@model="virtio-mem"]'):
        devices.remove(dev)
    cpu = root.find('cpu')
    cells = cpu.findall('./numa/cell') if cpu is not None else []
    ours = len(cells) == 1 and cells[0].get('id') == '0'
    if not device_mib or len(cells) > 1:
        old = root.find('maxMemory')
        if old is not None and root.find('./devices/memory') is None:
            root.remove(old)      # (DIMMs of the operator's keep theirs)
        if ours:
            cells[0].attrib.update({'memory': str(memory_mib * KiB),
                                    'unit': 'KiB'})
        return
    if cpu is None:
        cpu = etree.SubElement(root, 'cpu')
    numa = cpu.find('numa')
    if numa is None:
        numa = etree.SubElement(cpu, 'numa')
    if not ours:
        etree.SubElement(numa, 'cell', id='0')
        cells = numa.findall('cell')
    most = int(root.find('vcpu').text)
    cells[0].attrib.update({'cpus': f'0-{most - 1}' if most > 1 else '0',
                            'memory': str(memory_mib * KiB),
                            'unit': 'KiB'})
    max_memory = root.find('maxMemory')
    if max_memory is None:
        max_memory = etree.Element('maxMemory')
        root.find('memory').addprevious(max_memory)
    max_memory.attrib.update({'slots': str(MEMORY_SLOTS), 'unit': 'KiB'})
    max_memory.text = str(max_mib * KiB)
    dev = etree.SubElement(devices, 'memory', model='virtio-mem')
    target = etree.SubElement(dev, 'target')
    for tag, mib in (('size', device_mib), ('node', None),
                     ('block', BLOCK_MIB), ('requested', 0)):
        el = etree.SubElement(target, tag)
        if mib is None:
            el.text = '0'
        else:
            el.set('unit', 'KiB')
            el.text = str(mib * KiB)


def requested_xml(live_xml: str, requested_mib: int) -> str:
    """The device XML ``virDomainUpdateDeviceFlags`` takes to make the
    running guest's virtio-mem device plug ``requested_mib``: the device
    as the live XML has it (libvirt finds it by all of it: alias,
    address, sizes), with only ``<requested>`` changed."""
    dev = domain_xml.parse(live_xml).find(
        './devices/memory[@model="virtio-mem"]')
    target = dev.find('target')
    current = target.find('current')
    if current is not None:
        target.remove(current)
    requested = target.find('requested')
    requested.attrib.update({'unit': 'KiB'})
    requested.text = str(requested_mib * KiB)
    return domain_xml.to_string(dev)


def resized(source_xml: str, *, flavor: Flavor, virt_type: str,
            old_dir: str, new_dir: str, disks: list[DiskFile],
            wanted: Headroom) -> str:
    """``domain_xml.for_flavor`` with headroom: at least what the source
    had (headroom an operator gave a guest outlives its resizes) and
    ``wanted`` (the configuration's), where either is above ``flavor``."""
    had = of_domain(source_xml)
    keep = Headroom(
        max_vcpus=max(had.max_vcpus if had.max_vcpus > had.vcpus else 0,
                      wanted.max_vcpus),
        max_memory_mib=max(had.memory_limit_mib if had.virtio_mem else 0,
                           wanted.max_memory_mib))
    xml = domain_xml.for_flavor(source_xml, flavor=flavor,
                                virt_type=virt_type, old_dir=old_dir,
                                new_dir=new_dir, disks=disks)
    return apply(xml, keep, flavor.vcpus, flavor.memory_mib)
