"""Another host over ssh.

Commands go through one ssh invocation each.  Files are streamed as the
sparse extent stream of :mod:`resizedriver.sparse` into a small receiver
run by the destination's python3 (``Transport._send``), so holes are
neither sent nor filled.

Within a :meth:`SshTransport.session` (a resize's migrate) they all go
over one connection, ssh's own multiplexing: a new connection's key
exchange and authentication cost 0.4-0.7 s to host B here, a session
over an open one 0.1-0.2 s, and pre-copy's last copy, made with the
guest off, needs several.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from typing import Callable, Iterator, Optional, TypeVar

from resizedriver import exception
from resizedriver.transport import base
from resizedriver.transport.proc import Deadlines

SSH_UNREACHABLE = 255

#: Always given unless the operator sets the same key: never prompt, give
#: up on a dead host, and end a copy whose network went silent after about
#: a minute (it is then rolled back) instead of hanging the resize.
DEFAULT_OPTIONS = ('BatchMode=yes', 'ConnectTimeout=30',
                   'ServerAliveInterval=15', 'ServerAliveCountMax=4')

#: The ssh options of multiplexing: an operator who sets any of them runs
#: their own (``~/.ssh/config`` is overridden by ours, ``ssh_options``
#: are not).
_MULTIPLEXING = frozenset({'controlmaster', 'controlpath', 'controlpersist'})
#: The master connection's remote command: it reads our end of a pipe, so
#: the master ends when we close it -- or are killed, with no cleanup of
#: ours -- and no connection outlives the resize.
MASTER_COMMAND = 'cat >/dev/null'
#: Seconds a master may take to end once its command's input is closed.
MASTER_GRACE = 10
#: What ssh says when the master's connection may not carry one more
#: session (sshd's ``MaxSessions``, 10 by default, counts the master's).
MUX_REFUSED = 'session request failed'

T = TypeVar('T')

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

    @property
    def multiplexes(self) -> bool:
        """Whether the operator's options set up multiplexing already."""
        return any(_key(o) in _MULTIPLEXING for o in self.options)

    def argv(self, *more: str) -> list[str]:
        """``ssh`` and its options (``more``: further ``-o`` options), up
        to and including ``--``: the host comes next, where nothing can
        turn it into an option."""
        argv = ['ssh']
        if self.port is not None:   # else ssh's own config says (kolla)
            argv += ['-p', str(self.port)]
        if self.user:
            argv += ['-l', self.user]
        if self.identity_file:
            argv += ['-i', self.identity_file]
        for opt in self.options + list(more):
            argv += ['-o', opt]
        return argv + ['--']


class SshTransport(base.Transport):
    host: str       # never this host

    def __init__(self, host: str, options: SshOptions,
                 deadlines: Deadlines = Deadlines()) -> None:
        self.host = check_host(host)
        self.options = options
        self.deadlines = deadlines
        #: the open session's master socket
        self._control: Optional[str] = None
        #: this thread's command was refused by the master's sshd
        self._refused = threading.local()

    def ssh_argv(self) -> list[str]:
        """``SshOptions.argv``, through the session's master if one is
        open.  ``ControlMaster=no``: a command never becomes a master,
        and connects on its own if the master is not up (yet, or any
        more: ssh falls back when the socket is missing or dead)."""
        if self._control is None or getattr(self._refused, 'now', False):
            return self.options.argv()
        return self.options.argv(f'ControlPath={self._control}',
                                 'ControlMaster=no')

    def _or_own_connection(self, call: Callable[[], T]) -> T:
        """``call()``, again over a connection of its own if sshd refused
        it a session on the master's (ssh does not fall back then): a
        command refused never ran, a copy never began."""
        try:
            return call()
        except exception.ResizeDriverError as e:
            if self._control is None or MUX_REFUSED not in str(e):
                raise
        self._refused.now = True
        try:
            return call()
        finally:
            self._refused.now = False

    def execute(self, *argv: str, stdin: Optional[str] = None,
                timeout: Optional[float] = None) -> str:
        return self._or_own_connection(lambda: super(
            SshTransport, self).execute(*argv, stdin=stdin, timeout=timeout))

    def copy_file(self, src: str, dst: str,
                  progress: Optional[base.ProgressFn] = None, *,
                  owner: str, prepare: Optional[base.Prepare] = None) -> None:
        self._or_own_connection(lambda: super(SshTransport, self).copy_file(
            src, dst, progress, owner=owner, prepare=prepare))

    def _command(self, argv: list[str]) -> list[str]:
        return self.ssh_argv() + [self.host, shlex.join(argv)]

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """One connection for every command and copy until the block
        ends: a master started in the background (not waited for: the
        commands before it is up connect on their own, and a host that
        cannot be reached is reported by them as before), its socket in
        a directory only we can open.  Left to the operator's own
        multiplexing if ``ssh_options`` set one up; a nested session is
        the outer one."""
        if self._control is not None or self.options.multiplexes:
            yield
            return
        directory = tempfile.mkdtemp(prefix='rd-ssh-')    # mode 0700
        control = os.path.join(directory, 'master')
        master = subprocess.Popen(
            self.options.argv(f'ControlPath={control}', 'ControlMaster=yes',
                              'ControlPersist=no') +
            [self.host, MASTER_COMMAND], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self._control = control
        try:
            yield
        finally:
            self._control = None
            _end(master)
            shutil.rmtree(directory, ignore_errors=True)

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


def _end(master: subprocess.Popen) -> None:
    """Close the master's input (its remote command ends, then the
    connection), killed if it does not end within ``MASTER_GRACE``."""
    assert master.stdin is not None
    try:
        master.stdin.close()
    except OSError:
        pass        # it ended already: the pipe is broken
    try:
        master.wait(MASTER_GRACE)
    except subprocess.TimeoutExpired:
        master.kill()
        master.wait()
