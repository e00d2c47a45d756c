"""Cold resize and migration of a real guest on the real libvirtd.

Every assertion about resources is on what the guest itself prints on its
serial console: online CPUs, MemTotal, disk sizes, its MAC, and a boot
counter it keeps on its root disk (so a lost or stale disk shows up as a
wrong count).  The host pings the guest over the bridge after every step.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.functional.conftest import MiB, Scenario, sha256
from tests.lib import hostenv


def _guest_ip(s: Scenario) -> str:
    return s.guest.ip.split('/')[0]


def _boot_first(s: Scenario):
    first = s.wait_boot(1)
    assert first.cpu_count == 1
    assert first.disks == {'vda': 64 * MiB}
    assert first.macs == {'eth0': s.guest.mac}
    assert first.ip == s.guest.ip
    assert hostenv.ping(_guest_ip(s)), 'guest does not answer ping'
    return first


def _assert_resized_up(s: Scenario, before, boot: int):
    after = s.wait_boot(boot)
    assert after.cpu_count == 2
    # 256 -> 512 MiB of RAM: MemTotal grows by about 256 MiB.
    assert after.mem_kb - before.mem_kb > 200 * 1024
    assert after.disks == {'vda': 128 * MiB}
    assert after.macs == {'eth0': s.guest.mac}
    assert hostenv.ping(_guest_ip(s)), 'resized guest does not answer ping'
    return after


def _assert_settled(s: Scenario, instances: str):
    """No pending resize, one domain, running from ``instances``."""
    assert not os.path.exists(os.path.join(s.instances,
                                           s.guest.uuid + '_resize'))
    assert s.domains_named() == [s.guest.uuid]
    assert s.host.lookup(s.guest.uuid).is_running()
    assert all(p.startswith(instances + '/') for p in s.disk_paths())
    assert s.cli('status').stdout.strip() == 'no resize pending'


def test_same_host_resize_up_then_confirm(scenario: Scenario):
    s = scenario
    first = _boot_first(s)

    refused = s.cli('resize', s.guest.name, '--root-size', '32M',
                    expect_rc=1)
    assert 'cannot shrink' in refused.stderr
    assert 'Traceback' not in refused.stderr
    assert s.host.lookup(s.guest.uuid).is_running()
    assert not os.path.exists(os.path.join(s.instances,
                                           s.guest.uuid + '_resize'))

    out = s.cli('--verbose', 'resize', s.guest.name, '--vcpus', '2',
                '--memory', '512', '--root-size', '128M')
    assert 'resized' in out.stdout and '(overlay plan)' in out.stdout
    # Same host, qcow2: the overlay plan; nothing copied while down.
    assert 'Plan overlay' in out.stderr
    assert 'copying disk' not in out.stderr
    _assert_resized_up(s, first, boot=2)
    assert os.path.isdir(os.path.join(s.instances, s.guest.uuid + '_resize'))
    assert s.guest.uuid in s.cli('status').stdout

    # confirm folds the chain back live, while the guest runs
    out = s.cli('--verbose', 'confirm', s.guest.name)
    assert 'backed by' in out.stderr and 'again' in out.stderr
    _assert_settled(s, s.instances)
    assert hostenv.ping(_guest_ip(s))
    # Nova's layout again: <uuid>/disk -> _base/<sha>, nothing else
    info = json.loads(subprocess.run(
        ['qemu-img', 'info', '-U', '--output=json', '-f', 'qcow2',
         os.path.join(s.instances, s.guest.uuid, 'disk')],
        check=True, capture_output=True, text=True).stdout)
    assert os.path.dirname(info['backing-filename']) == \
        os.path.join(s.instances, '_base')
    assert sorted(os.listdir(os.path.join(s.instances, s.guest.uuid))) == \
        ['console.log', 'disk', 'kernel', 'ramdisk']


def test_same_host_resize_up_then_revert(scenario: Scenario):
    s = scenario
    first = _boot_first(s)

    s.cli('resize', s.guest.name, '--vcpus', '2', '--memory', '512',
          '--root-size', '128M')
    kept = os.path.join(s.instances, s.guest.uuid + '_resize', 'disk')
    kept_sum = sha256(kept)
    _assert_resized_up(s, first, boot=2)

    s.cli('revert', s.guest.name, '--no-start')
    disk = os.path.join(s.instances, s.guest.uuid, 'disk')
    assert sha256(disk) == kept_sum, 'revert did not restore the exact bytes'
    s.host.lookup(s.guest.uuid).start()
    # The resized guest's boot (2) wrote only to the discarded copy: the
    # reverted disk still says 1, so this boot is 2 again.
    back = s.wait_boot(2)
    assert back.cpu_count == 1
    assert back.mem_kb == first.mem_kb
    assert back.disks == {'vda': 64 * MiB}
    assert back.macs == {'eth0': s.guest.mac}
    _assert_settled(s, s.instances)
    assert hostenv.ping(_guest_ip(s))


@pytest.mark.parametrize('scenario', ['ssh'], indirect=True)
def test_migrate_over_ssh_then_confirm(scenario: Scenario):
    s = scenario
    first = _boot_first(s)

    out = s.cli('resize', s.guest.name, '--dest-host', '127.0.0.1',
                '--dest-instances-path', s.dest_instances)
    assert 'copying' in out.stderr
    moved = s.wait_boot(2)
    assert (moved.cpu_count, moved.mem_kb, moved.disks) == \
        (first.cpu_count, first.mem_kb, first.disks)
    assert moved.macs == {'eth0': s.guest.mac}
    assert hostenv.ping(_guest_ip(s))
    # The overlay now stands on the destination's own copy of _base.
    disk = os.path.join(s.dest_instances, s.guest.uuid, 'disk')
    info = subprocess.run(['qemu-img', 'info', '-U', disk], check=True,
                          capture_output=True, text=True).stdout
    assert f'backing file: {s.dest_instances}/_base/' in info

    s.cli('confirm', s.guest.name)
    _assert_settled(s, s.dest_instances)
    assert not os.path.exists(os.path.join(s.instances, s.guest.uuid))
    assert hostenv.ping(_guest_ip(s))


@pytest.mark.parametrize('scenario', ['rsync'], indirect=True)
def test_resize_to_other_host_over_rsync_then_revert(scenario: Scenario):
    s = scenario
    first = _boot_first(s)

    s.cli('resize', s.guest.name, '--vcpus', '2', '--memory', '512',
          '--root-size', '128M', '--dest-host', '127.0.0.1',
          '--dest-instances-path', s.dest_instances)
    _assert_resized_up(s, first, boot=2)

    s.cli('revert', s.guest.name)
    back = s.wait_boot(2)
    assert (back.cpu_count, back.mem_kb, back.disks) == \
        (first.cpu_count, first.mem_kb, first.disks)
    assert not os.path.exists(os.path.join(s.dest_instances, s.guest.uuid))
    _assert_settled(s, s.instances)
    assert hostenv.ping(_guest_ip(s))
