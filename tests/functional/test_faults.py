"""Fault injection on real resizes: every step of every operation killed,
and the network, the destination disk, qemu-img and libvirt broken.

Each cell adds a row to the step x fault -> outcome table printed at the
end of the run (see ``faultbench`` for what is checked and how).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.functional import faultbench
from tests.functional.conftest import MiB, Scenario
from tests.functional.faultbench import KILLED, Bench, Flavor
from tests.lib import testguest

pytestmark = pytest.mark.long

MIGRATE = 'migrate_disk_and_power_off'
FINISH = 'finish_migration'
REVERT = 'finish_revert_migration'
CONFIRM = 'confirm_migration'
RESIZE = 'resize'          # the command's whole resize, both halves

#: (operation, step, same instances path?) - a crashed migrate or finish
#: is rolled back; revert and confirm cells take the resize the previous
#: cell's retry left pending, and recovery completes them.  'copy backing
#: files' comes first: later, both paths have the backing file.
CRASHES = [
    (MIGRATE, 'copy backing files', False),
    (REVERT, 'stop resized guest', False),
    (MIGRATE, 'write resize record', False),
    (REVERT, 'drop destination copy', False),
    (MIGRATE, 'power off', False),
    (REVERT, 'move _resize back', False),
    (MIGRATE, 'create destination dir', False),
    (REVERT, 'define source domain', False),
    (MIGRATE, 'move instance dir to _resize', False),
    (REVERT, 'plug VIFs', False),
    (MIGRATE, 'copy disks', False),
    (REVERT, 'start guest', False),
    # The same path is the same host: the overlay plan.
    (MIGRATE, 'stage overlays', True),
    (REVERT, 'stop resized guest', True),
    (MIGRATE, 'move instance dir to _resize', True),
    (REVERT, 'remove resize record', True),
    (MIGRATE, 'put staged dir in place', True),
    (CONFIRM, 'fold backing chains', True),
    (FINISH, 'check staged overlays', True),
    (REVERT, 'move _resize back', True),
    (FINISH, 'start guest', True),
    (CONFIRM, 'delete _resize', True),
    (FINISH, 'define domain', True),
    (REVERT, 'define source domain', True),
    (FINISH, 'check copied disks', False),
    (CONFIRM, 'check copies were verified', False),
    (CONFIRM, 'delete _resize', False),
    (FINISH, 'rebase overlays', False),
    (FINISH, 'extend disks', False),
    (FINISH, 'plug VIFs', False),
    (FINISH, 'define domain', False),
    (FINISH, 'start guest', False),
    (RESIZE, MIGRATE, False),
    (RESIZE, FINISH, False),
]


#: CRASHES in runs of cells that share a guest, each run a test of its own
#: (side by side under pytest-xdist); a run's cells stay in the order
#: above, so each revert cell still takes the resize its predecessor's
#: retry left pending
RUN = 6
CRASH_RUNS = [CRASHES[i:i + RUN] for i in range(0, len(CRASHES), RUN)]


@pytest.mark.parametrize('cells', CRASH_RUNS, ids=[
    f'cells{i * RUN + 1}-{i * RUN + len(run)}'
    for i, run in enumerate(CRASH_RUNS)])
def test_process_killed_after_each_step(scenario: Scenario, cells):
    """Every cell proves in full what the module says: killed after its
    step, recovered, the guest back where it belongs with its bytes,
    nothing left over, and the same resize through.  Only the guest is
    shared, by the cells of one run."""
    b = Bench(scenario)
    for operation, step, same_path in cells:
        crash = f'{operation}:{step}'
        fault = f'killed after {step!r}' + (' (same path)' if same_path
                                             else '')
        if operation in (REVERT, CONFIRM):
            row, before = b.begin(operation, fault, pending=True)
            command = 'revert' if operation == REVERT else 'confirm'
            assert b.cli(command, b.uuid, crash_at=crash, expect_rc=None,
                         side=b.source_side).returncode == KILLED
            b.recover(row, 'completed', side=b.source_side)
            if operation == REVERT:
                before = b.reverted()
                b.expect_on_source(before, row)
            else:
                b.pending = False
                b.expect_guest(b.flavor)             # runs on as resized
                assert b.fingerprint() == before
                row.source = 'deleted at confirm; dest unchanged'
                b.expect_settled()
            row.retry = 'n/a (completed by recover)'
            continue
        row, before = b.begin(operation, fault)
        proc = b.cli(*b.resize_args(same_path=same_path), crash_at=crash,
                     expect_rc=None)
        assert proc.returncode == KILLED, proc.stderr
        b.recover(row, 'rolled back')
        b.expect_on_source(before, row)
        b.retry(row, same_path=same_path)


def test_network_faults(scenario: Scenario, sshd):
    """ssh refused up front and from the first disk copy on, and the
    network going silent mid-copy."""
    b = Bench(scenario)

    row, before = b.begin(MIGRATE, 'ssh to the destination refused')
    b.set_fault('ssh-refuse')
    err = b.cli(*b.resize_args(ssh=True), expect_rc=1).stderr
    assert 'cannot reach 127.0.0.1' in err, err
    row.outcome = 'refused before anything was touched'
    b.expect_on_source(before, row)
    b.retry(row, ssh=True)

    row, before = b.begin(MIGRATE, 'ssh refused from the first disk copy')
    b.set_fault('ssh-refuse-from-copy')
    err = b.cli(*b.resize_args(ssh=True), expect_rc=1).stderr
    assert 'UNDO INCOMPLETE' in err, err
    b.clear_faults()                                # the network is back
    err = b.cli(*b.resize_args(ssh=True), expect_rc=1).stderr
    assert 'resizedriver recover' in err, err       # refused until then
    b.recover(row, 'rolled back')
    row.outcome = ('undo incomplete (dest unreachable); resize refused '
                   'until recover rolled back')
    b.expect_on_source(before, row)
    b.retry(row, ssh=True)

    row, before = b.begin(MIGRATE, 'network silent mid-copy (sshd stopped)')
    silent = ('ConnectTimeout=5', 'ServerAliveInterval=1',
              'ServerAliveCountMax=3')
    b.set_fault('stall-copy', f'32768 disk {sshd.pid()}')
    try:
        err = b.cli(*b.resize_args(ssh=True), expect_rc=1,
                    ssh_extra=silent).stderr
    finally:
        for pid in map(int, b.fault_output('stalled-pids').split()):
            os.kill(pid, signal.SIGCONT)             # the network is back
    # ssh's keepalive gave up (exit 255; the test's LogLevel=ERROR hides
    # its "Timeout, server not responding").
    assert 'sshd stopped after 32768 bytes' in \
        b.fault_output('events').splitlines()
    assert "'copy disks'" in err and 'exit 255' in err, err
    assert 'UNDO INCOMPLETE' in err, err
    b.recover(row, 'rolled back')
    row.outcome = ('copy ended by ssh keepalive; undo incomplete; recover '
                   'rolled back')
    b.expect_on_source(before, row)
    b.retry(row, ssh=True)


def test_copy_killed_mid_disk(scenario: Scenario):
    """The ssh and the rsync copy SIGKILLed after 32 KiB of the disk."""
    b = Bench(scenario)
    for transport in ('ssh', 'rsync'):
        row, before = b.begin(MIGRATE, f'{transport} copy SIGKILLed '
                                       f'after 32 KiB of disk')
        b.set_fault('kill-copy', '32768 disk')
        err = b.cli(*b.resize_args(ssh=True), expect_rc=1,
                    transport=transport).stderr
        assert "at step 'copy disks'" in err and 'was undone' in err, err
        assert 'copy killed after 32768 bytes' in \
            b.fault_output('events').splitlines()
        row.outcome = 'failed at copy disks; rolled back at once'
        b.expect_on_source(before, row)
        b.retry(row, ssh=True, transport=transport)


def test_destination_full(scenario: Scenario):
    """The destination instances path is full up front, and fills up
    mid-copy."""
    b = Bench(scenario)
    small = os.path.join(scenario.root, 'small')   # where QEMU may read
    faultbench.mount_tmpfs(small, 200)
    try:
        _enospc_cells(b, small)
    finally:
        faultbench.umount(small)


def test_qemu_img_and_libvirt_failures(scenario: Scenario):
    """``qemu-img resize`` failing, a definition libvirt rejects and a
    guest libvirt cannot start."""
    b = Bench(scenario)
    row, before = b.begin(FINISH, 'qemu-img resize fails')
    b.set_fault('qemu-img-fail-resize')
    err = b.cli(*b.resize_args(), expect_rc=1).stderr
    assert "'extend disks'" in err and 'injected failure' in err, err
    row.outcome = 'failed at extend disks; resize reverted at once'
    b.expect_on_source(before, row)
    b.retry(row)

    for fault, vcpus, memory_mib, message, step in (
            ('define fails: 300 vCPUs', 300, 256, 'Maximum CPUs',
             'define domain'),
            ('start fails: 4 TiB of memory', 1, 4 * 1024 * 1024,
             'Cannot allocate memory', 'start guest')):
        flavor = Flavor(vcpus, memory_mib, b.flavor.next().root_mib)
        row, before = b.begin(FINISH, fault)
        err = b.cli(*b.resize_args(flavor=flavor), expect_rc=1).stderr
        assert message in err and f"'{step}'" in err, err
        row.outcome = f'failed at {step}; resize reverted at once'
        b.expect_on_source(before, row)
        b.retry(row)
        row.retry = 'ok (with a flavor the host can run)'


def _enospc_cells(b: Bench, small: str) -> None:
    """The destination instances path is a 200 MiB tmpfs."""
    os.makedirs(os.path.join(small, '_base'))
    for backing in os.listdir(os.path.join(b.here, '_base')):
        # as if another guest had brought it: the first copy is a disk
        subprocess.run(['cp', '--sparse=always',
                        os.path.join(b.here, '_base', backing),
                        os.path.join(small, '_base', backing)], check=True)
    args = ['resize', b.uuid, *b.flavor.next().args(),
            '--dest-instances-path', small, '--dest-host', '127.0.0.1']

    row, before = b.begin(MIGRATE, 'destination full before the resize')
    filler = os.path.join(small, 'other-tenant.img')
    st = os.statvfs(small)
    with open(filler, 'wb') as f:                   # leave 1 MiB free
        f.write(b'\1' * (st.f_bavail * st.f_frsize - (1 << 20)))
    err = b.cli(*args, expect_rc=1).stderr
    assert 'bytes free' in err, err
    os.unlink(filler)
    row.outcome = 'refused before anything was touched'
    b.expect_on_source(before, row)
    _retry_and_revert(b, row, args)

    row, before = b.begin(MIGRATE, 'ENOSPC at the destination mid-copy')
    b.set_fault('fill-dest', small)
    err = b.cli(*args, expect_rc=1).stderr
    assert 'No space left' in err and "'copy disks'" in err, err
    assert [e for e in b.fault_output('events').splitlines()
            if 'dest filled' in e]
    os.unlink(filler)                 # the other tenant goes away
    assert os.listdir(small) == ['_base'], os.listdir(small)
    row.outcome = 'failed at copy disks; rolled back at once'
    b.expect_on_source(before, row)
    _retry_and_revert(b, row, args)


def _retry_and_revert(b: Bench, row, args: list[str]) -> None:
    """Retry onto the small path, then revert to where the guest was."""
    b.mark_before_resize()
    b.cli(*args)
    assert b.guest_running()
    b.cli('revert', b.uuid)          # the record is on this side
    before = b.reverted()
    b.expect_guest(b.flavor)
    assert b.fingerprint() == before
    row.retry = 'ok (then reverted)'


def _boot_with(b: Bench, parameter: str) -> None:
    """Boot the guest again with one more kernel ``parameter``."""
    testguest.boot_with(b.s.host, b.uuid, parameter)
    b.expect_guest(b.flavor)


def _resize_away(b: Bench, shutdown_timeout: int) -> tuple[str, float]:
    """Resize from A to the other path (B); the old boot's console log
    and the seconds the resize took."""
    b.mark_before_resize()
    started = time.monotonic()
    b.cli(*b.resize_args(), shutdown_timeout=shutdown_timeout)
    took = time.monotonic() - started
    with open(os.path.join(b.here, b.uuid + '_resize', 'console.log'),
              errors='replace') as f:
        log = f.read()
    b.side, b.flavor = 'B', b.flavor.next()
    return log, took


def _revert_to_a(b: Bench, row: faultbench.Row) -> None:
    """The resize did not fail: revert it, the source as it was."""
    b.cli('revert', b.uuid, side='A')
    b.expect_on_source(b.reverted(), row)
    row.retry = 'n/a (did not fail); reverted fine'


def test_power_button_pressed_before_the_guest_listens(scenario: Scenario):
    """The guest's init says it is up but listens for the power button
    only 5 s later (the test guest's ``rdacpi-late``): the ACPI request,
    repeated every ``shutdown_retry_interval`` (2 s here), reaches it
    then, and it shuts down cleanly well within the timeout (without the
    repeat it would be powered off hard after 30 s)."""
    b = Bench(scenario)
    _boot_with(b, 'rdacpi-late=5')
    row, before = b.begin(MIGRATE, 'guest ignores ACPI for its first 5 s')
    log, took = _resize_away(b, shutdown_timeout=30)
    assert 'RDGUEST shutdown\n' in log.replace('\r', ''), log
    assert b.s.wait_boot(b.boot + 1).shutdown_mark == str(b.boot)
    b.expect_guest(b.flavor)
    row.outcome = (f'ACPI request repeated; clean shutdown; resize done in '
                   f'{took:.0f} s')
    _revert_to_a(b, row)


def test_power_off_that_never_finishes(scenario: Scenario):
    """The guest OS ignores the ACPI power button: after the shutdown
    timeout the guest is powered off hard, and the resize goes on."""
    b = Bench(scenario)
    _boot_with(b, 'rdignore-acpi')
    row, before = b.begin(MIGRATE, 'guest ignores the ACPI shutdown')
    log, took = _resize_away(b, shutdown_timeout=5)
    assert 'RDGUEST shutdown-ignored' in log
    b.expect_guest(b.flavor)
    assert b.fingerprint(os.path.join(b.paths['A'], b.uuid + '_resize')) \
        == before
    row.outcome = (f'powered off hard after the 5 s timeout; resize done '
                   f'in {took:.0f} s')
    _revert_to_a(b, row)


def test_confirm_whose_block_pull_times_out(scenario: Scenario):
    """The overlay plan's pull at confirm outlasts its deadline: the
    confirm still succeeds (under Nova a failure puts the running
    instance in ERROR for good), the guest runs on through _resize,
    which says so, as status does; recover folds it later and the
    guest's bytes are what they were."""
    b = Bench(scenario)
    row, before = _overlay_resize_with_data_to_pull(
        b, 'block pull times out (same path)')
    proc = b.cli('confirm', b.uuid, crash_at=f'{CONFIRM}:pull times out')
    assert 'the pull did not finish within 1 s' in proc.stderr, proc.stderr
    b.expect_guest(b.flavor)                 # ran on, as resized
    resize_dir = os.path.join(b.here, b.uuid + '_resize')
    assert os.path.isfile(os.path.join(resize_dir,
                                       'STILL-READ-BY-THE-RUNNING-GUEST'))
    assert f'still reads its disks through {resize_dir}' in \
        b.cli('status').stdout
    b.recover(row, 'completed')
    row.outcome = ('pull aborted, confirm succeeded; ' +
                   row.outcome.removeprefix('killed; '))
    _expect_folded(b, before)
    row.source = 'folded by recover, _resize deleted; guest bytes unchanged'
    row.retry = 'n/a (completed by recover)'


def _overlay_resize_with_data_to_pull(b: Bench, fault: str) \
        -> tuple[faultbench.Row, dict[str, str]]:
    """An overlay resize pending, 48 MiB in the root overlay for the
    confirm's pull to copy (written with the guest off: qemu-io is much
    faster than the guest writing under TCG); the row of ``fault`` and
    the fingerprint to compare with."""
    guest = b.s.host.lookup(b.uuid)
    guest.power_off(60, 2)
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c',
                    f'write -P 0x5a {MiB} {48 * MiB}',
                    os.path.join(b.here, b.uuid, 'disk')], check=True,
                   capture_output=True)
    guest.start()
    b.expect_guest(b.flavor)
    b.retry(same_path=True)                  # an overlay resize pending
    row = faultbench.Row(CONFIRM, fault, '')
    faultbench.TABLE.append(row)
    return row, b.fingerprint()


def _expect_folded(b: Bench, before: dict[str, str]) -> None:
    """The confirm completed: the guest runs on as resized with its
    bytes, on Nova's layout again (its disk backed by ``_base``)."""
    b.pending = False
    b.expect_guest(b.flavor)
    assert b.fingerprint() == before
    info = subprocess.run(['qemu-img', 'info', '-U', '-f', 'qcow2',
                           os.path.join(b.here, b.uuid, 'disk')],
                          check=True, capture_output=True, text=True).stdout
    assert f'backing file: {os.path.join(b.here, "_base")}/' in info, info
    b.expect_settled()


def test_confirm_killed_mid_block_pull(scenario: Scenario):
    """The command SIGKILLed while QEMU pulls the overlay plan's chain at
    confirm: the job is libvirt's and goes on without it; recover
    completes the confirm (waits for the job, flushes, deletes _resize)
    and the guest's bytes are what they were."""
    b = Bench(scenario)
    row, before = _overlay_resize_with_data_to_pull(
        b, 'killed mid block pull (same path)')
    proc = b.cli('confirm', b.uuid, crash_at=f'{CONFIRM}:mid pull',
                 expect_rc=None)
    assert proc.returncode == KILLED, proc.stderr
    domain = scenario.host.lookup(b.uuid)
    job = domain.block_job('vda')
    assert job is not None and 0 < job.cur < job.end, job   # mid-way
    # The throttle was the test's; an interrupted pull runs at full speed.
    subprocess.run(['virsh', 'blockjob', b.uuid, 'vda', '--bandwidth', '0'],
                   check=True, capture_output=True)
    b.recover(row, 'completed')
    row.outcome += f' (QEMU\'s pull was at {job.cur * 100 // job.end}%)'
    _expect_folded(b, before)                # ran on, as resized
    row.source = 'folded, _resize deleted; guest bytes unchanged'
    row.retry = 'n/a (completed by recover)'
