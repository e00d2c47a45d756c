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
from typing import Callable, Optional

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

#: where libvirt's system QEMU driver keeps ``<name>.pid`` (in this mount
#: namespace: host B of the tests has its own)
RUN_DIR = '/run/libvirt/qemu'
POLL_SECONDS = 0.05


def _runs_guest(pid: int, uuid: str) -> bool:
    """Whether ``pid`` is (still) a live process started for ``uuid``: a
    zombie has released everything, and a reused PID is another's."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            argv = f.read().split(b'\0')
    except (OSError, IndexError):
        return False
    return state != 'Z' and uuid.encode() in argv


def pid_of(name: str, uuid: str,
           run_dir: Optional[str] = None) -> Optional[int]:
    """The PID of guest ``name``'s QEMU, None if there is none we can
    tell (not running, or a libvirt that keeps its files elsewhere)."""
    try:
        with open(os.path.join(run_dir or RUN_DIR, f'{name}.pid')) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if _runs_guest(pid, uuid) else None


def wait_gone(pid: int, uuid: str, timeout: float) -> bool:
    """Wait up to ``timeout`` s for QEMU ``pid`` to exit; True once it
    has."""
    deadline = time.monotonic() + timeout
    while _runs_guest(pid, uuid):
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
    pid = pid_of(name, uuid)
    stop()
    if pid is not None and not wait_gone(pid, uuid, timeout):
        LOG.warning('QEMU (pid %d) still runs %.0f s after the guest went '
                    'off', pid, timeout, instance_uuid=uuid)
