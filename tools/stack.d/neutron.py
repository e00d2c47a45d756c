"""A stand-in for Neutron: the stack's servers have no ports.

Nova asks Neutron about a server's ports even when it has none (at build,
resize, confirm, revert, delete); this answers those questions with "none"
and logs every request; anything else fails (HTTP 501, logged as UNKNOWN),
so a call Nova makes that it does not know shows up in ``neutron.log``
instead of passing unnoticed.  Run as ``python neutron.py ADDRESS PORT``.
"""

from __future__ import annotations

import http.server
import json
import sys
import urllib.parse

#: the GETs known, by path: what Neutron answers for a server without ports
EMPTY_LISTS = {
    '/v2.0/ports': 'ports',
    '/v2.0/networks': 'networks',
    '/v2.0/floatingips': 'floatingips',
    '/v2.0/security-groups': 'security_groups',
    '/v2.0/extensions': 'extensions',
}


class Handler(http.server.BaseHTTPRequestHandler):
    """One request: a known one answered, anything else 501."""

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = urllib.parse.urlsplit(self.path).path.rstrip('/')
        if path in ('', '/v2.0'):
            self._answer(200, {'versions': [
                {'id': 'v2.0', 'status': 'CURRENT', 'links': [
                    {'rel': 'self',
                     'href': f'http://{self.headers["Host"]}/v2.0/'}]}]})
        elif path in EMPTY_LISTS:
            self._answer(200, {EMPTY_LISTS[path]: []})
        else:
            self._unknown()

    def _unknown(self) -> None:
        self.log_message('UNKNOWN %s %s: not a stand-in call',
                         self.command, self.path)
        self._answer(501, {'NeutronError': {
            'type': 'NotImplemented', 'detail': '',
            'message': f'stand-in: {self.command} {self.path} unknown'}})

    do_POST = do_PUT = do_DELETE = do_PATCH = _unknown


def main() -> None:
    address, port = sys.argv[1], int(sys.argv[2])
    server = http.server.ThreadingHTTPServer((address, port), Handler)
    server.serve_forever()


if __name__ == '__main__':
    main()
