"""The live plan killed after each of its steps, on a real running guest.

Each cell SIGKILLs the ``resizedriver`` command right after one step of
the live plan (before the journal records it done), runs ``resizedriver
recover``, and checks the guest: still running, with the vCPUs and disk
it prints and the memory and definition the hypervisor reports, and a
boot counter that moved only where the revert had to reboot (vCPUs added
that this QEMU cannot unplug).  Last, the guest uses the memory it is
given (the test guest's ``rdhold-memory``), so a virtio-mem unplug never
completes: a revert, a revert killed, and a finish rolled back each
reboot it once into the old flavor instead of failing for good.  Rows
join the fault table printed at the end of the run.
"""

from __future__ import annotations

import dataclasses
import os
import time

import pytest

from resizedriver import headroom
from tests.functional import faultbench
from tests.functional.conftest import MiB, Scenario
from tests.functional.faultbench import KILLED, Bench, Flavor, Row
from tests.lib import guestlog, testguest

pytestmark = pytest.mark.long

MIGRATE = 'migrate_disk_and_power_off'
FINISH = 'finish_migration'
REVERT = 'finish_revert_migration'
CONFIRM = 'confirm_migration'

#: killed in the resize: the whole resize is rolled back
ROLLED_BACK = [(MIGRATE, 'write resize record'),
               (FINISH, 'check live guest'),
               (FINISH, 'define new flavor'),
               (FINISH, 'grow memory'),
               (FINISH, 'grow disks'),
               (FINISH, 'add vCPUs')]
#: killed in a revert that reboots (vCPUs were added) or stays live
#: (memory only), or in a confirm: recover completes it
REVERT_REBOOT = ['shut down resized guest', 'define source domain',
                 'start guest', 'remove resize record']
REVERT_LIVE = ['shrink memory', 'define source domain',
               'remove resize record']


class LiveBench:
    def __init__(self, bench: Bench) -> None:
        self.b = bench
        self.s = bench.s
        self.now = Flavor(1, 256, 64)
        self.boot = 1

    def row(self, operation: str, fault: str) -> Row:
        row = Row(operation, fault + ' (live)', '')
        faultbench.TABLE.append(row)
        return row

    def crash(self, crash_at: str, *args: str) -> None:
        proc = self.b.cli(*args, crash_at=crash_at, expect_rc=None)
        assert proc.returncode == KILLED, proc.stderr

    def expect(self, size: Flavor, pending: bool = False) -> None:
        """Running with ``size``: the vCPUs and disk the guest prints, the
        memory the hypervisor plugged, the definition of its next boot."""
        report = guestlog.wait_for(
            self.s.guest.console_log(self.s.host), f'{size}', lambda r: (
                r.boot == self.boot and r.cpu_count == size.vcpus and
                r.disks == {'vda': size.root_mib * MiB}))
        assert report.boot == self.boot
        guest = self.s.host.lookup(self.s.guest.uuid)
        assert guest.is_running()
        live = headroom.of_domain(guest.live_xml())
        assert (live.vcpus, live.memory_mib) == \
            (size.vcpus, size.memory_mib), live
        nxt = headroom.of_domain(guest.xml())
        assert (nxt.vcpus, nxt.memory_mib) == \
            (size.vcpus, size.memory_mib), nxt
        if not pending:
            self.b.expect_settled()
        self.now = size

    def boot_with(self, parameter: str) -> None:
        """Boot the guest again with one more kernel ``parameter``."""
        testguest.boot_with(self.s.host, self.s.guest.uuid, parameter)
        self.boot += 1
        self.expect(self.now)

    def holding(self) -> int:
        """How often the guest has taken the memory it was given."""
        with open(self.s.guest.console_log(self.s.host),
                  errors='replace') as f:
            return f.read().count('RDGUEST holding=')

    def wait_held(self, before: int) -> None:
        """Until the guest took the memory plugged since ``before``
        (its ``holding()`` then)."""
        deadline = time.monotonic() + 60
        while self.holding() == before:
            assert time.monotonic() < deadline, 'the guest holds nothing'
            time.sleep(0.5)

    def resize_held(self, new: Flavor) -> None:
        """A live resize whose plugged memory the guest then uses."""
        before = self.holding()
        assert '(live plan)' in self.b.cli('resize', self.s.guest.uuid,
                                           *new.args()).stdout
        self.wait_held(before)


# The rows run as three tests, each a guest of its own, side by side
# under pytest-xdist: every row still proves all it did.


def test_live_resize_killed_after_each_step(live_scenario: Scenario):
    """Killed in the resize: rolled back, then the same resize goes
    through live."""
    lb = LiveBench(Bench(live_scenario))
    uuid = lb.s.guest.uuid
    for operation, step in ROLLED_BACK:
        row = lb.row(operation, f'killed after {step!r}')
        old = lb.now
        new = Flavor(old.vcpus + (step == 'add vCPUs'), old.memory_mib + 64,
                   old.root_mib + 8)
        lb.crash(f'{operation}:{step}', 'resize', uuid, *new.args())
        lb.b.recover(row, 'rolled back')
        disk_grown = step in ('grow disks', 'add vCPUs')
        if step == 'add vCPUs':
            lb.boot += 1            # the revert rebooted away the vCPU
        lb.expect(dataclasses.replace(
            old, root_mib=new.root_mib if disk_grown else old.root_mib))
        row.source = ('running throughout' if step != 'add vCPUs' else
                      'rebooted once into the old flavor') + \
            ('; disk kept grown' if disk_grown else '')
        # and the same resize then goes through, live
        out = lb.b.cli('resize', uuid, *new.args()).stdout
        assert '(live plan)' in out, out
        lb.expect(new, pending=True)
        lb.b.cli('confirm', uuid)
        row.retry = 'ok (live)'


def test_live_revert_and_confirm_killed_after_each_step(
        live_scenario: Scenario):
    """Killed in a revert that reboots or stays live, or in a confirm:
    recover completes it."""
    lb = LiveBench(Bench(live_scenario))
    uuid = lb.s.guest.uuid
    for steps, grow_vcpus in ((REVERT_REBOOT, True), (REVERT_LIVE, False)):
        for step in steps:
            row = lb.row(REVERT, f'killed after {step!r}')
            old = lb.now
            new = Flavor(old.vcpus + grow_vcpus, old.memory_mib + 64,
                       old.root_mib)
            assert '(live plan)' in lb.b.cli('resize', uuid,
                                             *new.args()).stdout
            lb.expect(new, pending=True)
            lb.crash(f'{REVERT}:{step}', 'revert', uuid)
            lb.b.recover(row, 'completed')
            lb.boot += grow_vcpus
            lb.expect(old)
            row.source = 'rebooted once' if grow_vcpus else \
                'running throughout'
            row.retry = 'n/a (completed by recover)'

    row = lb.row(CONFIRM, "killed after 'delete _resize'")
    new = Flavor(lb.now.vcpus, lb.now.memory_mib + 64, lb.now.root_mib + 8)
    lb.b.cli('resize', uuid, *new.args())
    lb.crash(f'{CONFIRM}:delete _resize', 'confirm', uuid)
    lb.b.recover(row, 'completed')
    lb.expect(new)
    assert not os.path.exists(lb.s.guest.dir + '_resize')
    row.source = 'running throughout'
    row.retry = 'n/a (completed by recover)'


def test_live_revert_of_a_guest_that_keeps_its_memory(
        live_scenario: Scenario):
    """The guest uses the memory it is given: the unplug of a revert
    (and of a finish's undo) never completes within live_timeout."""
    lb = LiveBench(Bench(live_scenario))
    uuid = lb.s.guest.uuid
    with open(lb.s.conf_file, 'a') as f:
        f.write('live_timeout = 5\n')
    lb.boot_with('rdhold-memory')
    old = lb.now
    new = Flavor(old.vcpus, old.memory_mib + 64, old.root_mib)

    row = lb.row(REVERT, 'memory unplug never completes')
    lb.resize_held(new)
    lb.b.cli('revert', uuid)
    lb.boot += 1
    lb.expect(old)
    row.outcome = 'unplug timed out; revert rebooted once instead'
    row.source = 'rebooted once into the old flavor'
    row.retry = 'n/a (reverted)'

    row = lb.row(REVERT, "killed after 'shrink memory' never completed")
    lb.resize_held(new)
    lb.crash(f'{REVERT}:shrink memory', 'revert', uuid)
    lb.b.recover(row, 'completed')
    lb.boot += 1
    lb.expect(old)
    row.source = 'rebooted once into the old flavor'
    row.retry = 'n/a (completed by recover)'

    row = lb.row(FINISH, "killed after 'grow disks', memory held")
    grown = dataclasses.replace(new, root_mib=old.root_mib + 8)
    before = lb.holding()
    lb.crash(f'{FINISH}:grow disks', 'resize', uuid, *grown.args())
    lb.wait_held(before)
    lb.b.recover(row, 'rolled back')
    lb.boot += 1
    lb.expect(dataclasses.replace(old, root_mib=grown.root_mib))
    row.source = 'rebooted once into the old flavor; disk kept grown'
    row.retry = 'n/a (rolled back)'
