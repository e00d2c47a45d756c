"""An overlay resize on the real libvirtd: nothing is copied while the
guest is down, and the chain is folded back live with a block pull.

The guest (tests/lib/testguest.py) keeps a boot counter in sector 0 of
its root disk; before its first boot the test also writes a known pattern
into the root overlay, so the fold has data to pull and its result can be
checked byte for byte.  What a step costs is printed (``pytest -s``).
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
from typing import Optional

import libvirt
import pytest

from resizedriver import blockjob
from resizedriver import domain_xml
from resizedriver import fileutil
from resizedriver import inventory
from resizedriver import staging
from resizedriver.guest import BlockJob, Guest
from resizedriver.host import Host
from resizedriver.layout import InstanceLayout
from resizedriver.model import GiB, Flavor
from resizedriver.qemuimg import QemuImg
from resizedriver.transport import LocalTransport
from tests.functional.conftest import TEST_ROOT, MiB, sha256
from tests.lib import guestlog, hostenv, parallel, testguest

PATTERN = (0xab, 8 * MiB, 24 * MiB)      # byte, offset, length
NEW = Flavor(vcpus=1, memory_mib=256, root_bytes=128 * MiB,
             swap_bytes=16 * MiB)


@dataclasses.dataclass
class Blk:
    host: Host
    guest: testguest.TestGuest
    layout: InstanceLayout
    qemu_img: QemuImg
    # filled by _overlay_resize
    revert_sha: str = ''
    source_xml: str = ''
    staged: Optional[staging.Staged] = None

    @property
    def domain(self) -> Guest:
        return self.host.lookup(self.guest.uuid)

    @property
    def base(self) -> str:
        """The _base file the guest's root overlay was created over."""
        return self.layout.base_path(hashlib.sha1(
            testguest.IMAGE_ID.encode()).hexdigest())

    def wait_boot(self, boot: int) -> guestlog.GuestReport:
        return guestlog.wait_for_boot(self.guest.console_log(self.host),
                                      boot)


@pytest.fixture
def blk(request, host):
    name = parallel.test_name('rdblk', request.node.name)
    root = os.path.join(TEST_ROOT, name)
    stale = host.lookup(name)
    if stale is not None:
        testguest.remove(host, testguest.TestGuest('', stale.uuid, name,
                                                   '', ''))
    shutil.rmtree(root, ignore_errors=True)
    instances = os.path.join(root, 'instances')
    os.makedirs(instances)
    ip, mac = parallel.guest_address()
    guest = testguest.create(host, instances, name=name, mac=mac, ip=ip,
                             bridge=hostenv.BRIDGE)
    layout = InstanceLayout(instances, guest.uuid)
    byte, offset, length = PATTERN
    _qemu_io(layout.path('disk'), f'write -P {byte:#x} {offset} {length}')
    host.lookup(guest.uuid).start()
    yield Blk(host, guest, layout, QemuImg(LocalTransport(), 64 * GiB))
    testguest.remove(host, guest)
    shutil.rmtree(root, ignore_errors=True)


def _qemu_io(path: str, command: str, *, shared: bool = False) -> None:
    subprocess.run(['qemu-io', '-f', 'qcow2', *(['-r', '-U'] if shared
                                                 else []),
                    '-c', command, path], check=True, capture_output=True,
                   timeout=60)


def _pattern_reads_back(path: str) -> None:
    """The pattern written before the first boot, read through ``path``'s
    chain (``read -P`` fails on any other byte)."""
    byte, offset, length = PATTERN
    out = subprocess.run(
        ['qemu-io', '-r', '-U', '-f', 'qcow2', '-c',
         f'read -P {byte:#x} {offset} {length}', path],
        capture_output=True, text=True, timeout=60).stdout
    assert 'Pattern verification failed' not in out and 'read ' in out, out


def _written_bytes() -> int:
    with open('/proc/self/io') as f:
        return int(next(line for line in f
                        if line.startswith('write_bytes')).split()[1])


def _allocated(directory: str) -> int:
    return sum(os.lstat(os.path.join(d, f)).st_blocks * 512
               for d, _, files in os.walk(directory) for f in files)


def _overlay_resize(b: Blk) -> dict[str, float]:
    """Stage while running, power off, rename, define, start; returns the
    measurements.  What the plan will do, by hand."""
    b.wait_boot(1)
    source_xml = b.domain.xml()
    disks = inventory.discover(source_xml, b.layout, b.qemu_img)
    t0 = time.monotonic()
    staged = staging.build(b.layout, disks, NEW, b.qemu_img)
    staging_s = time.monotonic() - t0

    assert b.domain.power_off(60, 2), 'guest did not shut down cleanly'
    t_off = time.monotonic()
    # Not part of the resize: the revert point, hashed while nothing runs.
    b.revert_sha = sha256(b.layout.path('disk'))
    alloc, written = _allocated(b.layout.instances_path), _written_bytes()
    t_down = time.monotonic()
    fileutil.rename_durably(b.layout.dir, b.layout.resize_dir)
    staging.put_in_place(b.layout)
    t_renamed = time.monotonic()
    guest = b.host.define(domain_xml.for_flavor(
        source_xml, flavor=NEW, virt_type=b.host.virt_type('kvm'),
        old_dir=b.layout.dir, new_dir=b.layout.dir, disks=staged.disks))
    alloc_delta = _allocated(b.layout.instances_path) - alloc
    written_delta = _written_bytes() - written
    guest.start()
    t_started = time.monotonic()
    b.source_xml, b.staged = source_xml, staged
    return {'staging_s': staging_s, 'hash_s': t_down - t_off,
            'renames_s': t_renamed - t_down,
            'down_s': t_started - t_down,
            'alloc_delta': alloc_delta, 'written_delta': written_delta}


def _chain(b: Blk) -> list[str]:
    return blockjob.backing_chain(b.domain, 'vda')


def test_overlay_resize_copies_nothing_while_down_then_folds_live(blk):
    b = blk
    m = _overlay_resize(b)
    print(f'\nstaging (guest running): {m["staging_s"]:.3f} s; '
          f'guest down (renames + define + start, hashing excluded): '
          f'{m["down_s"]:.3f} s, of which renames {m["renames_s"]:.4f} s; '
          f'while down this process wrote {m["written_delta"]} bytes, '
          f'allocated bytes in the instances tree changed by '
          f'{m["alloc_delta"]}')
    assert m['alloc_delta'] == 0
    # The renames dirty directory blocks (seen: 0 or 8192 bytes): that is
    # all; one disk's data would be MiBs.
    assert m['written_delta'] <= 64 * 1024

    after = b.wait_boot(2)       # the counter was read through the chain
    assert after.disks == {'vda': 128 * MiB, 'vdb': 16 * MiB}
    assert hostenv.ping(b.guest.ip.split('/')[0])
    assert _chain(b) == [b.layout.path('disk'), b.layout.in_resize_dir(
        'disk'), b.base]
    assert blockjob.disks_depending_on(b.domain, b.layout.resize_dir,
                                       b.qemu_img) == ['vda']
    fold, = b.staged.folds
    assert (fold.target_dev, fold.base) == ('vda', b.base)

    seen = []
    t0 = time.monotonic()
    blockjob.pull(b.domain, fold.target_dev, fold.base, timeout=300,
                  progress=lambda cur, end: seen.append((cur, end)))
    pull_s = time.monotonic() - t0
    print(f'pull: {pull_s:.3f} s, {len(seen)} progress reports, last '
          f'{seen[-1] if seen else None}')

    assert _chain(b) == [b.layout.path('disk'), b.base]
    header = b.qemu_img.info(b.layout.path('disk'), 'qcow2')
    assert (header.backing_file, header.backing_format) == (b.base, 'raw')
    assert blockjob.disks_depending_on(b.domain, b.layout.resize_dir,
                                       b.qemu_img) == []
    # Read while QEMU has it open: right only because pull flushed QEMU's
    # metadata cache (without, the header names _base already but the
    # copied clusters' L2 entries are not in the file yet).
    _pattern_reads_back(b.layout.path('disk'))
    blockjob.pull(b.domain, 'vda', b.base, timeout=10)   # nothing to do

    # The guest keeps running and doing I/O on the folded image: a live
    # grow shows up on its console.
    b.host.conn.lookupByUUIDString(b.guest.uuid).blockResize(
        'vda', 160 * MiB, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
    deadline = time.monotonic() + 30
    while guestlog.read(b.guest.console_log(b.host)).disks['vda'] != \
            160 * MiB:
        assert time.monotonic() < deadline, 'guest did not see the grow'
        time.sleep(0.5)
    assert b.domain.is_running()
    assert hostenv.ping(b.guest.ip.split('/')[0])

    # The revert point is untouched; going back to it boots the old disk.
    assert sha256(b.layout.in_resize_dir('disk')) == b.revert_sha
    b.domain.destroy()
    _pattern_reads_back(b.layout.path('disk'))
    shutil.rmtree(b.layout.dir)
    os.rename(b.layout.resize_dir, b.layout.dir)
    b.host.define(b.source_xml).start()
    reverted = b.wait_boot(2)          # counter 1 on the old disk, again 2
    assert reverted.disks == {'vda': 64 * MiB}
    _pattern_reads_back(b.layout.path('disk'))


HELPER = """
import sys
from resizedriver import blockjob
from resizedriver.host import Host
guest = Host('qemu:///system').lookup(sys.argv[1])
blockjob.pull(guest, 'vda', sys.argv[2], timeout=600,
              bandwidth=int(sys.argv[3]))
"""
SLOW = 2 * MiB    # bytes/s: the 24 MiB to pull take ~12 s


def _wait_progress(b: Blk) -> BlockJob:
    deadline = time.monotonic() + 30
    while True:
        job = b.domain.block_job('vda')
        if job is not None and 0 < job.cur < job.end:
            return job
        assert time.monotonic() < deadline, f'no progress: {job}'
        time.sleep(0.1)


def _kill_qemu(b: Blk) -> None:
    """SIGKILL the guest's QEMU: no flush, no clean close (a host crash,
    as far as the image files can tell)."""
    with open(f'/run/libvirt/qemu/{b.guest.name}.pid') as f:
        os.kill(int(f.read()), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while b.domain.is_running():
        assert time.monotonic() < deadline, 'QEMU still running'
        time.sleep(0.1)


def _start_and_wait(b: Blk) -> None:
    """Start and wait for "ready" from this boot (its counter may repeat:
    the test guest's counter write is not flushed, so a SIGKILLed QEMU
    may lose it, as it may any write the guest did not flush)."""
    log = b.guest.console_log(b.host)
    offset = os.path.getsize(log) if os.path.exists(log) else 0
    b.domain.start()
    deadline = time.monotonic() + 120
    while True:
        with open(log, errors='replace') as f:
            f.seek(offset)
            if 'RDGUEST ready' in f.read():
                return
        assert time.monotonic() < deadline, 'guest did not come up'
        time.sleep(0.5)


def _chain_intact(b: Blk) -> None:
    """The overlay still reads through ``_resize`` and is consistent."""
    header = b.qemu_img.info(b.layout.path('disk'), 'qcow2')
    assert header.backing_file == b.layout.in_resize_dir('disk')
    subprocess.run(['qemu-img', 'check', '-U', '-f', 'qcow2',
                    b.layout.path('disk')], check=True, capture_output=True,
                   timeout=60)
    _pattern_reads_back(b.layout.path('disk'))


def _pattern_lost(b: Blk) -> bool:
    try:
        _pattern_reads_back(b.layout.path('disk'))
    except AssertionError:
        return True
    return False


def test_fold_interrupted_every_way_leaves_a_valid_chain(blk):
    b = blk
    _overlay_resize(b)
    b.wait_boot(2)
    base = b.base
    resize_layer = b.layout.in_resize_dir('disk')

    # 1. The job aborted half way (what pull's timeout does).
    b.domain.block_pull('vda', base, SLOW)
    job = _wait_progress(b)
    b.domain.abort_block_job('vda')
    print(f'\n1. aborted at {job.cur}/{job.end}')
    assert b.domain.block_job('vda') is None
    assert _chain(b) == [b.layout.path('disk'), resize_layer, base]
    _chain_intact(b)

    # 2. QEMU SIGKILLed half way.
    b.domain.block_pull('vda', base, SLOW)
    job = _wait_progress(b)
    _kill_qemu(b)
    print(f'2. QEMU killed at {job.cur}/{job.end}')
    _chain_intact(b)
    assert blockjob.disks_depending_on(b.domain, b.layout.resize_dir,
                                       b.qemu_img) == ['vda']
    _start_and_wait(b)

    # 3. QEMU SIGKILLed right after the job completed, before a flush:
    #    the header names _base already; reattach makes it right again.
    b.domain.block_pull('vda', base, 0)
    while b.domain.block_job('vda') is not None:
        time.sleep(0.01)
    _kill_qemu(b)
    header = b.qemu_img.info(b.layout.path('disk'), 'qcow2')
    print(f'3. QEMU killed after completion: header backing '
          f'{header.backing_file}, pattern lost: {_pattern_lost(b)}')
    blockjob.reattach(b.layout.path('disk'), resize_layer, b.qemu_img)
    _chain_intact(b)
    _start_and_wait(b)

    # 4. The process driving the pull SIGKILLed half way: the job is
    #    libvirt's and goes on; a second pull waits for it and flushes.
    helper = subprocess.Popen(
        [sys.executable, '-c', HELPER, b.guest.uuid, base, str(SLOW)],
        cwd=testguest.REPO)
    try:
        job = _wait_progress(b)
        helper.send_signal(signal.SIGKILL)
    finally:
        helper.wait(timeout=30)
    after = b.domain.block_job('vda')
    print(f'4. driver killed at {job.cur}/{job.end}; job afterwards: '
          f'{after}')
    t0 = time.monotonic()
    blockjob.pull(b.domain, 'vda', base, timeout=300)
    print(f'   second pull returned after {time.monotonic() - t0:.1f} s')
    assert _chain(b) == [b.layout.path('disk'), base]
    _pattern_reads_back(b.layout.path('disk'))
    assert sha256(resize_layer) == b.revert_sha

    # Once pull returned, even a SIGKILL loses nothing: it flushed.
    _kill_qemu(b)
    assert not _pattern_lost(b)
    assert blockjob.disks_depending_on(b.domain, b.layout.resize_dir,
                                       b.qemu_img) == []


def test_pull_timeout_aborts_the_job_and_says_so(blk):
    b = blk
    _overlay_resize(b)
    b.wait_boot(2)
    with pytest.raises(blockjob.FoldFailed, match='aborted'):
        blockjob.pull(b.domain, 'vda', b.base, timeout=1, bandwidth=SLOW)
    assert b.domain.block_job('vda') is None
    _chain_intact(b)
    assert b.domain.is_running()


def test_overlay_over_a_standalone_disk_folds_by_a_full_pull(blk):
    """A root disk with no backing file (not from _base): its overlay is
    folded by pulling everything, leaving a standalone <uuid>/disk."""
    b = blk
    b.domain.destroy()
    subprocess.run(['qemu-img', 'rebase', '-f', 'qcow2', '-b', '',
                    b.layout.path('disk')], check=True, timeout=60)
    b.domain.start()
    _overlay_resize(b)
    b.wait_boot(2)
    fold, = b.staged.folds
    assert fold.base is None
    assert _chain(b) == [b.layout.path('disk'),
                         b.layout.in_resize_dir('disk')]
    blockjob.pull(b.domain, 'vda', None, timeout=300)
    assert _chain(b) == [b.layout.path('disk')]
    assert b.qemu_img.info(b.layout.path('disk'),
                           'qcow2').backing_file is None
    _pattern_reads_back(b.layout.path('disk'))
    assert blockjob.disks_depending_on(b.domain, b.layout.resize_dir,
                                       b.qemu_img) == []
    assert sha256(b.layout.in_resize_dir('disk')) == b.revert_sha
