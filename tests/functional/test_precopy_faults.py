"""The pre-copy plan broken on purpose, on a real move from A to host B.

Each step of the pre-copy migrate is SIGKILLed in turn (right after it
ran, before the journal records it done) and ``resizedriver recover``
rolls the resize back; the network to B is cut mid pre-copy, and B's
filesystem fills mid pre-copy (both rolled back at once).  After each,
the guest runs on A again from ``<uuid>/disk`` (the snapshot's top
folded back: live while it ran, offline once it was off), with the bytes
it had (``faultbench``'s fingerprint), nothing left on A or B.  Then one
pre-copy goes through, and its revert is killed after the top was folded
back; recover completes it.  Rows join the fault table.
"""

from __future__ import annotations

import os

from resizedriver import domain_xml
from tests.functional.crosshost import CrossScenario
from tests.functional.faultbench import KILLED, Bench, Row

MIGRATE = 'migrate_disk_and_power_off'
REVERT = 'finish_revert_migration'

STEPS = ['create destination dir', 'snapshot disks for pre-copy',
         'pre-copy disks', 'write resize record', 'power off',
         'move instance dir to _resize', 'copy what changed']


class PrecopyBench(Bench):
    """``faultbench.Bench`` on host A (side 'A' throughout), moving to B."""

    def __init__(self, scenario: CrossScenario) -> None:
        super().__init__(scenario)
        self.cross = scenario

    def to_b(self) -> list[str]:
        return ['resize', self.uuid, *self.flavor.next().args(),
                '--dest-host', self.cross.b.addr]

    def row(self, operation: str, fault: str) -> tuple[Row, dict]:
        row, before = self.begin(operation, fault + ' (pre-copy to B)')
        return row, before

    def expect_back_on_a(self, before: dict, row: Row) -> None:
        """As ``expect_on_source``, and: no top left, the definition and
        the running chain on ``<uuid>/disk`` again, nothing on B."""
        self.expect_on_source(before, row)
        inst = os.path.join(self.here, self.uuid)
        assert not os.path.exists(os.path.join(inst, 'disk.top'))
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

    for step in STEPS:
        row, before = b.row(MIGRATE, f'killed after {step!r}')
        proc = b.cli(*b.to_b(), crash_at=f'{MIGRATE}:{step}', expect_rc=None)
        assert proc.returncode == KILLED, proc.stderr
        b.recover(row, 'rolled back')
        b.expect_back_on_a(before, row)

    row, before = b.row(MIGRATE, 'ssh cut mid pre-copy (copy SIGKILLed '
                                 'after 4 KiB)')
    b.set_fault('kill-copy', '4096 disk.precopy')
    err = b.cli(*b.to_b(), expect_rc=1).stderr
    assert "at step 'pre-copy disks'" in err and 'was undone' in err, err
    assert 'copy killed after 4096 bytes' in \
        b.fault_output('events').splitlines()
    row.outcome = 'failed at pre-copy disks, guest running; rolled back ' \
                  'at once'
    b.expect_back_on_a(before, row)

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

    # Then it goes through, and a revert killed after the fold back is
    # completed by recover.
    b.clear_faults()
    row, before = b.row(REVERT, "killed after 'fold snapshot tops back'")
    old = b.flavor
    assert 'Plan precopy' in b.cli('--verbose', *b.to_b()).stderr
    moved = precopy.wait_boot_on_b(b.boot + 1)
    assert moved.shutdown_mark == str(b.boot)
    assert moved.cpu_count == old.next().vcpus
    proc = b.cli('revert', uuid, crash_at=f'{REVERT}:fold snapshot tops '
                                          f'back', expect_rc=None)
    assert proc.returncode == KILLED, proc.stderr
    b.recover(row, 'completed')
    b.flavor = old
    b.expect_back_on_a(before, row)      # A's boot count: its own + 1
    # the bytes of its clean shutdown on A, from before B
    assert b.report().shutdown_mark == str(b.boot - 1)
    row.retry = 'n/a (completed by recover)'
