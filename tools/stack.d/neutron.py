"""A stand-in for Neutron that keeps ports: one network, its ports bound
as VIF type ``tap``.

Nova's libvirt driver plugs a ``tap`` VIF itself (it makes the tap device
``tap<port id>``, 14 characters, and gives the domain an ``<interface
type='ethernet'>`` on it; no os-vif, no agent), so a port bound here is a
NIC the guest sees, on whichever host Nova binds it to.  The port keeps
its binding (``binding:host_id``) as Nova moves it: Nova 34 with the
``binding-extended`` extension asks for the destination's binding at a
cold move (none: it then updates ``binding:host_id`` in
``migrate_instance_finish``) and deletes the old host's after it.

The network has no subnet (the ports are ``ip_allocation: none``): the
guests prove on their console what they see, not over IP.  So a test
creates the port first (``POST /v2.0/ports``) and boots with it; Nova
will not make a port on a network without a subnet.

Every request is logged; anything not known here fails (HTTP 501, logged
as UNKNOWN), so a call Nova makes that the stand-in does not know shows up
in ``neutron.log`` instead of passing unnoticed.  Run as ``python
neutron.py ADDRESS PORT``.  The ports live in memory: a restart of the
stand-in forgets them (as ``tools/stack stop`` ends every server's life
with the stack's).
"""

from __future__ import annotations

import http.server
import json
import random
import re
import sys
import threading
import urllib.parse
import uuid
from typing import Optional

NETWORK_ID = 'c0ffee00-0000-4000-8000-000000000001'
NETWORK = {
    'id': NETWORK_ID, 'name': 'rdstack-net', 'tenant_id': '',
    'project_id': '', 'shared': True, 'status': 'ACTIVE',
    'admin_state_up': True, 'subnets': [], 'mtu': 1500,
    'port_security_enabled': False, 'router:external': False,
}
#: the one extension Nova's resize path asks about
EXTENSIONS = [{'alias': 'binding-extended', 'name': 'Port Bindings Extended',
               'description': 'stand-in', 'updated': '', 'links': []}]
#: the GETs of collections the stand-in keeps nothing of
EMPTY_LISTS = {
    '/v2.0/floatingips': 'floatingips',
    '/v2.0/security-groups': 'security_groups',
}
#: what a port update may change (anything else: 501)
UPDATABLE = {'binding:host_id', 'binding:profile', 'device_id',
             'device_owner', 'name', 'binding:vnic_type'}
PORT = re.compile(r'^/v2\.0/ports/([^/]+)$')
BINDING = re.compile(r'^/v2\.0/ports/([^/]+)/bindings/([^/]+)$')

PORTS: dict[str, dict] = {}
LOCK = threading.Lock()


def new_port(body: dict) -> dict:
    """A port on the network, unbound, without an address."""
    port_id = str(uuid.uuid4())
    mac = 'fa:16:3e:' + ':'.join(f'{random.randrange(256):02x}'
                                 for _ in range(3))
    project = body.get('project_id') or body.get('tenant_id') or ''
    port = {
        'id': port_id, 'name': body.get('name', ''),
        'network_id': NETWORK_ID, 'tenant_id': project,
        'project_id': project, 'mac_address': mac, 'fixed_ips': [],
        'ip_allocation': 'none', 'admin_state_up': True,
        'device_id': body.get('device_id', ''),
        'device_owner': body.get('device_owner', ''),
        'security_groups': [], 'port_security_enabled': False,
        'binding:vnic_type': 'normal', 'binding:profile': {},
    }
    bind(port, body.get('binding:host_id') or '')
    return port


def bind(port: dict, host: str) -> None:
    """The port bound to ``host`` (tap, up: the agent's part is Nova's
    own plugging) or unbound (``host`` empty)."""
    port['binding:host_id'] = host
    port['binding:vif_type'] = 'tap' if host else 'unbound'
    port['binding:vif_details'] = {'port_filter': False} if host else {}
    port['status'] = 'ACTIVE' if host else 'DOWN'


def binding_of(port: dict) -> dict:
    """The port's (one, active) binding as ``binding-extended`` shows
    it."""
    return {'host': port['binding:host_id'], 'status': 'ACTIVE',
            'vif_type': port['binding:vif_type'],
            'vif_details': port['binding:vif_details'],
            'vnic_type': port['binding:vnic_type'],
            'profile': port['binding:profile']}


def matches(item: dict, query: dict[str, list[str]]) -> bool:
    """Neutron's list filters: every key but ``fields`` one of the
    values given (compared as the query's strings)."""
    return all(str(item.get(key)) in values
               for key, values in query.items() if key != 'fields')


def shown(item: dict, query: dict[str, list[str]]) -> dict:
    """The item with only the ``fields`` asked for, if any."""
    fields = query.get('fields')
    return {k: v for k, v in item.items() if k in fields} if fields \
        else item


class Handler(http.server.BaseHTTPRequestHandler):
    """One request: a known one answered, anything else 501."""

    def _answer(self, status: int, body: Optional[dict]) -> None:
        data = json.dumps(body).encode() if body is not None else b''
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self, kind: str, what: str) -> None:
        self._answer(404, {'NeutronError': {
            'type': f'{kind}NotFound', 'detail': '',
            'message': f'{kind} {what} could not be found.'}})

    def _request(self) -> tuple[str, dict[str, list[str]]]:
        parts = urllib.parse.urlsplit(self.path)
        return (parts.path.rstrip('/'),
                urllib.parse.parse_qs(parts.query))

    def _body(self) -> dict:
        length = int(self.headers.get('Content-Length') or 0)
        return json.loads(self.rfile.read(length) or b'{}')

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path, query = self._request()
        port = PORT.match(path)
        binding = BINDING.match(path)
        if path in ('', '/v2.0'):
            self._answer(200, {'versions': [
                {'id': 'v2.0', 'status': 'CURRENT', 'links': [
                    {'rel': 'self',
                     'href': f'http://{self.headers["Host"]}/v2.0/'}]}]})
        elif path == '/v2.0/extensions':
            self._answer(200, {'extensions': EXTENSIONS})
        elif path in EMPTY_LISTS:
            self._answer(200, {EMPTY_LISTS[path]: []})
        elif path == '/v2.0/networks':
            self._answer(200, {'networks': [shown(NETWORK, query)]
                               if matches(NETWORK, query) else []})
        elif path == f'/v2.0/networks/{NETWORK_ID}':
            self._answer(200, {'network': shown(NETWORK, query)})
        elif path == '/v2.0/ports':
            with LOCK:
                found = [shown(p, query) for p in PORTS.values()
                         if matches(p, query)]
            self._answer(200, {'ports': found})
        elif port:
            with LOCK:
                item = PORTS.get(port.group(1))
            if item is None:
                self._not_found('Port', port.group(1))
            else:
                self._answer(200, {'port': shown(item, query)})
        elif binding:
            self._binding_shown(*binding.groups())
        else:
            self._unknown()

    def _binding_shown(self, port_id: str, host: str) -> None:
        """Only the active binding exists: Nova's cold moves make no
        other (it asks, and updates ``binding:host_id`` later)."""
        with LOCK:
            item = PORTS.get(port_id)
            bound = item is not None and item['binding:host_id'] == host
            answer = {'binding': binding_of(item)} if bound else None
        if answer is None:
            self._not_found('PortBinding', f'{port_id} on {host}')
        else:
            self._answer(200, answer)

    def do_POST(self) -> None:  # noqa: N802
        path, _query = self._request()
        if path != '/v2.0/ports':
            return self._unknown()
        body = self._body().get('port', {})
        if body.get('network_id') != NETWORK_ID:
            return self._not_found('Network', str(body.get('network_id')))
        port = new_port(body)
        with LOCK:
            PORTS[port['id']] = port
        self._answer(201, {'port': port})

    def do_PUT(self) -> None:  # noqa: N802
        path, _query = self._request()
        port = PORT.match(path)
        if not port:
            return self._unknown()
        changes = self._body().get('port', {})
        if not set(changes) <= UPDATABLE:
            return self._unknown()
        with LOCK:
            item = PORTS.get(port.group(1))
            if item is not None:
                host = changes.pop('binding:host_id', item['binding:host_id'])
                item.update(changes)
                bind(item, host or '')
                item = dict(item)
        if item is None:
            return self._not_found('Port', port.group(1))
        self.log_message('port %s bound to %r', item['id'],
                         item['binding:host_id'])
        self._answer(200, {'port': item})

    def do_DELETE(self) -> None:  # noqa: N802
        path, _query = self._request()
        port = PORT.match(path)
        binding = BINDING.match(path)
        if port:
            with LOCK:
                gone = PORTS.pop(port.group(1), None)
            if gone is None:
                return self._not_found('Port', port.group(1))
            self._answer(204, None)
        elif binding:
            self._binding_deleted(*binding.groups())
        else:
            self._unknown()

    def _binding_deleted(self, port_id: str, host: str) -> None:
        """An inactive binding there is none to delete (404, which Nova
        expects after a confirm, for the source host); the active one
        stays (409)."""
        with LOCK:
            item = PORTS.get(port_id)
            active = item is not None and item['binding:host_id'] == host
        if not active:
            return self._not_found('PortBinding', f'{port_id} on {host}')
        self._answer(409, {'NeutronError': {
            'type': 'PortBindingError', 'detail': '',
            'message': f'stand-in: the binding of {port_id} on {host} '
                       'is the active one'}})

    def _unknown(self) -> None:
        self.log_message('UNKNOWN %s %s: not a stand-in call',
                         self.command, self.path)
        self._answer(501, {'NeutronError': {
            'type': 'NotImplemented', 'detail': '',
            'message': f'stand-in: {self.command} {self.path} unknown'}})

    do_PATCH = _unknown


def main() -> None:
    address, port = sys.argv[1], int(sys.argv[2])
    server = http.server.ThreadingHTTPServer((address, port), Handler)
    server.serve_forever()


if __name__ == '__main__':
    main()
