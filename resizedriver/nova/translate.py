"""Nova objects in, engine types out."""

from __future__ import annotations

import socket
from typing import Any, Optional

from nova import block_device as nova_block_device
from nova.virt import driver as nova_driver

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
