"""Nova objects in, engine types out."""

from __future__ import annotations

import dataclasses
import os
import socket
from typing import Any, Optional

from nova import exception as nova_exception
from nova.virt import driver as nova_driver
from nova.virt import hardware
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import utils as libvirt_utils
from oslo_log import log as logging

from resizedriver import headroom as rd_headroom
from resizedriver.model import GiB, MiB, Destination, Flavor

LOG = logging.getLogger(__name__)


def flavor(nova_flavor: Any,
           block_device_info: Optional[dict] = None) -> Flavor:
    """A Nova Flavor as the engine's ``Flavor`` (sizes in bytes).

    The ephemeral size is the flavor's, for the instance's one ephemeral
    disk (``disk.local``, or ``disk.eph0`` from its block device mapping).
    An instance with several (``block_device_info`` lists more than one:
    ``disk.eph0``, ``disk.eph1``, ..., whose sizes the user chose within
    the flavor's) gets 0, "keep each as it is": a new flavor's one size
    says nothing of how to split it, and Nova's own ``finish_migration``
    grows none of them (only ``disk.local``, ``_disk_size_from_instance``).
    """
    several = len(nova_driver.block_device_info_get_ephemerals(
        block_device_info)) > 1
    return Flavor(vcpus=nova_flavor.vcpus,
                  memory_mib=nova_flavor.memory_mb,
                  root_bytes=nova_flavor.root_gb * GiB,
                  ephemeral_bytes=0 if several else
                  nova_flavor.ephemeral_gb * GiB,
                  swap_bytes=(nova_flavor.swap or 0) * MiB)


def disk_down(instance: Any, new_flavor: Any,
              block_device_info: Optional[dict]) -> str:
    """Which disk Nova's own LibvirtDriver would refuse to resize down
    ('' none), decided as its ``migrate_disk_and_power_off`` does: from
    the flavors, not the disks.  The old flavor is ``instance.flavor``
    (the compute manager swaps it only after migrate), its ephemeral size
    the flavor's however the disks split it (Nova first sums the block
    device info's ephemerals with ``get_bdm_ephemeral_disk_size``, which
    reads API-format keys the driver format lacks: always 0, so the
    flavor's); a root disk that is a volume does not count.  A disk
    larger than its flavor says (grown outside Nova, or kept grown by
    the revert of a live resize) is no reason: Nova allows the resize
    and keeps the disk at its size."""
    old = instance.flavor
    if new_flavor.root_gb < old.root_gb and not \
            libvirt_driver.LibvirtDriver._is_booted_from_volume(
                block_device_info):
        return (f'the root disk from its flavor\'s '
                f'{old.root_gb} GiB to {new_flavor.root_gb} GiB')
    if new_flavor.ephemeral_gb < old.ephemeral_gb:
        return (f'the ephemeral disks from their '
                f'{old.ephemeral_gb} GiB to '
                f'{new_flavor.ephemeral_gb} GiB')
    return ''


def is_this_host(dest: str, conf: Any, own_addr: str) -> bool:
    """Whether Nova's ``dest`` names this host.

    ``dest`` is the destination driver's ``get_host_ip_addr()`` (the
    resource tracker puts it in the migration): ``[libvirt]
    migration_inbound_addr``, ``$my_ip`` unless the operator gave a
    migration network's address or a ``%s`` form of the hostname.  So,
    as Nova's own ``_is_path_shared_with`` decides, it is this host when
    it is ours, ``own_addr``; our ``my_ip``, ``host`` and names resolving
    to us are this host as well.
    """
    if dest in (own_addr, conf.my_ip, conf.host, socket.gethostname()):
        return True
    try:
        return socket.gethostbyname(dest) in ('127.0.0.1', conf.my_ip)
    except OSError:
        return False


def destination(dest: str, conf: Any, own_addr: str) -> Destination:
    """Nova keeps the same instances_path on every compute node; whether
    another host shares it is migrate's to find out (a file made there
    seen here, as Nova's ``_is_path_shared_with`` does)."""
    if is_this_host(dest, conf, own_addr):
        return Destination(None, conf.instances_path, same_hypervisor=True)
    return Destination(dest, conf.instances_path, same_hypervisor=False)


def has_vtpm(instance: Any) -> bool:
    """Whether the instance has a vTPM: its flavor or image asks for one,
    or libvirt keeps swtpm state for it (``/var/lib/libvirt/swtpm``)."""
    return bool(hardware.get_vtpm_constraint(instance.flavor,
                                             instance.image_meta)) or \
        os.path.exists(os.path.join(libvirt_utils.VTPM_DIR, instance.uuid))


def volume_connections(block_device_info: Optional[dict]) -> list[dict]:
    return [bdm['connection_info'] for bdm in
            nova_driver.block_device_info_get_mapping(block_device_info)]


#: flavor extra specs that ask for devices Nova places and tracks
DEVICE_SPECS = ('pci_passthrough:alias', 'resources:VGPU',
                'resources:PCI_DEVICE', 'accel:device_profile')


def layout_pinned(nova_flavor: Any, image_meta: Any) -> str:
    """What in ``nova_flavor`` (and the image) pins the guest's layout,
    '' if nothing: NUMA constraints (dedicated CPUs, NUMA nodes, hugepages
    and realtime all come with one) or devices Nova places."""
    specs = nova_flavor.extra_specs or {}
    found = [k for k in specs if k in DEVICE_SPECS or
             k.startswith('resources:CUSTOM_')]
    try:
        if hardware.numa_get_constraints(nova_flavor,
                                         image_meta) is not None:
            found.insert(0, 'NUMA/CPU pinning/hugepages')
    except nova_exception.NovaException as e:
        found.insert(0, f'NUMA constraints Nova rejects: {e}')
    return ', '.join(found)


#: flavor extra specs / image properties that fix the guest's CPU
#: topology: vCPU headroom would change the sockets Nova chose
TOPOLOGY_SPECS = ('hw:cpu_sockets', 'hw:cpu_cores', 'hw:cpu_threads',
                  'hw:cpu_max_sockets', 'hw:cpu_max_cores',
                  'hw:cpu_max_threads')
TOPOLOGY_PROPS = tuple(k.replace(':', '_') for k in TOPOLOGY_SPECS)


def _image_prop(image_meta: Any, name: str) -> Any:
    props = getattr(image_meta, 'properties', None)
    return props.get(name) if props is not None else None


def headroom(instance: Any, conf: Any) -> rd_headroom.Headroom:
    """The headroom for ``instance``'s flavor: the configuration, the
    flavor's extra specs, the image's properties (Nova keeps every image
    property in system metadata as ``image_<name>``).  None for an
    instance whose layout Nova pins (it places vCPUs and memory itself);
    no vCPU headroom where the flavor or image fixes the CPU topology, no
    memory headroom where memory is encrypted (SEV locks it) or the guest
    is not x86-64.  A malformed image property is logged and ignored:
    the image is the user's, the instance must still boot."""
    flv = instance.flavor
    image_meta = instance.image_meta
    specs = flv.extra_specs or {}
    if instance.numa_topology is not None or \
            layout_pinned(flv, image_meta):
        return rd_headroom.Headroom()
    sysmeta = instance.system_metadata or {}
    image = {k: sysmeta.get(f'image_{k}') for k in (
        rd_headroom.IMAGE_VCPUS, rd_headroom.IMAGE_MEMORY)}
    try:
        room = rd_headroom.wanted(conf, flv.vcpus, flv.memory_mb, specs,
                                  image)
    except ValueError as e:
        LOG.warning('Headroom ignored: %s', e, instance=instance)
        return rd_headroom.Headroom()
    if any(k in specs for k in TOPOLOGY_SPECS) or \
            any(_image_prop(image_meta, k) for k in TOPOLOGY_PROPS):
        room = dataclasses.replace(room, max_vcpus=0)
    arch = _image_prop(image_meta, 'hw_architecture')
    if (str(specs.get('hw:mem_encryption', '')).lower() in ('true', '1',
                                                          'yes') or
            _image_prop(image_meta, 'hw_mem_encryption') or
            (arch and arch != 'x86_64')):
        room = dataclasses.replace(room, max_memory_mib=0)
    return room


def extra_specs_changed(old: Any, new: Any) -> list[str]:
    """The extra specs that differ between two flavors, but for ours
    (headroom): a live resize changes sizes only, so a flavor that also
    changes limits, devices or CPU features must go cold for Nova's XML
    to take effect."""
    a = {k: v for k, v in (old.extra_specs or {}).items()
         if not k.startswith('resizedriver:')}
    b = {k: v for k, v in (new.extra_specs or {}).items()
         if not k.startswith('resizedriver:')}
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
