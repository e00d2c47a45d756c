"""The stack's cloud as a user and an admin see it: through the API only.

Everything here goes through openstacksdk to the services ``tools/stack``
runs (the clouds.yaml it writes); what the guest sees comes from its
console (``os-getConsoleOutput``), parsed as every tier parses it
(tests/lib/guestlog.py).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from xml.etree import ElementTree
from typing import Callable, Iterator, Optional

import openstack

from tests.lib import guestlog

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
STACK = os.path.join(REPO, 'tools', 'stack')
HOSTS = ('rdstack-a', 'rdstack-b')
IMAGE = 'rdstack-guest'
#: the guest ignoring the power button, Nova waiting 600 s for its clean
#: shutdown (tools/stack.d/register.py): a resize stays in its power off
DEAF_IMAGE = 'rdstack-guest-deaf'
#: the stand-in Neutron's one network (tools/stack.d/neutron.py)
NETWORK = 'rdstack-net'
#: a server's name: the run's prefix (RESIZEDRIVER_TEST_RUN), then ours
PREFIX = 'rdstack-' + os.environ.get('RESIZEDRIVER_TEST_RUN', '')
#: headroom by flavor extra specs (resizedriver/headroom.py)
ROOM = {'resizedriver:max_vcpus': '4', 'resizedriver:max_memory_mb': '1024'}
GiB = 1024 ** 3


def stack_env() -> dict[str, str]:
    """``tools/stack env``: where clouds.yaml is."""
    out = subprocess.run([STACK, 'env'], check=True, capture_output=True,
                         text=True).stdout
    return dict(line.split('=', 1) for line in out.splitlines() if line)


def connect():
    """The admin's connection (the stack must be up: tools/stack start)."""
    status = subprocess.run([STACK, 'status'], capture_output=True,
                            text=True)
    if status.returncode:
        raise RuntimeError('the stack is not up (tools/stack setup):\n' +
                           status.stdout)
    os.environ.update(stack_env())
    return openstack.connect(cloud='rdstack')


def wait(what: str, probe: Callable[[], object], timeout: float = 300,
         interval: float = 1.0):
    """``probe()``'s first true value; fails saying ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out ({timeout} s) waiting for '
                                 f'{what}')
        time.sleep(interval)


class Cloud:
    """The admin's view: servers, flavors, migrations, actions,
    allocations; every flavor and server made here is deleted by
    ``cleanup``."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self._flavors: list = []
        self._servers: list = []
        self._ports: list = []

    def flavor(self, name: str, vcpus: int, ram: int, disk: int,
               extra_specs: Optional[dict] = None, ephemeral: int = 0):
        # one an interrupted run of the same prefix left (the stack's
        # database outlives its runs)
        stale = self.conn.compute.find_flavor(f'{PREFIX}{name}')
        if stale is not None:
            self.conn.compute.delete_flavor(stale)
        flv = self.conn.compute.create_flavor(
            name=f'{PREFIX}{name}', vcpus=vcpus, ram=ram, disk=disk,
            ephemeral=ephemeral)
        self._flavors.append(flv)
        if extra_specs:
            self.conn.compute.create_flavor_extra_specs(flv, extra_specs)
        return flv

    def boot(self, name: str, flavor, host: str = HOSTS[0],
             image: str = IMAGE):
        """A server on ``host`` with one port of its own, ACTIVE and its
        guest up.

        The port is made first: the stand-in's network has no subnet,
        and Nova makes ports only on networks with one; it keeps the
        port (``preserve_on_delete``) when the server goes, ``cleanup``
        deletes it."""
        network, = self.conn.network.networks(name=NETWORK)
        port = self.conn.network.create_port(
            network_id=network.id, name=f'{PREFIX}{name}',
            project_id=self.conn.current_project_id)
        self._ports.append(port)
        server = self.conn.compute.create_server(
            name=f'{PREFIX}{name}',
            image_id=self.conn.image.find_image(image,
                                                ignore_missing=False).id,
            flavor_id=flavor.id, networks=[{'port': port.id}], host=host)
        self._servers.append(server)
        server = self.wait_status(server, 'ACTIVE')
        self.guest(server, 'the first boot', lambda r: r.ready)
        return server

    def port(self, server):
        """The server's one port, as Neutron has it now."""
        port, = self.conn.network.ports(device_id=server.id)
        return port

    def wait_status(self, server, status: str, timeout: float = 300):
        def probe():
            now = self.conn.compute.get_server(server.id)
            assert now.status != 'ERROR' or status == 'ERROR', (
                f'server {server.id} went to ERROR: {now.fault}')
            return now if now.status == status and \
                now.task_state is None else None
        return wait(f'server {server.id} {status}', probe, timeout)

    def console_text(self, server) -> str:
        return self.conn.compute.get_server_console_output(server)['output']

    def console(self, server) -> Optional[guestlog.GuestReport]:
        return guestlog.parse(self.console_text(server))

    def guest(self, server, what: str,
              done: Callable[[guestlog.GuestReport], bool],
              timeout: float = 180) -> guestlog.GuestReport:
        """The guest's report once ``done`` holds (its console)."""
        def probe():
            report = self.console(server)
            return report if report is not None and done(report) else None
        return wait(f'the guest of {server.id}: {what}', probe, timeout)

    def resize(self, server, flavor):
        self.conn.compute.resize_server(server, flavor.id)
        return self.wait_status(server, 'VERIFY_RESIZE')

    def confirm(self, server):
        self.conn.compute.confirm_server_resize(server)
        return self.wait_status(server, 'ACTIVE')

    def revert(self, server):
        self.conn.compute.revert_server_resize(server)
        return self.wait_status(server, 'ACTIVE')

    def migrations(self, server) -> list:
        return list(self.conn.compute.migrations(instance_uuid=server.id))

    def actions(self, server) -> dict:
        """Action name -> its events (name -> the event), oldest first."""
        found = {}
        for action in reversed(list(
                self.conn.compute.server_actions(server))):
            detail = self.conn.compute.get_server_action(
                action.request_id, server)
            found[action.action] = {e['event']: e for e in detail.events}
        return found

    def allocations(self, consumer: str) -> dict:
        """Placement's allocations of ``consumer``: provider name ->
        resources."""
        names = {rp['uuid']: rp['name'] for rp in self.conn.placement.get(
            '/resource_providers').json()['resource_providers']}
        allocs = self.conn.placement.get(
            f'/allocations/{consumer}').json()['allocations']
        return {names[rp]: a['resources'] for rp, a in allocs.items()}

    def node(self, host: str) -> str:
        """The resource provider (hypervisor) name of compute ``host``."""
        for hyp in self.conn.compute.hypervisors(details=True):
            if hyp.service_details['host'] == host:
                return hyp.name
        raise AssertionError(f'no hypervisor of {host}')

    @contextlib.contextmanager
    def only(self, host: str) -> Iterator[None]:
        """The scheduler sees only ``host``: the other computes disabled
        (as an operator would drain them) while inside."""
        others = [s for s in self.conn.compute.services(
            binary='nova-compute') if s.host != host]
        for service in others:
            self.conn.compute.disable_service(service)
        try:
            yield
        finally:
            for service in others:
                self.conn.compute.enable_service(service)

    def delete(self, server) -> None:
        self.conn.compute.delete_server(server)
        self.conn.compute.wait_for_delete(server, wait=300)

    def cleanup(self) -> None:
        for server in self._servers:
            self.conn.compute.delete_server(server, ignore_missing=True)
        for server in self._servers:
            self.conn.compute.wait_for_delete(server, wait=300)
        for flv in self._flavors:
            self.conn.compute.delete_flavor(flv, ignore_missing=True)
        for port in self._ports:
            self.conn.network.delete_port(port, ignore_missing=True)
            # what Nova's unplug_tap cannot delete on host B (its /sys is
            # A's): removed as an agent would
            subprocess.run(ON_HOST['B'] + ['ip', 'link', 'delete',
                                           tap(port.id)],
                           capture_output=True)


def restart_compute(node: str, confirm_window: int = 0) -> None:
    """``tools/stack restart-compute``: nova-compute on host ``node``
    ('a' or 'b') SIGKILLed and started again, with ``confirm_window``
    as its ``resize_confirm_window``; returns once it is up."""
    subprocess.run([STACK, 'restart-compute', node, str(confirm_window)],
                   check=True)


#: how a command runs on either host: A's own, B's through tools/host-b
ON_HOST = {'A': [], 'B': [os.path.join(REPO, 'tools', 'host-b'), 'run']}


def leftovers(instance_name: str, uuid: str) -> list[str]:
    """What is left of a server on either host (not through the API: the
    API cannot see it): its domain, its directories in the stack's
    instances path."""
    path = stack_env()['STACK_INSTANCES']
    found = []
    for host, prefix in ON_HOST.items():
        if subprocess.run(prefix + ['virsh', '-c', 'qemu:///system',
                                    'dominfo', instance_name],
                          capture_output=True).returncode == 0:
            found.append(f'{host}: domain {instance_name}')
        listing = subprocess.run(prefix + ['ls', path], capture_output=True,
                                 text=True, check=True).stdout.split()
        found += [f'{host}: {path}/{name}' for name in listing
                  if name.startswith(uuid)]
    return found


def tap(port_id: str) -> str:
    """The tap device of a port of VIF type ``tap`` (Nova's name)."""
    return ('tap' + port_id)[:14]


def taps(port_id: str) -> list[str]:
    """The hosts ('A', 'B') where the port's tap device is."""
    return [host for host, prefix in ON_HOST.items()
            if subprocess.run(prefix + ['ip', 'link', 'show', tap(port_id)],
                              capture_output=True).returncode == 0]


def interfaces(instance_name: str,
               host: str) -> list[tuple[str, str, str]]:
    """The domain's interfaces on ``host`` ('A' or 'B'): (type, target
    device, MAC) each, from its live XML."""
    xml = subprocess.run(ON_HOST[host] + ['virsh', '-c', 'qemu:///system',
                                          'dumpxml', instance_name],
                         capture_output=True, text=True, check=True).stdout
    return [(i.get('type'), i.find('target').get('dev'),
             i.find('mac').get('address'))
            for i in ElementTree.fromstring(xml).iter('interface')]
