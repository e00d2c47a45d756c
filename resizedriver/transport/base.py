"""The one interface every transport implements.

A transport is "a host we act on": it runs commands there and puts files
there.  The engine uses it for everything it does to the destination, so
same-host, shared-storage and remote resizes share one code path and differ
only in the transport they are handed.
"""

from __future__ import annotations

import abc
import shlex
from typing import Optional

from oslo_concurrency import processutils

from resizedriver import exception
from resizedriver.sparse import PARTIAL_SUFFIX, ProgressFn


class Transport(abc.ABC):
    """Commands and file copies on one host."""

    #: None for this host, else the address commands are sent to.
    host: Optional[str] = None

    @abc.abstractmethod
    def _command(self, argv: list[str]) -> list[str]:
        """The local argv that runs ``argv`` on the target host."""

    @abc.abstractmethod
    def copy_file(self, src: str, dst: str,
                  progress: Optional[ProgressFn] = None) -> None:
        """Copy local file ``src`` to ``dst`` on the target host.

        ``dst`` must not appear until the copy is complete, so that a
        killed copy never leaves a truncated file under the final name.
        """

    def execute(self, *argv: str, stdin: Optional[str] = None) -> str:
        """Run ``argv`` on the target host and return its stdout."""
        try:
            out, _err = processutils.execute(*self._command(list(argv)),
                                             process_input=stdin)
        except processutils.ProcessExecutionError as e:
            raise self._error(e, argv) from e
        except OSError as e:
            raise exception.CommandFailed(
                f'cannot run {argv[0]}: {e}') from e
        return out

    def _error(self, e: processutils.ProcessExecutionError,
               argv: tuple[str, ...]) -> Exception:
        cmd = ' '.join(shlex.quote(a) for a in argv)
        where = f' on {self.host}' if self.host else ''
        err = (e.stderr or '').strip()
        return exception.CommandFailed(
            f'{cmd!r} failed{where} (exit {e.exit_code}): {err}')

    # Small operations every transport gets from execute().

    def exists(self, path: str) -> bool:
        return self.execute('sh', '-c', 'if [ -e "$1" ]; then echo y; fi',
                            'sh', path).strip() == 'y'

    def makedirs(self, path: str) -> None:
        self.execute('mkdir', '-p', path)

    def remove_tree(self, path: str) -> None:
        self.execute('rm', '-rf', '--one-file-system', path)

    def remove_file(self, path: str) -> None:
        self.execute('rm', '-f', path)

    def remove_partial(self, dst: str) -> None:
        """Remove what a killed ``copy_file(..., dst)`` may have left."""
        self.remove_file(dst + PARTIAL_SUFFIX)

    def rename(self, src: str, dst: str) -> None:
        self.execute('mv', '-T', src, dst)

    def free_bytes(self, path: str) -> int:
        out = self.execute('df', '--output=avail', '-B1', path)
        return int(out.split()[-1])

    def file_size(self, path: str) -> int:
        return int(self.execute('stat', '-c', '%s', path).strip())

    def sha256(self, path: str) -> str:
        return self.execute('sha256sum', path).split()[0]

    def machine_id(self) -> str:
        return self.execute('cat', '/etc/machine-id').strip()
