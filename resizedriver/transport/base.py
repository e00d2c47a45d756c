"""The one interface every transport implements.

A transport is "a host we act on": it runs commands there and puts files
there.  The engine uses it for everything it does to the destination, so
same-host, shared-storage and remote resizes share one code path and differ
only in the transport they are handed.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shlex
from typing import Callable, Iterator, Optional, Sequence

from oslo_concurrency import processutils
from oslo_log import log as logging

from resizedriver import exception
from resizedriver import sparse
from resizedriver.sparse import ProgressFn, partial_path
from resizedriver.transport.proc import Deadlines, run, spawn

LOG = logging.getLogger(__name__)
#: the command to run on a copy's verified partial file (its path given)
#: before it gets its name (``Transport.copy_file``)
Prepare = Callable[[str], Sequence[str]]


class Transport(abc.ABC):
    """Commands and file copies on one host."""

    #: None for this host, else the address commands are sent to.
    host: Optional[str] = None
    deadlines: Deadlines = Deadlines()
    #: what copies run on the target beyond coreutils (``_send``'s
    #: receiver)
    copy_programs: tuple[str, ...] = ('python3',)

    @abc.abstractmethod
    def _command(self, argv: list[str]) -> list[str]:
        """The local argv that runs ``argv`` on the target host."""

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Many commands and copies to come (a resize's): a transport
        that pays for a connection per command keeps one open for them
        until the block ends.  This host's has none to keep."""
        yield

    def _send(self, src: str, part: str,
              progress: Optional[ProgressFn]) -> tuple[str, str]:
        """Write local ``src`` to ``part`` on the target, data fsynced;
        within ``deadlines``, the child reaped whatever happens.  Returns
        the hash of ``src`` as read and sent, and that of ``part`` as read
        back from the target's device (see :mod:`resizedriver.sparse`).

        The sparse stream into ``RECEIVER``, run where ``_command`` runs
        things: the same program writes and reads back every copy, on
        this host or another.
        """
        cmd = self._command(['python3', '-c', sparse.RECEIVER, part,
                             str(sparse.VERIFY_WINDOW)])
        timeout = self.deadlines.for_size(os.path.getsize(src))
        sent = ''       # matches no digest: a broken stream never passes
        with spawn(cmd, timeout, stdin=True, stdout=True) as child:
            try:
                sent = sparse.write_stream(src, child.stdin, progress)
                child.stdin.close()
            except BrokenPipeError:
                pass    # the receiver ended: its exit code tells why
            written = child.stdout.read().decode(errors='replace').strip()
            rc = child.wait()
        if rc != 0:
            raise child.failure(f'copy of {src} to {part}{self._where}', rc)
        return sent, written

    def copy_file(self, src: str, dst: str,
                  progress: Optional[ProgressFn] = None, *,
                  owner: str, prepare: Optional[Prepare] = None) -> None:
        """Copy local file ``src`` to ``dst`` on the target host.

        Written to ``owner``'s partial name, read back from the device
        and compared with the hash of the bytes read from ``src`` and
        sent, and only then renamed to ``dst`` (the directory fsynced):
        ``dst`` is never a truncated, unverified or non-durable file, so
        a ``_base`` file other instances may use can be published this
        way while they look at it.  Two owners copying the same file each
        write their own partial file; the second rename replaces an
        identical verified file.  ``prepare`` gives a command run on the
        verified partial file (its path given) before the rename, in the
        same round trip.  On failure our partial file is removed (and
        left for the undo if even that fails).
        """
        part = partial_path(dst, owner)
        try:
            sent, written = self._send(src, part, progress)
            if written != sent:
                raise exception.CommandFailed(
                    f'the copy of {src} at {part}{self._where} differs from '
                    f'the source')
            self.publish(part, dst, prepare(part) if prepare else ())
        except BaseException:
            try:
                self.remove_partial(dst, owner)
            except exception.ResizeDriverError as e:
                # e.g. the host is gone: the undo (or recovery) retries
                LOG.warning('Cannot remove partial copy %s%s yet: %s', part,
                            self._where, e, instance_uuid=owner)
            raise

    @property
    def _where(self) -> str:
        return f' on {self.host}' if self.host else ''

    def execute(self, *argv: str, stdin: Optional[str] = None,
                timeout: Optional[float] = None) -> str:
        """Run ``argv`` on the target host and return its stdout; killed
        after ``timeout`` seconds (default: the command deadline)."""
        try:
            out = run(self._command(list(argv)), stdin,
                      timeout or self.deadlines.command)
        except processutils.ProcessExecutionError as e:
            raise self._error(e, argv) from e
        except OSError as e:
            raise exception.CommandFailed(
                f'cannot run {argv[0]}: {e}') from e
        return out

    def _error(self, e: processutils.ProcessExecutionError,
               argv: tuple[str, ...]) -> Exception:
        cmd = ' '.join(shlex.quote(a) for a in argv)
        err = (e.stderr or '').strip()
        return exception.CommandFailed(
            f'{cmd!r} failed{self._where} (exit {e.exit_code}): {err}')

    # Small operations every transport gets from execute().

    def missing(self, *programs: str) -> list[str]:
        """Those of ``programs`` the target cannot run (none on its
        PATH), asked in one round trip: a host that is not reachable at
        all raises as ``execute`` does."""
        out = self.execute(
            'sh', '-c', 'for p do command -v "$p" >/dev/null || '
            'echo "$p"; done', 'sh', *programs)
        return out.splitlines()

    def exists(self, path: str) -> bool:
        return self.execute('sh', '-c', 'if [ -e "$1" ]; then echo y; fi',
                            'sh', path).strip() == 'y'

    def makedirs(self, path: str) -> None:
        self.execute('mkdir', '-p', path)

    def remove_tree(self, path: str) -> None:
        self.execute('rm', '-rf', '--one-file-system', path)

    def remove_file(self, path: str) -> None:
        self.execute('rm', '-f', '--', path)

    def remove_partial(self, dst: str, owner: str) -> None:
        """Remove what ``owner``'s killed ``copy_file(..., dst)`` may have
        left -- never another owner's partial file, nor ``dst``."""
        self.remove_file(partial_path(dst, owner))

    def rename(self, src: str, dst: str) -> None:
        self.execute('mv', '-T', '--', src, dst)

    def publish(self, part: str, dst: str,
                first: Sequence[str] = ()) -> None:
        """Rename ``part`` to ``dst`` durably (a rename is durable only
        once its directory is fsynced), after the command ``first`` if
        one is given, all in one round trip."""
        self.execute('sh', '-c', 'p=$1 d=$2 s=$3; shift 3; '
                     '{ [ $# -eq 0 ] || "$@"; } && '
                     'mv -T -- "$p" "$d" && sync -- "$s"',
                     'sh', part, dst, os.path.dirname(dst), *first)

    def sync_dir(self, *paths: str) -> None:
        """fsync each directory of ``paths`` (coreutils ``sync FILE`` is
        fsync), in one round trip."""
        self.execute('sync', '--', *paths)

    def free_bytes(self, path: str) -> int:
        out = self.execute('df', '--output=avail', '-B1', path)
        return int(out.split()[-1])

    def file_size(self, path: str) -> int:
        return int(self.execute('stat', '-c', '%s', path).strip())

    def sha256(self, path: str) -> str:
        return self.execute(
            'sha256sum', '--', path,
            timeout=self.deadlines.for_size(self.file_size(path))).split()[0]

    def sha256_from_disk(self, path: str) -> str:
        """The digest of ``path`` as the device holds it: the (clean,
        fsynced) cached pages are dropped first, so the digest proves what
        a power cut would leave, not what the page cache remembers."""
        self.execute('dd', f'if={path}', 'iflag=nocache', 'count=0',
                     'status=none')
        return self.sha256(path)

    def machine_id(self) -> str:
        return self.execute('cat', '/etc/machine-id').strip()
