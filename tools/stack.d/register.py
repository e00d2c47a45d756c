"""What an operator registers once in a new cloud, and a readiness check.

``register.py register GUEST_DIR``: the service users (admin and service
roles in the ``service`` project), the catalog (compute, placement, image,
network, all on A's host-B link address) and the test guest's images as a
real cloud has them: kernel (aki) and ramdisk (ari) images, and the root
disk image pointing at them by ``kernel_id``/``ramdisk_id``.  Each step is
skipped when done already.

``register.py wait-computes HOST...``: until each nova-compute service is
up and its hypervisor is mapped to the cell (what a boot needs).
"""

from __future__ import annotations

import os
import sys
import time

import openstack

ADDRESS = '169.254.79.1'
PASSWORD = 'rdstack'
SERVICES = (
    # name, type, URL
    ('nova', 'compute', f'http://{ADDRESS}:8774/v2.1'),
    ('placement', 'placement', f'http://{ADDRESS}:8778'),
    ('glance', 'image', f'http://{ADDRESS}:9292'),
    ('neutron', 'network', f'http://{ADDRESS}:9696'),
)
#: the test guest's images: name, file in GUEST_DIR, disk format
KERNEL = ('rdstack-kernel', 'vmlinux', 'aki')
RAMDISK = ('rdstack-ramdisk', 'initrd.img', 'ari')
ROOT = ('rdstack-guest', 'base.raw', 'raw')
#: the guest's kernel command line (tools/guest-init reads rd* options)
CMDLINE = 'console=ttyS0 quiet'
#: the same guest, playing a hung guest OS that ignores the power button
#: (rdignore-acpi), and the clean shutdown Nova then waits for before it
#: powers it off: a resize that stays in its power off step, long enough
#: to crash the source compute there (tests/stack)
DEAF = ('rdstack-guest-deaf', 'base.raw', 'raw')
DEAF_PROPERTIES = {'os_command_line': CMDLINE + ' rdignore-acpi',
                   'os_shutdown_timeout': '600'}


def _connect():
    return openstack.connect(cloud='rdstack')


def _users(conn) -> None:
    project = (conn.identity.find_project('service') or
               conn.identity.create_project(name='service',
                                            domain_id='default'))
    roles = [conn.identity.find_role(name) for name in ('admin', 'service')]
    for name, _type, _url in SERVICES:
        user = conn.identity.find_user(name) or conn.identity.create_user(
            name=name, password=PASSWORD, domain_id='default')
        for role in roles:
            conn.identity.assign_project_role_to_user(project, user, role)


def _catalog(conn) -> None:
    for name, stype, url in SERVICES:
        service = conn.identity.find_service(name)
        if service is None:
            service = conn.identity.create_service(name=name, type=stype)
        have = {e.interface for e in conn.identity.endpoints(
            service_id=service.id)}
        for interface in ('public', 'internal', 'admin'):
            if interface not in have:
                conn.identity.create_endpoint(
                    service_id=service.id, interface=interface, url=url,
                    region_id='RegionOne')


def _image(conn, guest: str, spec: tuple, **properties: str):
    name, filename, disk_format = spec
    image = conn.image.find_image(name)
    if image is not None and image.status == 'active':
        return image
    if image is not None:
        conn.image.delete_image(image)
    container = disk_format if disk_format in ('aki', 'ari') else 'bare'
    return conn.image.create_image(
        name=name, filename=os.path.join(guest, filename),
        disk_format=disk_format, container_format=container,
        visibility='public', wait=True, **properties)


def register(guest: str) -> None:
    conn = _connect()
    _users(conn)
    _catalog(conn)
    # a new service user's catalog: a fresh connection sees image
    conn = _connect()
    kernel = _image(conn, guest, KERNEL)
    ramdisk = _image(conn, guest, RAMDISK)
    _image(conn, guest, ROOT, kernel_id=kernel.id, ramdisk_id=ramdisk.id,
           os_command_line=CMDLINE)
    _image(conn, guest, DEAF, kernel_id=kernel.id, ramdisk_id=ramdisk.id,
           **DEAF_PROPERTIES)


def wait_computes(hosts: list[str], since: str = '',
                  timeout: float = 180) -> None:
    """Until each of ``hosts`` is up and mapped; with ``since`` (UTC,
    ISO 8601), up by a report after it: a killed compute stays "up" for
    ``service_down_time`` after its last report."""
    conn = _connect()
    deadline = time.monotonic() + timeout
    while True:
        up = {s.host for s in conn.compute.services(binary='nova-compute')
              if s.state == 'up' and (s.updated_at or '') > since}
        mapped = {h.service_details['host']
                  for h in conn.compute.hypervisors(details=True)
                  if h.service_details}
        if set(hosts) <= up & mapped:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f'computes {hosts} not ready: up {up}, '
                             f'mapped {mapped}')
        time.sleep(1)


def main() -> None:
    if sys.argv[1] == 'register':
        register(sys.argv[2])
    elif sys.argv[1:3] == ['wait-computes', '--since']:
        wait_computes(sys.argv[4:], since=sys.argv[3])
    elif sys.argv[1] == 'wait-computes':
        wait_computes(sys.argv[2:])
    else:
        raise SystemExit(f'unknown command {sys.argv[1]!r}')


if __name__ == '__main__':
    main()
