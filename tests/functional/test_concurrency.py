"""Three guests from one base image resized at once, one killed mid-copy.

The guests share ``_base/<sha1(IMAGE_ID)>``.  ``local`` is resized on
this host; ``moved`` and ``failed`` migrate to the second instances path
over ssh, so both find the backing file missing on the destination and
both copy it.  The ssh stand-in (``faultbin/ssh``, one ``$RD_FAULTS`` per
resize) orders the copies as in issue #8: both have validated before
either copies the base; ``failed`` copies it first, ``moved`` after; the
copy of ``failed``'s disk waits until ``moved``'s resize has finished
(its guest runs on the destination's ``_base``), then is SIGKILLed.  The
rollback of ``failed`` must not take the shared ``_base`` with it: the
others are confirmed and boot again from their resized disks (the boot
counter goes on), ``failed`` runs on its source as before, and ``_base``
has its original bytes on both sides.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import libvirt
import pytest

from tests.functional import faultbench
from tests.functional.conftest import (TEST_ROOT, MiB, Scenario, sha256,
                                       write_config)
from tests.lib import hostenv, parallel, testguest

#: the three guests resizing at once
ROLES = ('local', 'moved', 'failed')
ROOT = os.path.join(TEST_ROOT, parallel.test_name('rdconc', 'trio'))
BASE = hashlib.sha1(testguest.IMAGE_ID.encode()).hexdigest()
NEW_FLAVOR = ['--vcpus', '2', '--root-size', '96M']
TIMEOUT = 180


@dataclasses.dataclass
class Trio:
    guests: dict[str, Scenario]
    faults: str         # per resize: <faults>/<role>; gates in <faults>

    @property
    def any(self) -> Scenario:
        return self.guests['local']

    def base(self, instances: str) -> str:
        return os.path.join(instances, '_base', BASE)


def _remove_all(host, guests) -> None:
    for g in guests:
        testguest.remove(host, g)


@pytest.fixture
def trio(host, sshd):
    names = [parallel.test_name('rdconc', role) for role in ROLES]
    _remove_all(host, [testguest.TestGuest('', d.UUIDString(), d.name(),
                                           '', '')
                       for d in host.conn.listAllDomains()
                       if d.name() in names])
    shutil.rmtree(ROOT, ignore_errors=True)
    for sub in ('instances', 'dest-instances', 'faults'):
        os.makedirs(os.path.join(ROOT, sub))
    conf = write_config(ROOT, sshd)
    guests = {}
    try:
        for role, name in zip(ROLES, names, strict=True):
            ip, mac = parallel.guest_address()
            guest = testguest.create(
                host, os.path.join(ROOT, 'instances'), name=name, mac=mac,
                ip=ip, bridge=hostenv.BRIDGE, memory_mib=192)
            guests[role] = Scenario(ROOT, conf, host, guest)
            host.lookup(guest.uuid).start()
        yield Trio(guests, os.path.join(ROOT, 'faults'))
    finally:
        _remove_all(host, [s.guest for s in guests.values()])
        shutil.rmtree(ROOT, ignore_errors=True)


def _start(s: Scenario, args: list[str], faults: str) -> subprocess.Popen:
    env = dict(os.environ, RD_FAULTS=faults,
               PATH=faultbench.FAULTBIN + os.pathsep + os.environ['PATH'])
    return subprocess.Popen(
        [sys.executable, '-m', 'resizedriver.cmd.cli', '--config-file',
         s.conf_file, *args], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, deadline: float) -> tuple[int, str]:
    """Its exit status and stderr; killed (its session) at ``deadline``."""
    try:
        _out, err = proc.communicate(
            timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _out, err = proc.communicate()
        raise AssertionError(
            f'resize did not end in time:\n{err}') from None
    return proc.returncode, err


def _events(trio: Trio, role: str) -> list[str]:
    path = os.path.join(trio.faults, role, 'events')
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return f.read().splitlines()


def _set_gates(trio: Trio, disk_of: dict[str, str]) -> dict[str, str]:
    """Control files: the order of the copies; the kill of one disk."""
    gate = {g: os.path.join(trio.faults, g) for g in (
        'moved-at-base', 'failed-base-copied', 'moved-finished')}
    plans = {
        'failed': {
            'copy-gates': f'{BASE} - {gate["moved-at-base"]} '
                          f'{gate["failed-base-copied"]}\n'
                          f'{disk_of["failed"]} - {gate["moved-finished"]} -',
            'kill-copy': f'32768 {disk_of["failed"]}'},
        'moved': {
            'copy-gates': f'{BASE} {gate["moved-at-base"]} '
                          f'{gate["failed-base-copied"]} -'},
        'local': {},
    }
    for role, files in plans.items():
        os.makedirs(os.path.join(trio.faults, role))
        for name, text in files.items():
            with open(os.path.join(trio.faults, role, name), 'w') as f:
                f.write(text)
    return gate


def _reboot(s: Scenario, boot: int):
    """Shut down cleanly and start: the disk must still boot, and carry
    the boot counter it had (so this boot is ``boot``)."""
    guest = s.host.lookup(s.guest.uuid)
    assert guest.power_off(60, 2), f'{s.guest.name} did not shut down'
    try:
        guest.start()
    except libvirt.libvirtError as e:
        raise AssertionError(
            f'{s.guest.name} cannot boot again: {e}') from e
    return s.wait_boot(boot)


def test_three_resizes_at_once_one_killed_mid_copy(trio: Trio):
    g = trio.guests
    src, dest = trio.any.instances, trio.any.dest_instances
    for s in g.values():
        first = s.wait_boot(1)
        assert (first.cpu_count, first.disks) == (1, {'vda': 64 * MiB})
    base_sum = sha256(trio.base(src))
    assert not os.path.exists(trio.base(dest))
    disk_of = {role: f'{s.guest.uuid}/disk' for role, s in g.items()}
    gate = _set_gates(trio, disk_of)

    moving = ['--dest-host', '127.0.0.1', '--dest-instances-path', dest]
    procs = {
        'local': _start(g['local'], ['resize', g['local'].guest.name,
                                     *NEW_FLAVOR],
                        os.path.join(trio.faults, 'local')),
        **{role: _start(g[role], ['resize', g[role].guest.name,
                                  *NEW_FLAVOR, *moving],
                        os.path.join(trio.faults, role))
           for role in ('moved', 'failed')}}
    deadline = time.monotonic() + TIMEOUT
    try:
        rc, err = _finish(procs['moved'], deadline)
        open(gate['moved-finished'], 'w').close()   # let the kill happen
        assert rc == 0, f'moved: resize exited {rc}:\n{err}'
        rc, err = _finish(procs['failed'], deadline)
        assert rc == 1, f'failed: resize exited {rc}:\n{err}'
        assert "at step 'copy disks'" in err and 'was undone' in err, err
        rc, err = _finish(procs['local'], deadline)
        assert rc == 0, f'local: resize exited {rc}:\n{err}'
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    # The order the gates imposed really happened.
    assert _events(trio, 'failed') == [
        f'copy of {BASE} let through',
        f'copy of {disk_of["failed"]} let through',
        'copy killed after 32768 bytes'], _events(trio, 'failed')
    assert _events(trio, 'moved') == [f'copy of {BASE} let through'], \
        _events(trio, 'moved')

    for role, where in (('local', src), ('moved', dest)):
        s = g[role]
        resized = s.wait_boot(2)
        assert (resized.cpu_count, resized.disks) == (2, {'vda': 96 * MiB})
        assert all(p.startswith(f'{where}/{s.guest.uuid}/')
                   for p in s.disk_paths())
        assert hostenv.ping(s.guest.ip.split('/')[0])
    info = subprocess.run(
        ['qemu-img', 'info', '-U', f'{dest}/{disk_of["moved"]}'],
        check=True, capture_output=True, text=True).stdout
    assert f'backing file: {trio.base(dest)}' in info, info

    # The failed one runs again from its source, as it was.
    f = g['failed']
    back = f.wait_boot(2)
    assert (back.cpu_count, back.disks) == (1, {'vda': 64 * MiB})
    assert all(p.startswith(f'{f.guest.dir}/') for p in f.disk_paths())
    assert not os.path.exists(f.guest.dir + '_resize')
    assert not os.path.exists(os.path.join(dest, f.guest.uuid))

    for role in ('local', 'moved'):
        g[role].cli('confirm', g[role].guest.name)
    assert not os.path.exists(g['moved'].guest.dir)
    for role in ('local', 'moved'):
        again = _reboot(g[role], boot=3)
        assert (again.cpu_count, again.disks) == (2, {'vda': 96 * MiB})

    for side in (src, dest):
        assert os.path.exists(trio.base(side)), f'{trio.base(side)} is gone'
        assert sha256(trio.base(side)) == base_sum, f'{side}/_base changed'
    assert trio.any.cli('status').stdout.strip() == 'no resize pending'
    assert faultbench.leftovers([src, dest]) == []
