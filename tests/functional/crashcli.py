"""The resizedriver command, killed like a power cut at a chosen point.

RD_CRASH_AT = '<operation>:<step>' (a plan name and a step name): the
process SIGKILLs itself right after that step has run, before the journal
records it done.  'confirm_migration:mid pull' instead kills it while
the overlay plan's block pull runs; 'after_finish_migration:fail fold'
makes the pre-copy's fold fail (as a pull QEMU aborts does) instead of
killing anything.  Everything else is the real command.  Over ssh (no
environment passes) the remote command sets it: ``env RD_CRASH_AT=...``.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from resizedriver import blockjob
from resizedriver import guest
from resizedriver import journal
from resizedriver.cmd import cli
from resizedriver.operations import precopy

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


def failing_fold(op) -> None:
    raise blockjob.FoldFailed('vda: the pull was aborted (crashcli)')


journal.Journal.done = done
if TARGET == 'confirm_migration:mid pull':
    _block_pull = guest.Guest.block_pull
    guest.Guest.block_pull = block_pull
elif TARGET == 'after_finish_migration:fail fold':
    precopy.fold_layers = failing_fold
sys.exit(cli.main())
