"""Another host over ssh.

Commands go through one ssh invocation each.  Files are streamed as the
sparse extent stream of :mod:`resizedriver.sparse` into a small receiver
run by the destination's python3 (``Transport._send``), so holes are
neither sent nor filled.
"""

from __future__ import annotations

import re
import shlex
from typing import Optional

from resizedriver import exception
from resizedriver.transport import base
from resizedriver.transport.proc import Deadlines

SSH_UNREACHABLE = 255

#: Always given unless the operator sets the same key: never prompt, give
#: up on a dead host, and end a copy whose network went silent after about
#: a minute (it is then rolled back) instead of hanging the resize.
DEFAULT_OPTIONS = ('BatchMode=yes', 'ConnectTimeout=30',
                   'ServerAliveInterval=15', 'ServerAliveCountMax=4')

#: A host name ssh could read as an option or split into more words.
_BAD_HOST = re.compile(r'^-|[\s\x00-\x1f\x7f]')


class BadHost(exception.ResizeRefused):
    pass


def check_host(host: str) -> str:
    """``host`` if it can only be read as a host name, else refuse.

    ``-oProxyCommand=...`` as a host would be an ssh option that runs a
    command here; whitespace or control characters would become more
    arguments or a forged log line.
    """
    if not host or _BAD_HOST.search(host):
        raise BadHost(f'refusing destination host {host!r}: empty, '
                      f'leading "-", whitespace or control characters')
    return host


def _key(option: str) -> str:
    """ssh's own reading of an option's keyword: case-insensitive, ends
    at "=" or whitespace."""
    return re.split(r'[=\s]', option.strip(), maxsplit=1)[0].lower()


class SshOptions:
    """How to reach a host: user, port, key and ``-o`` options.  A port
    or user left unset is ssh's own configuration's (``~/.ssh/config``).

    ``options`` are merged into :data:`DEFAULT_OPTIONS`: one with the
    same keyword replaces that default (ssh takes the *first* value it is
    given, so the default must go, not merely come first), the others are
    added.
    """

    def __init__(self, user: str = '', port: Optional[int] = None,
                 identity_file: str = '',
                 options: Optional[list[str]] = None) -> None:
        self.user = user
        self.port = port
        self.identity_file = identity_file
        extra = [o.strip() for o in options or [] if o.strip()]
        overridden = {_key(o) for o in extra}
        self.options = [o for o in DEFAULT_OPTIONS
                        if _key(o) not in overridden] + extra

    def argv(self) -> list[str]:
        """``ssh`` and its options, up to and including ``--``: the host
        comes next, where nothing can turn it into an option."""
        argv = ['ssh']
        if self.port is not None:   # else ssh's own config says (kolla)
            argv += ['-p', str(self.port)]
        if self.user:
            argv += ['-l', self.user]
        if self.identity_file:
            argv += ['-i', self.identity_file]
        for opt in self.options:
            argv += ['-o', opt]
        return argv + ['--']


class SshTransport(base.Transport):
    host: str       # never this host

    def __init__(self, host: str, options: SshOptions,
                 deadlines: Deadlines = Deadlines()) -> None:
        self.host = check_host(host)
        self.options = options
        self.deadlines = deadlines

    def _command(self, argv: list[str]) -> list[str]:
        return self.options.argv() + [self.host, shlex.join(argv)]

    def _error(self, e, argv):
        if e.exit_code == SSH_UNREACHABLE:
            err = (e.stderr or '').strip()
            if err:
                return exception.DestinationUnreachable(
                    f'cannot reach {self.host} over ssh: {err}')
            # OpenSSH has no word for a command killed on the other side
            # or a connection dropped midway (at LogLevel=ERROR)
            return exception.DestinationUnreachable(
                f'ssh to {self.host} ended (exit 255) with no message '
                f'while running {shlex.join(argv[:2])!r}: the connection '
                f'dropped or the command was killed there')
        return super()._error(e, argv)
