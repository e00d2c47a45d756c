"""The QEMU process of a running guest, and waiting for it to end.

libvirt reports a guest that shut itself down as off as soon as QEMU's
monitor closes, and stops the process without waiting for it
(``qemuProcessStop`` kills with ``VIR_QEMU_PROCESS_KILL_NOWAIT``).  Until
the old process has exited it still holds the guest's tap device and its
image locks, so a definition started at once -- the overlay plan starts
the resized guest well within a second of the power off -- can fail to
open them.  So a power off is not done until that process is gone.
"""

from __future__ import annotations

import os
import time
from typing import Callable, NamedTuple, Optional

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

#: where libvirt's system QEMU driver keeps ``<name>.pid`` (in this mount
#: namespace: host B of the tests has its own)
RUN_DIR = '/run/libvirt/qemu'
POLL_SECONDS = 0.05


class Process(NamedTuple):
    """One QEMU process: its PID and its start time, which tell it apart
    from a later process given the same PID."""

    pid: int
    start: str


def _stat(pid: int) -> Optional[tuple[str, str]]:
    """``pid``'s state letter and start time (in clock ticks since boot),
    None once it has been reaped."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


def _argv(pid: int) -> list[bytes]:
    """``pid``'s command line; empty once it is gone (or has released its
    memory on the way out)."""
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read().split(b'\0')
    except OSError:
        return []


def _exited(state: str) -> bool:
    """A zombie (or a task being reaped) has closed all its files."""
    return state in ('Z', 'X', 'x')


def find(pid: int, uuid: str) -> Optional[Process]:
    """The live process ``pid`` if it was started for guest ``uuid``."""
    stat = _stat(pid)
    if stat is None or _exited(stat[0]) or uuid.encode() not in _argv(pid):
        return None
    return Process(pid, stat[1])


def pid_of(name: str, uuid: str,
           run_dir: Optional[str] = None) -> Optional[Process]:
    """The QEMU process of guest ``name``, None if there is none we can
    tell (not running, or a libvirt that keeps its files elsewhere)."""
    try:
        with open(os.path.join(run_dir or RUN_DIR, f'{name}.pid')) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return find(pid, uuid)


def is_gone(process: Process) -> bool:
    """Whether ``process`` has exited.  Not its command line: the kernel
    empties that when it frees the memory of an exiting process, before
    that process closes its files."""
    stat = _stat(process.pid)
    return stat is None or _exited(stat[0]) or stat[1] != process.start


def wait_gone(process: Process, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``process`` to exit; True once it
    has."""
    deadline = time.monotonic() + timeout
    while not is_gone(process):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


#: how long a power off waits for the process after libvirt said "off"
EXIT_TIMEOUT = 30.0


def stop_and_wait(name: str, uuid: str, stop: Callable[[], object],
                  timeout: float = EXIT_TIMEOUT) -> None:
    """Run ``stop`` (a clean power off: ours or Nova's), then wait for the
    QEMU process that ran guest ``name`` to be gone; log if it outlives
    ``timeout`` (the start that follows then says what it could not
    open)."""
    process = pid_of(name, uuid)
    stop()
    if process is not None and not wait_gone(process, timeout):
        LOG.warning('QEMU (pid %d) still runs %.0f s after the guest went '
                    'off', process.pid, timeout, instance_uuid=uuid)
