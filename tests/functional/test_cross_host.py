"""Cold resize and migration from this host (A) to host B (tools/host-b).

B is another hypervisor: its own libvirtd, machine-id, instances
filesystem (at the same path as A's, as Nova deployments have it) and
network namespace, reached over ssh on a link-local veth.  So here the
paths for a truly separate host run: the disks and ``_base`` cross the
wire, the guest is defined on B's libvirtd, confirm undefines A's domain,
revert drops B's.  Every assertion on resources is on what the guest
prints on its console on B.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from resizedriver.host import Host
from tests.functional.conftest import MiB, with_options
from tests.functional.crosshost import BASE, CrossScenario, holds_pattern
from tests.lib import guestlog, hostenv, testguest

def _record(s: CrossScenario) -> dict:
    with open(os.path.join(s.instances, s.guest.uuid + '_resize',
                           'resize.json')) as f:
        return json.load(f)


def _assert_up_on_b(s: CrossScenario, before: guestlog.GuestReport,
                    boot: int) -> None:
    after = s.wait_boot_on_b(boot)
    assert after.cpu_count == 2
    assert after.mem_kb - before.mem_kb > 200 * 1024
    assert after.disks == {'vda': 128 * MiB}
    assert after.macs == {'eth0': s.guest.mac}
    assert s.b.ping(s.guest.ip.split('/')[0]), 'guest does not answer on B'
    assert s.b_host.lookup(s.guest.uuid).is_running()
    _assert_on_bs_base(s)


def _assert_on_bs_base(s: CrossScenario) -> None:
    """Its disk is B's own, backed by B's _base, on B's filesystem."""
    disk = s.b_path(s.guest.uuid, 'disk')
    info = json.loads(subprocess.run(
        ['qemu-img', 'info', '-U', '--output=json', '-f', 'qcow2', disk],
        check=True, capture_output=True, text=True).stdout)
    assert info['backing-filename'] == os.path.join(s.instances, '_base',
                                                    BASE)


def _assert_gone(host: Host, s: CrossScenario, exists) -> None:
    assert host.lookup(s.guest.uuid) is None
    assert not exists(s.guest.uuid)
    assert not exists(s.guest.uuid + '_resize')


def _resize_to_b(s: CrossScenario, *extra: str, **cli_kw) -> str:
    return s.cli('--verbose', 'resize', s.guest.name, '--dest-host',
                 s.b.addr, *extra, **cli_kw).stderr


def test_cold_resize_to_host_b_over_ssh_then_confirm(cross: CrossScenario):
    s = cross
    first = s.wait_boot(1)
    assert first.cpu_count == 1 and first.disks == {'vda': 64 * MiB}
    # B's image cache starts without our image (no instance of B uses it:
    # the fixtures remove what they made).
    b_base = s.b_path('_base', BASE)
    if os.path.exists(b_base):
        os.unlink(b_base)

    out = _resize_to_b(s, '--vcpus', '2', '--memory', '512',
                       '--root-size', '128M')
    assert 'Plan copy' in out and 'the destination is other-host' in out
    assert 'copy backing files' in out
    record = _record(s)
    assert (record['topology'], record['plan']) == ('other-host', 'copy')
    _assert_up_on_b(s, first, boot=2)
    # A's source is untouched until confirm: defined, off, in _resize.
    assert not s.host.lookup(s.guest.uuid).is_running()
    assert os.path.isdir(os.path.join(s.instances, s.guest.uuid + '_resize'))

    s.cli('confirm', s.guest.name)
    _assert_gone(s.host, s,
                 lambda d: os.path.exists(os.path.join(s.instances, d)))
    assert s.b_host.lookup(s.guest.uuid).is_running()
    assert s.cli('status').stdout.strip() == 'no resize pending'

    # A second instance from the same image (shut off): B's _base gains
    # nothing, the copy there is reused as it is.
    held = os.stat(b_base)
    second = testguest.create(s.host, s.instances, name=s.guest.name + '-2',
                              mac='52:54:00:78:01:01', ip='169.254.77.251/24',
                              bridge=hostenv.BRIDGE)
    try:
        out = s.cli('--verbose', 'resize', second.name, '--dest-host',
                    s.b.addr, '--no-start').stderr
        assert 'copy backing files' not in out
        now = os.stat(b_base)
        assert (now.st_ino, now.st_mtime_ns) == (held.st_ino,
                                                 held.st_mtime_ns)
        assert not s.b_host.lookup(second.uuid).is_running()
        s.cli('confirm', second.name)
        assert s.host.lookup(second.uuid) is None
    finally:
        s.remove_everywhere(second)


@pytest.mark.parametrize('cross', ['rsync'], indirect=True)
def test_cold_resize_to_host_b_over_rsync_then_revert(cross: CrossScenario):
    s = cross
    first = s.wait_boot(1)
    source_disk = os.path.join(s.instances, s.guest.uuid, 'disk')

    wire = s.b.wire_bytes()
    _resize_to_b(s, '--vcpus', '2', '--memory', '512', '--root-size',
                 '128M')
    assert s.b.wire_bytes() > wire
    _assert_up_on_b(s, first, boot=2)

    s.cli('revert', s.guest.name)
    back = s.wait_boot(2)     # the untouched source had booted once
    assert (back.cpu_count, back.mem_kb, back.disks) == \
        (first.cpu_count, first.mem_kb, first.disks)
    assert back.macs == {'eth0': s.guest.mac}
    assert hostenv.ping(s.guest.ip.split('/')[0])
    assert s.host.lookup(s.guest.uuid).is_running()
    assert os.path.exists(source_disk)
    _assert_gone(s.b_host, s, lambda d: os.path.exists(s.b_path(d)))
    assert s.cli('status').stdout.strip() == 'no resize pending'


def _assert_nova_layout_on_b(s: CrossScenario) -> None:
    """The pre-copied layer folded away: disk -> _base, nothing else."""
    _assert_on_bs_base(s)
    assert sorted(os.listdir(s.b_path(s.guest.uuid))) == [
        'console.log', 'disk', 'kernel', 'ramdisk']


def test_precopy_to_host_b_revert_then_again_and_confirm(
        precopy: CrossScenario):
    """The disks cross while the guest runs; its last writes (the clean
    shutdown's mark on its disk, made after the pre-copy began) reach B,
    and come back to A on revert.  The first move makes two rounds, the
    guest's disk written between them: that write reaches B only by the
    second round's copy, and comes back to A from the tops on revert."""
    s = precopy
    first = s.wait_boot(1)
    assert first.shutdown_mark == 'none'
    disk_a = os.path.join(s.instances, s.guest.uuid, 'disk')
    assert not holds_pattern(disk_a)

    wire = s.b.wire_bytes()
    two_rounds = with_options(s.conf_file, 'two-rounds', {
        'pre_copy_rounds': 2, 'pre_copy_final_mb': 0})
    out = _resize_to_b(s, '--vcpus', '2', '--memory', '512',
                       '--root-size', '128M', conf_file=two_rounds,
                       crash_at='migrate_disk_and_power_off:write in '
                                'round 1')
    assert 'Plan precopy' in out, out
    assert 'pre-copy disks' in out and 'copy what changed' in out
    assert 'Pre-copy done after 2 round(s): ' in out, out
    assert s.b.wire_bytes() > wire
    record = _record(s)
    assert (record['topology'], record['plan']) == ('other-host', 'precopy')
    on_b = s.wait_boot_on_b(2)
    assert on_b.shutdown_mark == '1'     # written after the snapshot
    _assert_up_on_b(s, first, boot=2)
    _assert_nova_layout_on_b(s)
    assert holds_pattern(os.path.join(s.instances, s.guest.uuid, 'disk'),
                          on_b=s)
    # A keeps its chain (both rounds' tops over the frozen disk) until
    # confirm.
    kept = os.path.join(s.instances, s.guest.uuid + '_resize')
    assert {'disk.top', 'disk.top.2'} <= set(os.listdir(kept))

    s.cli('revert', s.guest.name)
    back = s.wait_boot(2)
    assert (back.cpu_count, back.mem_kb, back.disks) == \
        (first.cpu_count, first.mem_kb, first.disks)
    assert back.shutdown_mark == '1'     # the bytes of its clean shutdown
    assert holds_pattern(disk_a)
    assert not [f for f in os.listdir(os.path.dirname(disk_a))
                if f.startswith('disk.top')]
    _assert_gone(s.b_host, s, lambda d: os.path.exists(s.b_path(d)))
    assert hostenv.ping(s.guest.ip.split('/')[0])

    out = _resize_to_b(s, '--vcpus', '2', '--memory', '512',
                       '--root-size', '128M')
    assert 'Plan precopy' in out
    again = s.wait_boot_on_b(3)
    assert again.shutdown_mark == '2'
    _assert_up_on_b(s, first, boot=3)
    _assert_nova_layout_on_b(s)
    s.cli('confirm', s.guest.name)
    _assert_gone(s.host, s,
                 lambda d: os.path.exists(os.path.join(s.instances, d)))
    assert s.b_host.lookup(s.guest.uuid).is_running()
