"""The pre-copy plan broken on purpose, on a real move from A to host B.

Each step of a two-round pre-copy migrate is SIGKILLed in turn (right
after it ran, before the journal records it done), and once in round 2,
and ``resizedriver recover`` rolls the resize back; the network to B is
cut mid round 2 and mid round 1, and B's filesystem fills mid pre-copy
(all rolled back at once).  B's half (the finish) is SIGKILLed after its
check, define and start: A's resize reverts at once, ``recover`` on B
rolls back B's interrupted journal.  After each, the guest runs on A
again from ``<uuid>/disk`` (the snapshot's tops folded back: live while
it ran, offline once it was off), with the bytes it had
(``faultbench``'s fingerprint), nothing left on A or B.  Then one
pre-copy goes through, and its revert is killed after the top was folded
back; recover completes it.  Rows join the fault table.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from resizedriver import domain_xml
from tests.functional import crashcli
from tests.functional.conftest import CRASHCLI, MiB, with_options
from tests.functional.crosshost import BASE, CrossScenario, holds_pattern
from tests.functional.faultbench import KILLED, TABLE, Bench, Row

pytestmark = pytest.mark.long

MIGRATE = 'migrate_disk_and_power_off'
FINISH = 'finish_migration'
AFTER_FINISH = 'after_finish_migration'
REVERT = 'finish_revert_migration'

#: A's half makes exactly two rounds, whatever the guest writes
TWO_ROUNDS = {'pre_copy_rounds': 2, 'pre_copy_final_mb': 0}

#: B's steps with their own undo or none (extend and plug VIFs are the
#: copy plan's, killed in test_faults)
FINISH_STEPS = ['check pre-copied disks', 'define domain', 'start guest']

STEPS = ['create destination dir', 'snapshot disks for pre-copy',
         'pre-copy disks', 'write resize record', 'power off',
         'move instance dir to _resize', 'copy what changed']


class PrecopyBench(Bench):
    """``faultbench.Bench`` on host A (side 'A' throughout), moving to B."""

    def __init__(self, scenario: CrossScenario) -> None:
        super().__init__(scenario)
        self.cross = scenario
        self.remote_crash = ''
        #: more [resizedriver] options for A's half
        self.options: dict[str, object] = {}
        self.b_conf = os.path.join(scenario.root, 'b.conf')

    def to_b(self) -> list[str]:
        return ['resize', self.uuid, *self.flavor.next().args(),
                '--dest-host', self.cross.b.addr]

    def conf(self, *args, **kw) -> str:
        """As ``Bench.conf``; with ``remote_crash`` set, B's half runs
        as crashcli with that ``RD_CRASH_AT``."""
        path = super().conf(*args, **kw)
        if self.options:
            path = with_options(path, os.path.basename(path)[:-len('.conf')]
                                + '-options', self.options)
        if not self.remote_crash:
            return path
        with open(path) as f:
            text = f.read()
        text = re.sub(r'^remote_command = \S+ -m resizedriver\.cmd\.cli ',
                      lambda m: f"remote_command = env 'RD_CRASH_AT="
                                f"{self.remote_crash}' {sys.executable} "
                                f"{CRASHCLI} ", text, flags=re.MULTILINE)
        assert CRASHCLI in text, text
        path = path[:-len('.conf')] + '-remote-crash.conf'
        with open(path, 'w') as f:
            f.write(text)
        return path

    def b_cli(self, *args: str) -> str:
        """The command on B, with B's own configuration."""
        return self.cross.b.run(sys.executable, '-m', 'resizedriver.cmd.cli',
                                '--config-file', self.b_conf, *args)

    def row(self, operation: str, fault: str) -> tuple[Row, dict]:
        row, before = self.begin(operation, fault + ' (pre-copy to B)')
        return row, before

    def tops(self) -> list[str]:
        """The snapshot tops on A (in the instance dir or ``_resize``)."""
        return sorted(f for d in (self.uuid, self.uuid + '_resize')
                      if os.path.isdir(os.path.join(self.here, d))
                      for f in os.listdir(os.path.join(self.here, d))
                      if f.startswith('disk.top'))

    def expect_back_on_a(self, before: dict, row: Row) -> None:
        """As ``expect_on_source``, and: no top left, the definition and
        the running chain on ``<uuid>/disk`` again, nothing on B."""
        self.expect_on_source(before, row)
        inst = os.path.join(self.here, self.uuid)
        assert not self.tops()
        guest = self.s.host.lookup(self.uuid)
        for xml in (guest.xml(), guest.live_xml()):
            disks = [d.path for d in domain_xml.file_disks(xml)
                     if d.target_dev == 'vda']
            assert disks == [os.path.join(inst, 'disk')], disks
        assert not os.path.exists(self.cross.b_path(self.uuid))
        assert self.cross.b_host.lookup(self.uuid) is None


def test_precopy_killed_after_each_step_and_broken_mid_copy(
        precopy: CrossScenario):
    b = PrecopyBench(precopy)
    uuid = b.uuid

    # Two pre-copy rounds (the second copies the first's top: what the
    # guest wrote meanwhile), so each undo has a stack of two tops to
    # fold back: live through both into the disk while the guest runs,
    # in one offline commit once it is off.
    b.options = TWO_ROUNDS
    for step in STEPS:
        row, before = b.row(MIGRATE, f'killed after {step!r} (2 rounds)')
        proc = b.cli(*b.to_b(), crash_at=f'{MIGRATE}:{step}', expect_rc=None)
        assert proc.returncode == KILLED, proc.stderr
        if STEPS.index(step) >= STEPS.index('pre-copy disks'):
            assert b.tops() == ['disk.top', 'disk.top.2'], b.tops()
        b.recover(row, 'rolled back')
        b.expect_back_on_a(before, row)

    row, before = b.row(MIGRATE, 'killed in round 2, right after its '
                                 'snapshot')
    proc = b.cli(*b.to_b(), crash_at=f'{MIGRATE}:mid round 2',
                 expect_rc=None)
    assert proc.returncode == KILLED, proc.stderr
    assert b.tops() == ['disk.top', 'disk.top.2'], b.tops()
    b.recover(row, 'rolled back')
    b.expect_back_on_a(before, row)

    for where, copy, options in (('mid round 2', 'disk.precopy.2',
                                  TWO_ROUNDS),
                                 ('mid pre-copy', 'disk.precopy', {})):
        b.options = options
        row, before = b.row(MIGRATE, f'ssh cut {where} (copy SIGKILLed '
                                     f'after 4 KiB)')
        b.set_fault('kill-copy', f'4096 {copy}')
        err = b.cli(*b.to_b(), expect_rc=1).stderr
        assert "at step 'pre-copy disks'" in err and 'was undone' in err, \
            err
        assert 'copy killed after 4096 bytes' in \
            b.fault_output('events').splitlines()
        row.outcome = 'failed at pre-copy disks, guest running; rolled ' \
                      'back at once'
        b.expect_back_on_a(before, row)
        b.clear_faults()
    b.options = {}

    row, before = b.row(MIGRATE, "B's filesystem filled mid pre-copy")
    tenant = precopy.b_path('other-tenant.img')
    b.set_fault('fill-dest', precopy.b_path())
    try:
        err = b.cli(*b.to_b(), expect_rc=1).stderr
        assert 'dest filled with' in b.fault_output('events'), \
            b.fault_output('events')
    finally:
        if os.path.exists(tenant):
            os.unlink(tenant)
    assert "at step 'pre-copy disks'" in err and 'was undone' in err, err
    row.outcome = 'failed at pre-copy disks (no space on B), guest ' \
                  'running; rolled back at once'
    b.expect_back_on_a(before, row)

    # B's half killed after each of its steps: the resize's own plan
    # reverts A at once (B's copy and guest dropped over ssh); B's
    # interrupted finish journal is rolled back by recover on B (its
    # nova-compute at start), which leaves B clean.
    for step in FINISH_STEPS:
        row, before = b.row(FINISH, f'killed on B after {step!r}')
        b.remote_crash = f'{FINISH}:{step}'
        err = b.cli(*b.to_b(), expect_rc=1).stderr
        b.remote_crash = ''
        assert "resize failed at step 'finish_migration'" in err and \
            'the command was killed there' in err and 'was undone' in err, \
            err
        b.expect_back_on_a(before, row)          # B's copy and guest gone
        out = b.b_cli('recover')
        assert f"{FINISH} interrupted at '{step}': rolled back" in out, out
        assert b.b_cli('recover').strip() == 'nothing to recover'
        row.outcome = ("B's half killed; A reverted at once, B's copy and "
                       "guest dropped; recover on B: finish rolled back")

    # Then it goes through, though B's fold fails: the finish stands, the
    # guest runs on B on its pre-copied chain, recover on B folds it.
    # Then a revert killed after the fold back is completed by recover.
    b.clear_faults()
    row, before = b.row(AFTER_FINISH, "B's fold of the pre-copied layer "
                                      "fails")
    old = b.flavor
    b.remote_crash = f'{AFTER_FINISH}:fail fold'
    err = b.cli('--verbose', *b.to_b()).stderr
    b.remote_crash = ''
    assert 'Plan precopy' in err
    moved = precopy.wait_boot_on_b(b.boot + 1)
    assert moved.shutdown_mark == str(b.boot)
    assert moved.cpu_count == old.next().vcpus
    guest_b = precopy.b_host.lookup(uuid)
    assert guest_b.is_running()
    layer = precopy.b_path(uuid, 'disk.precopy')
    assert os.path.exists(layer)     # the chain B runs on, kept valid
    out = b.b_cli('recover', uuid)
    assert f'{AFTER_FINISH} interrupted at ' in out and 'completed' in out, \
        out
    assert not os.path.exists(layer)
    assert guest_b.is_running()
    info = json.loads(subprocess.run(
        ['qemu-img', 'info', '-U', '--output=json', '-f', 'qcow2',
         precopy.b_path(uuid, 'disk')], check=True, capture_output=True,
        text=True).stdout)
    assert info['backing-filename'] == os.path.join(precopy.instances,
                                                    '_base', BASE)
    row.outcome = ('finish succeeded, guest running on B on the valid '
                   'chain; recover on B: completed (fold run again)')
    row.source = 'kept in _resize until confirm'
    row.retry = 'n/a'

    row = Row(REVERT, "killed after 'fold snapshot tops back' (pre-copy "
                      "to B)", '')
    TABLE.append(row)
    proc = b.cli('revert', uuid, crash_at=f'{REVERT}:fold snapshot tops '
                                          f'back', expect_rc=None)
    assert proc.returncode == KILLED, proc.stderr
    b.recover(row, 'completed')
    b.flavor = old
    b.expect_back_on_a(before, row)      # A's boot count: its own + 1
    # the bytes of its clean shutdown on A, from before B
    assert b.report().shutdown_mark == str(b.boot - 1)
    row.retry = 'n/a (completed by recover)'


def test_precopy_commit_failing_after_pivot_and_fold_timing_out(
        precopy: CrossScenario):
    """A failed pre-copy's undo whose active commit pivots and then
    reports a failure: the guest, paused for its pivot, was left so
    until a service restart; the fold is tried again in-process, finds
    it pivoted and resumes it, and the rollback is complete at once.
    Then B's fold of the pre-copied layer outlasts its deadline: the
    finish stands, the guest runs on B on its valid chain, recover on B
    folds, and the data the layer held is in the folded disk."""
    b = PrecopyBench(precopy)
    row, before = b.row(MIGRATE, 'pre-copy fails; the undo\'s commit '
                                 'pivots, then reports a failure')
    err = b.cli('--verbose', *b.to_b(), crash_at=f'{MIGRATE}:fail after '
                                                 f'pivot', expect_rc=1).stderr
    assert 'pivoted, then reported failed' in err, err
    assert "at step 'pre-copy disks'" in err and 'was undone' in err, err
    assert not b.s.host.lookup(b.uuid).is_paused()
    b.expect_back_on_a(before, row)
    row.outcome = ('failed at pre-copy disks; the fold back, tried again '
                   'in-process, resumed the pivoted guest; rolled back at '
                   'once')

    # what the layer on B will hold and the fold must keep: 16 MiB at
    # 4 MiB/s (crashcli.SLOW_PULL) outlast the fold's second
    length = 16 * MiB
    crashcli.write_to_vda(b.s.host.lookup(b.uuid), crashcli.PATTERN,
                          crashcli.OFFSET, length)
    row, before = b.row(AFTER_FINISH, "B's fold of the pre-copied layer "
                                      "times out")
    b.remote_crash = f'{AFTER_FINISH}:pull times out'
    b.cli(*b.to_b())
    b.remote_crash = ''
    moved = precopy.wait_boot_on_b(b.boot + 1)
    assert moved.shutdown_mark == str(b.boot)
    guest_b = precopy.b_host.lookup(b.uuid)
    assert guest_b.is_running() and not guest_b.is_paused()
    layer = precopy.b_path(b.uuid, 'disk.precopy')
    assert os.path.exists(layer)     # the chain B runs on, kept valid
    out = b.b_cli('recover', b.uuid)
    assert f'{AFTER_FINISH} interrupted at ' in out and 'completed' in out, \
        out
    assert not os.path.exists(layer)
    assert guest_b.is_running() and not guest_b.is_paused()
    disk = os.path.join(precopy.instances, b.uuid, 'disk')
    assert holds_pattern(disk, on_b=precopy, length=length)
    row.outcome = ('finish succeeded, guest running on B on the valid '
                   'chain; recover on B: completed (fold run again)')
    row.source = 'kept in _resize until confirm; the layer\'s data folded'
    row.retry = 'n/a'
