"""Another host over ssh.

Commands go through one ssh invocation each.  Files are streamed as the
sparse extent stream of :mod:`resizedriver.sparse` into a small receiver
run by the destination's python3, so holes are neither sent nor filled.
"""

from __future__ import annotations

import shlex
import subprocess
from typing import Optional

from resizedriver import exception
from resizedriver import sparse
from resizedriver.sparse import ProgressFn
from resizedriver.transport import base

SSH_UNREACHABLE = 255


class SshOptions:
    """How to reach a host: user, port, key and extra ``-o`` options."""

    def __init__(self, user: str = '', port: int = 22,
                 identity_file: str = '',
                 options: Optional[list[str]] = None) -> None:
        self.user = user
        self.port = port
        self.identity_file = identity_file
        self.options = list(options or [])

    def argv(self) -> list[str]:
        """``ssh`` and its options, without the host."""
        argv = ['ssh', '-p', str(self.port)]
        if self.identity_file:
            argv += ['-i', self.identity_file]
        for opt in self.options:
            argv += ['-o', opt]
        return argv

    def target(self, host: str) -> str:
        return f'{self.user}@{host}' if self.user else host


class SshTransport(base.Transport):
    def __init__(self, host: str, options: SshOptions) -> None:
        self.host = host
        self.options = options

    def _command(self, argv: list[str]) -> list[str]:
        return (self.options.argv() + [self.options.target(self.host), '--',
                ' '.join(shlex.quote(a) for a in argv)])

    def _error(self, e, argv):
        if e.exit_code == SSH_UNREACHABLE:
            return exception.DestinationUnreachable(
                f'cannot reach {self.host} over ssh: '
                f'{(e.stderr or "").strip()}')
        return super()._error(e, argv)

    def copy_file(self, src: str, dst: str,
                  progress: Optional[ProgressFn] = None) -> None:
        cmd = self._command(['python3', '-c', sparse.RECEIVER, dst])
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdin is not None
        try:
            sparse.write_stream(src, proc.stdin, progress)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        finally:
            err = proc.stderr.read().decode(errors='replace').strip() \
                if proc.stderr else ''
            rc = proc.wait()
        if rc != 0:
            raise exception.CommandFailed(
                f'copy of {src} to {self.host}:{dst} failed (exit {rc}): '
                f'{err[-2000:]}')
