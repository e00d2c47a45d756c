"""Live resize of a real running guest: more vCPUs, memory and disk with
no reboot, then confirm or revert; and the resizes that must go cold.

The guest's boot counter (kept on its own disk) proves it never stopped;
what it prints proves it got the CPUs, memory and disk.  Each test boots
its guest once.
"""

from __future__ import annotations

import json
import os

from lxml import etree

from resizedriver import headroom
from tests.functional.conftest import LIVE_ROOM, MiB, Scenario
from tests.lib import guestlog, hostenv

KiB = 1024


def _report(s: Scenario, what: str, done) -> guestlog.GuestReport:
    return guestlog.wait_for(s.guest.console_log(s.host), what, done)


def _plan(s: Scenario) -> str:
    with open(os.path.join(s.instances, s.guest.uuid + '_resize',
                           'resize.json')) as f:
        return json.load(f)['plan']


def _definition(s: Scenario) -> headroom.DomainHeadroom:
    """What the persistent definition (the next boot) has."""
    return headroom.of_domain(s.host.lookup(s.guest.uuid).xml())


def _pings(s: Scenario) -> bool:
    return hostenv.ping(s.guest.ip.split('/')[0])


def test_live_resize_confirm_and_revert(live_scenario: Scenario):
    s = live_scenario
    first = s.wait_boot(1)
    assert (first.cpu_count, first.disks) == (1, {'vda': 64 * MiB})

    # 1 -> 2 vCPUs, 256 -> 512 MiB, 64 -> 128 MiB root: all while it runs
    out = s.cli('resize', s.guest.name, '--vcpus', '2', '--memory', '512',
                '--root-size', '128M').stdout
    assert '(live plan)' in out, out
    assert _plan(s) == 'live'
    grown = _report(s, '2 CPUs, +256 MiB, a 128 MiB disk', lambda r: (
        r.cpu_count == 2 and r.mem_kb - first.mem_kb == 256 * KiB and
        r.disks == {'vda': 128 * MiB}))
    assert grown.boot == 1                     # it never stopped
    assert _pings(s)
    # the next boot is the new flavor's, with the headroom kept
    nxt = _definition(s)
    assert (nxt.vcpus, nxt.max_vcpus) == (2, LIVE_ROOM.max_vcpus)
    assert (nxt.memory_mib, nxt.max_memory_mib) == \
        (512, LIVE_ROOM.max_memory_mib)
    assert 'live plan' in s.cli('status').stdout

    s.cli('confirm', s.guest.name)
    assert not os.path.exists(s.guest.dir + '_resize')
    assert s.cli('status').stdout.strip() == 'no resize pending'

    # memory only, then revert: live both ways (virtio-mem unplugs)
    assert '(live plan)' in s.cli('resize', s.guest.name, '--memory',
                                  '768').stdout
    _report(s, '+256 MiB more', lambda r: r.mem_kb - grown.mem_kb ==
            256 * KiB)
    s.cli('revert', s.guest.name)
    back = _report(s, 'the memory of before', lambda r: r.mem_kb ==
                   grown.mem_kb)
    assert (back.boot, back.cpu_count) == (1, 2)
    assert _definition(s).memory_mib == 512
    assert not os.path.exists(s.guest.dir + '_resize')

    # one more vCPU, then revert: vCPUs cannot be unplugged on this QEMU,
    # so the revert (decided up front) reboots once into the old flavor
    assert '(live plan)' in s.cli('resize', s.guest.name, '--vcpus',
                                  '3').stdout
    _report(s, '3 CPUs', lambda r: r.cpu_count == 3)
    s.cli('revert', s.guest.name)
    rebooted = s.wait_boot(2)
    assert rebooted.cpu_count == 2
    assert rebooted.mem_kb > 300 * KiB             # boots with 512 MiB
    assert rebooted.disks == {'vda': 128 * MiB}    # disks never shrink
    assert _pings(s)
    assert not os.path.exists(s.guest.dir + '_resize')

    # beyond the headroom: cold (the overlay plan), and it still works
    out = s.cli('resize', s.guest.name, '--memory', '1536').stdout
    assert '(overlay plan)' in out, out
    cold = s.wait_boot(3)
    assert cold.mem_kb > 1400 * KiB
    s.cli('confirm', s.guest.name)
    # --live=always refuses before touching anything
    err = s.cli('resize', s.guest.name, '--vcpus', '3', '--memory', '2048',
                '--live=always', expect_rc=1).stderr
    assert 'live resize was asked for but is not possible' in err, err
    # 1536 MiB was beyond the memory headroom: none is left
    assert 'no virtio-mem device' in err, err
    assert not os.path.exists(s.guest.dir + '_resize')
    assert guestlog.read(s.guest.console_log(s.host)).boot == 3


def test_a_guest_without_headroom_resizes_cold(scenario: Scenario):
    s = scenario
    s.wait_boot(1)
    xml = etree.fromstring(s.host.lookup(s.guest.uuid).xml().encode())
    assert xml.find('./devices/memory') is None     # spawned without room

    err = s.cli('resize', s.guest.name, '--vcpus', '2', '--live=always',
                expect_rc=1).stderr
    assert "2 vCPUs is beyond the domain's headroom of 1" in err, err
    assert not os.path.exists(s.guest.dir + '_resize')

    out = s.cli('resize', s.guest.name, '--vcpus', '2', '--memory',
                '512').stdout
    assert '(overlay plan)' in out, out
    assert s.wait_boot(2).cpu_count == 2
    s.cli('confirm', s.guest.name)
    # a disk that only grows needs no headroom: live
    assert '(live plan)' in s.cli('resize', s.guest.name, '--root-size',
                                  '96M').stdout
    _report(s, 'a 96 MiB disk', lambda r: r.disks == {'vda': 96 * MiB})
    s.cli('confirm', s.guest.name)
    assert guestlog.read(s.guest.console_log(s.host)).boot == 2
