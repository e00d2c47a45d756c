"""The resizedriver command, killed like a power cut at a chosen point.

RD_CRASH_AT = '<operation>:<step>' (a plan name and a step name): the
process SIGKILLs itself right after that step has run, before the journal
records it done.  'confirm_migration:mid pull' instead kills it while
the overlay plan's block pull runs.  Everything else is the real command.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from resizedriver import guest
from resizedriver import journal
from resizedriver.cmd import cli

TARGET = os.environ['RD_CRASH_AT']
_done = journal.Journal.done


def done(self: journal.Journal, step: str) -> None:
    if f'{self.operation}:{step}' == TARGET:
        os.kill(os.getpid(), signal.SIGKILL)
    _done(self, step)


#: the pull's rate while it is to be caught mid-way, bytes/s
SLOW_PULL = 4 * 1024 * 1024


def block_pull(self, target_dev: str, base, bandwidth: int = 0) -> None:
    """RD_CRASH_AT = 'confirm_migration:mid pull': start the fold's pull
    throttled (the test's doing, so it can be caught half way), then die
    once QEMU has copied part of it; the job is libvirt's and goes on."""
    _block_pull(self, target_dev, base, SLOW_PULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = self.block_job(target_dev)
        if job is not None and job.cur > 0:
            break
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)


journal.Journal.done = done
if TARGET == 'confirm_migration:mid pull':
    _block_pull = guest.Guest.block_pull
    guest.Guest.block_pull = block_pull
sys.exit(cli.main())
