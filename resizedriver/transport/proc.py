"""Child processes with a bounded lifetime, reaped on every path.

Every command we start (ssh, rsync, qemu-img, sha256sum, ...) gets a
deadline and runs in a session of its own, so that killing it also kills
what it started (rsync's ssh, a shell's children) instead of leaving them
writing after we gave up.  Whatever ends the caller's work -- success, a
non-zero exit, a progress callback raising (Nova's ``instance.save()``
can), EIO reading a disk, the deadline -- the child is killed if still
running and waited for before the exception goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import signal
import subprocess
import threading
from typing import IO, Iterator, Optional

from oslo_concurrency import processutils

from resizedriver import exception

MiB = 1024 * 1024
#: how much of a child's stderr is kept for the error message
STDERR_TAIL = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Deadlines:
    """How long a command may run.

    ``command`` bounds every command; one that reads or writes a whole
    file (a copy, a checksum, a conversion) gets ``command`` plus the
    file's size at ``rate`` bytes per second on top, so a large disk on a
    slow link is not killed while a hung one still is.
    """

    command: float = 600.0
    rate: float = 5.0 * MiB

    def for_size(self, size: int) -> float:
        return self.command + size / self.rate


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole session (it is its group leader)."""
    if proc.returncode is not None:
        return      # reaped: its pid may belong to someone else by now
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run(argv: list[str], stdin: Optional[str], timeout: float) -> str:
    """``processutils.execute`` with a deadline that kills and reaps.

    processutils' own ``timeout`` only stops *waiting* (the child lives
    on), so on expiry we kill the child's session and wait for it.
    """
    started: list[subprocess.Popen] = []
    try:
        # oslo.concurrency annotates timeout as int, but hands it to
        # Popen.communicate, which takes the float we mean.
        out, _err = processutils.execute(  # type: ignore[call-overload]
            *argv, process_input=stdin, timeout=timeout,
            preexec_fn=os.setsid, on_execute=started.append)
    except subprocess.TimeoutExpired as e:
        for proc in started:
            _kill_group(proc)
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        raise exception.CommandFailed(
            f'{argv[0]} did not finish within {timeout:.0f} s and was '
            f'killed') from e
    return out


def _buffered(pipe: Optional[IO[bytes]]) -> Optional[IO[bytes]]:
    """``pipe`` buffered, as Popen makes it by default; eventlet's green
    Popen (nova-compute of Nova 31 to 33) hands out raw ones, which
    have no ``read1``."""
    if pipe is None or isinstance(pipe, io.BufferedIOBase):
        return pipe
    return io.BufferedReader(pipe)  # type: ignore[type-var]


class Child:
    """A running command; use it through :func:`spawn`."""

    def __init__(self, argv: list[str], timeout: float, stdin: bool,
                 stdout: bool) -> None:
        self.argv = argv
        self.timeout = timeout
        self.timed_out = False
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True)
        for name in ('stdout', 'stderr'):
            setattr(self.proc, name, _buffered(getattr(self.proc, name)))
        self._err = bytearray()
        # Read stderr all along: a chatty remote must not fill the pipe
        # and block on it while we block writing its stdin.
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    @property
    def stdout(self) -> io.BufferedReader:
        """Buffered (Popen's default), so ``read1`` returns what the child
        wrote so far instead of waiting for a full buffer."""
        assert isinstance(self.proc.stdout, io.BufferedReader)
        return self.proc.stdout

    def _drain(self) -> None:
        stderr = self.proc.stderr
        assert isinstance(stderr, io.BufferedReader)
        for chunk in iter(lambda: stderr.read1(65536), b''):
            self._err += chunk
            del self._err[:-STDERR_TAIL]

    def _expire(self) -> None:
        self.timed_out = True
        _kill_group(self.proc)

    @property
    def stderr(self) -> str:
        return self._err.decode(errors='replace').strip()

    def kill(self) -> None:
        _kill_group(self.proc)

    def wait(self) -> int:
        """Close its stdin (end of input), wait within the deadline, and
        return the exit code; a killed child's code is negative."""
        if self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        rc = self.proc.wait()
        self._timer.cancel()
        # bounded too: a daemon the child left behind may hold stderr open
        self._reader.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        return rc

    def failure(self, what: str, rc: int) -> exception.CommandFailed:
        """The error for exit code ``rc`` of ``what``."""
        why = (f'did not finish within {self.timeout:.0f} s and was killed'
               if self.timed_out else f'failed (exit {rc})')
        return exception.CommandFailed(f'{what} {why}: {self.stderr[-2000:]}')


@contextlib.contextmanager
def spawn(argv: list[str], timeout: float, stdin: bool = False,
          stdout: bool = False) -> Iterator[Child]:
    """Start ``argv``; whatever the block raises, the child is killed and
    reaped before the exception propagates.  The block calls ``wait()``
    itself on success; the child is reaped here in any case."""
    child = Child(argv, timeout, stdin, stdout)
    try:
        yield child
    except BaseException:
        child.kill()
        child.wait()
        raise
    if child.proc.returncode is None:
        child.kill()
        child.wait()
