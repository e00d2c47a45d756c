"""Nova objects in, engine types out."""

from __future__ import annotations

import socket
from typing import Any, Optional

from nova import block_device as nova_block_device
from nova import exception as nova_exception
from nova.virt import driver as nova_driver
from nova.virt import hardware

from resizedriver import headroom as rd_headroom
from resizedriver.model import GiB, MiB, Destination, Flavor


def flavor(nova_flavor: Any,
           block_device_info: Optional[dict] = None) -> Flavor:
    """A Nova Flavor as the engine's ``Flavor`` (sizes in bytes).

    Ephemeral size comes from the block device mapping when it has
    ephemerals (as Nova's own shrink check does), else from the flavor.
    """
    ephemerals = nova_driver.block_device_info_get_ephemerals(
        block_device_info)
    eph_gb = (nova_block_device.get_bdm_ephemeral_disk_size(ephemerals) or
              nova_flavor.ephemeral_gb)
    return Flavor(vcpus=nova_flavor.vcpus,
                  memory_mib=nova_flavor.memory_mb,
                  root_bytes=nova_flavor.root_gb * GiB,
                  ephemeral_bytes=eph_gb * GiB,
                  swap_bytes=(nova_flavor.swap or 0) * MiB)


def is_this_host(dest: str, conf: Any) -> bool:
    """Whether Nova's ``dest`` (the dest compute's IP) names this host."""
    if dest in (conf.my_ip, conf.host, socket.gethostname()):
        return True
    try:
        return socket.gethostbyname(dest) in ('127.0.0.1', conf.my_ip)
    except OSError:
        return False


def destination(dest: str, conf: Any) -> Destination:
    """Nova keeps the same instances_path on every compute node."""
    if is_this_host(dest, conf):
        return Destination(None, conf.instances_path, same_hypervisor=True)
    return Destination(dest, conf.instances_path, same_hypervisor=False)


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


def headroom(instance: Any, conf: Any) -> rd_headroom.Headroom:
    """The headroom for ``instance``'s flavor: the configuration, the
    flavor's extra specs, the image's properties (Nova keeps every image
    property in system metadata as ``image_<name>``).  None for an
    instance whose layout Nova pins: it places vCPUs and memory itself."""
    flv = instance.flavor
    if instance.numa_topology is not None or \
            layout_pinned(flv, instance.image_meta):
        return rd_headroom.Headroom()
    sysmeta = instance.system_metadata or {}
    image = {k: sysmeta.get(f'image_{k}') for k in (
        rd_headroom.IMAGE_VCPUS, rd_headroom.IMAGE_MEMORY)}
    return rd_headroom.wanted(conf, flv.vcpus, flv.memory_mb,
                              flv.extra_specs or {}, image)
