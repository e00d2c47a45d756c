"""The overlay plan's offline fold at confirm (real qemu-img)."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import types

import pytest

from resizedriver import blockjob
from resizedriver import chooser
from resizedriver import exception
from resizedriver import qemuimg
from resizedriver import transport
from resizedriver.engine import ResizeEngine
from resizedriver.layout import IN_USE_MARKER, RECORD_NAME, InstanceLayout
from resizedriver.model import (Destination, DiskFile, DiskRole, MiB,
                                Topology)
from resizedriver.operations import overlay
from resizedriver.qemuimg import QemuImg
from tests.unit.conftest import qemu_img, write_at
from tests.unit.fakes import FakeGuest, FakeHost
from tests.unit.test_record import make_record

UUID = '11111111-2222-3333-4444-555555555555'


def _read(path: str, offset: int, n: int) -> bytes:
    out = subprocess.run(
        ['qemu-io', '-f', 'qcow2', '-r', '-c',
         f'read -v {offset} {n}', path], check=True, capture_output=True,
        text=True).stdout
    return out.encode()


def test_confirm_folds_offline_even_when_the_header_already_names_base(
        tmp_path, make_env):
    """A pull killed as it completed: the header names _base, the copied
    data is only in _resize.  The offline fold must not trust the header
    (it used to return "folded already" and confirm deleted the data)."""
    layout = InstanceLayout(str(tmp_path), UUID)
    os.makedirs(layout.base_dir)
    os.makedirs(layout.resize_dir)
    os.makedirs(layout.dir)
    base = layout.base_path('sha')
    qemu_img('create', '-f', 'raw', base, '8M')
    write_at(base, 0, b'A' * 4096)
    kept = layout.in_resize_dir('disk')
    qemu_img('create', '-f', 'qcow2', '-F', 'raw', '-b', base, kept, '8M')
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c',
                    'write -P 0x42 0 4096', kept], check=True,
                   capture_output=True)
    active = layout.path('disk')
    qemu_img('create', '-f', 'qcow2', '-F', 'qcow2', '-b', kept, active,
             '16M')
    # the crash window: the header already points at _base
    qemu_img('rebase', '-u', '-f', 'qcow2', '-F', 'raw', '-b', base, active)
    assert b'41 41 41 41' in _read(active, 0, 16)      # "A": data lost
    record = types.SimpleNamespace(uuid=UUID, dest=layout, source=layout)
    op = types.SimpleNamespace(record=record)
    disk = DiskFile('disk', DiskRole.ROOT, kept, 'qcow2', 8 * MiB, 0,
                    base, 'vda')

    overlay._rebase_offline(op, disk, make_env().qemu_img())

    assert b'42 42 42 42' in _read(active, 0, 16)      # "B": kept
    info = subprocess.run(['qemu-img', 'info', '-f', 'qcow2', active],
                          check=True, capture_output=True, text=True).stdout
    assert f'backing file: {base}' in info



def _confirming(conf, instances):
    """An overlay resize waiting for its confirm, its guest running."""
    record = dataclasses.replace(
        make_record(instances), plan=chooser.OVERLAY,
        topology=Topology.SAME_HOST,
        destination=Destination(None, instances, True))
    os.makedirs(record.source.resize_dir)
    for disk in record.disks:
        with open(record.source.in_resize_dir(disk.name), 'wb') as f:
            f.truncate(disk.actual_size)
    record.write(record.source.in_resize_dir(RECORD_NAME))
    guest = FakeGuest(record.uuid, record.name, record.source_xml)
    return record, guest, ResizeEngine(conf, host=FakeHost([guest]))


def test_a_confirm_whose_fold_fails_leaves_it_to_recovery(
        conf, instances, monkeypatch, caplog):
    """A pull that fails or times out must not fail the confirm (Nova
    would put the instance in ERROR and never confirm again): the guest
    runs on, <uuid>_resize says what reads it, recovery folds later.
    Each pull may take as long as its bytes need at the slowest rate."""
    record, guest, engine = _confirming(conf, instances)
    pulls = []

    def pull(guest, dev, base, timeout, progress=None):
        pulls.append((dev, timeout))
        if len(pulls) == 1:
            raise blockjob.FoldFailed(f'{dev}: timed out')

    monkeypatch.setattr(blockjob, 'pull', pull)
    monkeypatch.setattr(blockjob, 'disks_depending_on', lambda *a: [])
    caplog.set_level(logging.INFO, logger='resizedriver')
    engine.confirm_migration(record.uuid)
    assert guest.running and guest.calls == []
    # its summary says so: nothing freed yet
    [said] = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith('Confirm summary:')]
    assert ' outcome=left freed_bytes=0 ' in said
    with open(os.path.join(record.source.resize_dir, IN_USE_MARKER)) as f:
        said = f.read()
    assert record.uuid in said and 'Do not delete' in said
    [journal] = engine.journals.find(record.uuid)
    assert journal.operation == 'confirm_migration'

    [result] = engine.recover(record.uuid)
    assert (result.action, result.error) == ('completed', None), result
    assert not os.path.exists(record.source.resize_dir)
    rate = conf.resizedriver.min_transfer_rate_mib * MiB
    wait = conf.resizedriver.command_timeout
    assert pulls == [('vda', wait + 200_000 / rate),
                     ('vda', wait + 200_000 / rate),
                     ('vdb', wait + 8192 / rate)]


def test_the_next_resize_first_completes_a_confirm_left_to_recovery(
        conf, instances, monkeypatch):
    """The next migrate of the instance folds first (it would be refused
    for the journal and _resize otherwise); a finish of another resize
    here leaves that to the migrate."""
    record, guest, engine = _confirming(conf, instances)
    pulls = []

    def pull(guest, dev, base, timeout, progress=None):
        pulls.append(dev)
        if len(pulls) == 1:
            raise blockjob.FoldFailed(f'{dev}: aborted')

    monkeypatch.setattr(blockjob, 'pull', pull)
    monkeypatch.setattr(blockjob, 'disks_depending_on', lambda *a: [])
    engine.confirm_migration(record.uuid)
    other = dataclasses.replace(record, name='another resize')
    engine._complete_after_finish(record.uuid, other)
    assert pulls == ['vda'] and len(engine.journals.find(record.uuid)) == 1
    engine._complete_after_finish(record.uuid)
    assert pulls == ['vda', 'vda', 'vdb']
    assert engine.journals.find(record.uuid) == []
    assert not os.path.exists(record.source.resize_dir)


# -- finish's check of the staged overlays ----------------------------------

def _staged(tmp_path, *, size: int = 16 * MiB, wanted: int = 16 * MiB,
            backing: str = '', backing_fmt: str = 'qcow2',
            compat: str = '1.1') -> types.SimpleNamespace:
    """What ``check_staged`` reads of a finish: the overlay
    ``<dest>/disk`` over the kept ``<resize dir>/disk``, the flavor's
    size ``wanted``; its qemu-img fails the test if asked for."""
    resize_dir, dest_dir = tmp_path / 'u_resize', tmp_path / 'u'
    resize_dir.mkdir()
    dest_dir.mkdir()
    kept = str(resize_dir / 'disk')
    qemu_img('create', '-f', 'qcow2', kept, '8M')
    overlay_path = str(dest_dir / 'disk')
    qemu_img('create', '-f', 'qcow2', '-o', f'compat={compat}', '-u',
             '-F', backing_fmt, '-b', backing or kept, overlay_path,
             str(size))
    disk = DiskFile('disk', DiskRole.ROOT, overlay_path, 'qcow2', wanted, 0,
                    None, 'vda')

    def no_process():
        raise AssertionError('qemu-img started with the guest off')
    return types.SimpleNamespace(
        check_source_definition=lambda: None, final=[disk],
        env=types.SimpleNamespace(qemu_img=no_process),
        record=types.SimpleNamespace(
            disks=[disk], source=types.SimpleNamespace(
                in_resize_dir=lambda n: str(resize_dir / n))),
        dest=types.SimpleNamespace(path=lambda n: str(dest_dir / n)))


@pytest.mark.parametrize('compat', ['1.1', '0.10'])
def test_the_staged_overlay_is_checked_without_a_process(tmp_path, compat):
    """Finish's check runs with the guest off: it reads the headers
    itself (each ``qemu-img info`` was 0.02-0.06 s of downtime); the
    overlay was made and read by qemu-img before the power-off."""
    overlay.check_staged(_staged(tmp_path, compat=compat))


@pytest.mark.parametrize('why, kw', [
    ('size', {'wanted': 32 * MiB}),
    ('backing file', {'backing': '/elsewhere/disk'}),
    ('backing format', {'backing_fmt': 'raw'}),
])
def test_an_overlay_not_as_staged_is_refused(tmp_path, why, kw):
    with pytest.raises(exception.UnsupportedDisk,
                       match='is not the overlay this resize staged'):
        overlay.check_staged(_staged(tmp_path, **kw))


def test_the_header_says_what_qemu_img_says(tmp_path):
    path = str(tmp_path / 'o')
    qemu_img('create', '-f', 'qcow2', '-u', '-F', 'raw', '-b',
             '/a/_base/x y', path, '24M')
    chain = qemuimg.read_qcow2_chain(path)
    info = QemuImg(transport.LocalTransport(), 1 << 40).info(path, 'qcow2')
    assert (chain.virtual_size, chain.backing_file, chain.backing_format) \
        == (info.virtual_size, info.backing_file, info.backing_format) \
        == (24 * MiB, '/a/_base/x y', 'raw')
    plain = str(tmp_path / 'p')
    qemu_img('create', '-f', 'qcow2', plain, '8M')
    assert qemuimg.read_qcow2_chain(plain) == qemuimg.Qcow2Chain(
        8 * MiB, None, None)
    raw = str(tmp_path / 'raw')
    qemu_img('create', '-f', 'raw', raw, '1M')
    with pytest.raises(exception.UnsupportedDisk, match='not a qcow2'):
        qemuimg.read_qcow2_chain(raw)
