"""The resizedriver command, killed like a power cut at a chosen point.

RD_CRASH_AT = '<operation>:<step>' (a plan name and a step name): the
process SIGKILLs itself right after that step has run, before the journal
records it done.  'confirm_migration:mid pull' instead kills it while
the overlay plan's block pull runs; 'after_finish_migration:fail fold'
makes the pre-copy's fold fail (as a pull QEMU aborts does) instead of
killing anything; 'confirm_migration:pull times out' has the overlay's
pull outlast its deadline (throttled, given a second), and
'after_finish_migration:pull times out' the pre-copy's fold the same;
'migrate_disk_and_power_off:fail after pivot' fails the pre-copy at
once and has the undo's active commit pivot, then report a failure
(as a pivot whose answer libvirt lost).  Pre-copy
rounds: 'migrate_disk_and_power_off:mid round 2' kills it right after
round 2's snapshot (the guest writes to a second top over the first);
'migrate_disk_and_power_off:write in round 1' kills nothing but has the
guest's disk written (``PATTERN`` at ``OFFSET``, through QEMU's block
layer as the guest's own writes go) just before round 2 freezes the top
that holds it.  Everything else is the real
command.  Over ssh (no environment passes) the remote command sets it:
``env RD_CRASH_AT=...``.  Imported, it only lends its constants.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import libvirt
import libvirt_qemu

from resizedriver import blockjob
from resizedriver import domain_xml
from resizedriver import exception
from resizedriver import guest
from resizedriver import journal
from resizedriver import transport
from resizedriver.cmd import cli
from resizedriver.operations import precopy

TARGET = os.environ.get('RD_CRASH_AT', '')
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


def throttled_pull(self, target_dev: str, base, bandwidth: int = 0) -> None:
    """RD_CRASH_AT = '...:pull times out': the fold's pull at
    ``SLOW_PULL``, which its one-second deadline cannot wait for."""
    _block_pull(self, target_dev, base, SLOW_PULL)


#: what 'write in round 1' writes, and where (clear of the guest's own
#: marks in sectors 0 and 1 and of its writer from 1 MiB on,
#: tools/guest-init)
PATTERN, OFFSET, LENGTH = 0xab, 512 * 1024, 64 * 1024


def write_to_vda(running: guest.Guest, pattern: int, offset: int,
                 length: int) -> None:
    """Write ``pattern`` into the running guest's vda through QEMU's
    block layer, as the guest's own writes go."""
    alias, = domain_xml.parse(running.live_xml()).xpath(
        "./devices/disk[target/@dev='vda']/alias/@name")
    out = libvirt_qemu.qemuMonitorCommand(
        running._domain, f'qemu-io -d /machine/peripheral/{alias}/'
        f'virtio-backend "write -P {pattern:#x} {offset} {length}"',
        libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
    # qemu-io's report goes to QEMU's stdout; only errors come back
    assert not out.strip(), out


def snapshot_round(op, round_: int = 1) -> None:
    """The pre-copy's snapshot, with round 2's preceded by the write or
    followed by the kill."""
    if round_ == 2 and TARGET.endswith(':write in round 1'):
        write_to_vda(op.guest, PATTERN, OFFSET, LENGTH)
    _snapshot(op, round_)
    if round_ == 2 and TARGET.endswith(':mid round 2'):
        os.kill(os.getpid(), signal.SIGKILL)


def pull_within_a_second(guest_, target_dev: str, base, timeout: float,
                         progress=None, bandwidth: int = 0) -> None:
    """RD_CRASH_AT = 'after_finish_migration:pull times out': the fold's
    pull (throttled) given a second."""
    _pull(guest_, target_dev, base, 1.0, progress, bandwidth)


def failing_precopy(op) -> None:
    raise exception.ResizeDriverError('the pre-copy failed (crashcli)')


def pivot_then_fail(self, target_dev: str) -> None:
    """The first pivot happens, and is reported failed."""
    guest.Guest.pivot_block_job = _pivot
    _pivot(self, target_dev)
    raise libvirt.libvirtError('pivoted, then reported failed (crashcli)')


def failing_fold(op) -> None:
    raise blockjob.FoldFailed('vda: the pull was aborted (crashcli)')


if __name__ == '__main__':
    journal.Journal.done = done
    if TARGET == 'confirm_migration:mid pull':
        _block_pull = guest.Guest.block_pull
        guest.Guest.block_pull = block_pull
    elif TARGET == 'confirm_migration:pull times out':
        _block_pull = guest.Guest.block_pull
        guest.Guest.block_pull = throttled_pull
        transport.deadlines = lambda conf: transport.Deadlines(
            command=1, rate=1 << 40)
    elif TARGET == 'after_finish_migration:pull times out':
        _block_pull = guest.Guest.block_pull
        guest.Guest.block_pull = throttled_pull
        _pull = blockjob.pull
        blockjob.pull = pull_within_a_second
    elif TARGET == 'migrate_disk_and_power_off:fail after pivot':
        precopy.precopy = failing_precopy
        _pivot = guest.Guest.pivot_block_job
        guest.Guest.pivot_block_job = pivot_then_fail
    elif TARGET == 'after_finish_migration:fail fold':
        precopy.fold_layers = failing_fold
    elif TARGET.endswith((':mid round 2', ':write in round 1')):
        _snapshot = precopy.snapshot
        precopy.snapshot = snapshot_round
    sys.exit(cli.main())
