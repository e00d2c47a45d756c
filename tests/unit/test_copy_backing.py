"""The destination's ``_base`` is shared by every instance there: a resize
that copied a backing file and then failed must not take it away from an
instance that started to use it; and renames of instance directories are
durable before anything relies on them."""

from __future__ import annotations

import os

import pytest

from resizedriver import exception
from resizedriver import fileutil
from resizedriver.layout import InstanceLayout
from resizedriver.model import Destination, DiskRole, Flavor, MiB
from resizedriver.operations import revert
from resizedriver.operations.migrate import MigrateDiskAndPowerOff
from resizedriver.sparse import partial_path
from resizedriver.transport import LocalTransport
from tests.unit.conftest import make_instance, qemu_img, sha256
from tests.unit.fakes import FakeGuest

GROW = Flavor(vcpus=2, memory_mib=512, root_bytes=16 * MiB,
              ephemeral_bytes=4 * MiB, swap_bytes=0)


class FailsCopyingDisks(LocalTransport):
    """Copies backing files; the first disk copy fails half-way, leaving
    this owner's partial file as a killed copy would."""

    def copy_file(self, src, dst, progress=None, *, owner, prepare=None):
        if '/_base/' not in dst:
            with open(partial_path(dst, owner), 'wb') as f:
                f.write(b'half')
            raise exception.CommandFailed(f'copy to {dst} failed')
        super().copy_file(src, dst, progress, owner=owner,
                          prepare=prepare)


def same_image(instances: str):
    """Two instances whose root disks share one _base file."""
    a = make_instance(instances)
    b = make_instance(instances)
    a_disk = os.path.join(a.dir, 'disk')
    base = [line.split(': ', 1)[1] for line in os.popen(
        f'qemu-img info -U {a_disk}') if line.startswith('backing file:')]
    b_disk = os.path.join(b.dir, 'disk')
    qemu_img('rebase', '-u', '-f', 'qcow2', '-F', 'raw', '-b',
             base[0].strip(), b_disk)
    return a, b, base[0].strip()


def migrate(make_env, inst, dest, transport):
    guest = FakeGuest(inst.uuid, 'g-' + inst.uuid[:4], inst.xml)
    return MigrateDiskAndPowerOff(
        make_env(guest), inst.uuid, GROW,
        Destination(None, dest, same_hypervisor=False), transport)


def test_failed_resize_leaves_a_backing_file_another_instance_uses(
        instances, make_env, tmp_path):
    """A and B both find _base/<name> missing at validation; A completes;
    B fails at copy disks: A's backing file must still be there."""
    dest = str(tmp_path / 'dest')
    os.mkdir(dest)
    a, b, base = same_image(instances)
    op_b = migrate(make_env, b, dest, FailsCopyingDisks())
    op_b.validate()
    op_a = migrate(make_env, a, dest, LocalTransport())
    op_a.plan().run()
    assert op_b.backing_to_copy == [base] == op_a.backing_to_copy

    with pytest.raises(exception.ResizeFailed) as ei:
        op_b.steps().run()
    assert ei.value.step == 'copy disks' and ei.value.rolled_back

    copied = os.path.join(dest, '_base', os.path.basename(base))
    assert sha256(copied) == sha256(base)          # A can still boot
    assert [d.backing_file for d in op_a.disks
            if d.role is DiskRole.ROOT] == [base]
    assert os.listdir(os.path.join(dest, '_base')) == [os.path.basename(base)]
    assert not os.path.exists(os.path.join(dest, b.uuid))


def test_undo_removes_only_this_instances_partial_backing_copy(
        instance, make_env, tmp_path):
    dest = str(tmp_path / 'dest')
    os.mkdir(dest)
    op = migrate(make_env, instance, dest, LocalTransport())
    op.validate()
    [backing] = op.backing_to_copy
    final = InstanceLayout(dest, instance.uuid).base_path(
        os.path.basename(backing))
    os.makedirs(os.path.dirname(final))
    mine, theirs = (partial_path(final, o) for o in (instance.uuid, 'other'))
    for path in (final, mine, theirs):
        with open(path, 'wb') as f:
            f.write(b'x')
    op.remove_copied_backing()
    assert sorted(os.listdir(os.path.dirname(final))) == sorted(
        os.path.basename(p) for p in (final, theirs))


def recorded_fsyncs(monkeypatch) -> list[str]:
    synced: list[str] = []
    real = fileutil.fsync_dir
    monkeypatch.setattr(fileutil, 'fsync_dir',
                        lambda path: (synced.append(path), real(path)))
    return synced


def test_move_to_resize_and_back_are_durable(instance, make_env, instances,
                                             monkeypatch):
    op = migrate(make_env, instance, instances, LocalTransport())
    synced = recorded_fsyncs(monkeypatch)
    op.move_to_resize()
    assert synced == [instances] and os.path.isdir(instance.resize_dir)
    op.move_back()
    assert synced == [instances] * 2 and os.path.isdir(instance.dir)


def test_revert_restores_the_source_durably(instance, instances,
                                            monkeypatch):
    os.rename(instance.dir, instance.resize_dir)
    synced = recorded_fsyncs(monkeypatch)
    assert revert.restore_source_dir(InstanceLayout(instances,
                                                    instance.uuid))
    assert synced == [instances] and os.path.isdir(instance.dir)


def with_ephemeral_base(instance, content: bytes) -> str:
    """Make ``instance``'s disk.local a qcow2 over ``_base/ephemeral_..``
    (as Nova's spawn does) whose first bytes are ``content``."""
    base = os.path.join(instance.instances, '_base', 'ephemeral_1_40d1d2c')
    qemu_img('create', '-f', 'raw', base, '4M')
    with open(base, 'r+b') as f:
        f.write(content)
    local = os.path.join(instance.instances, instance.uuid, 'disk.local')
    os.unlink(local)
    qemu_img('create', '-f', 'qcow2', '-F', 'raw', '-b', base, local)
    instance.xml = instance.xml.replace(
        "type='raw' cache='none'/>\n      <source file='"
        f"{os.path.dirname(local)}/disk.local'",
        "type='qcow2' cache='none'/>\n      <source file='"
        f"{os.path.dirname(local)}/disk.local'")
    assert "type='qcow2' cache='none'/>\n      <source file='" \
        f"{local}'" in instance.xml
    return base


def test_a_destination_with_its_own_ephemeral_base_gets_ours_renamed(
        instance, make_env, tmp_path):
    """Its own file (another host's mkfs) stays; ours goes beside it under
    a name of its content, which the record's disk carries to finish."""
    base = with_ephemeral_base(instance, b'OUR-MKFS')
    dest = str(tmp_path / 'dest')
    theirs = os.path.join(dest, '_base', os.path.basename(base))
    os.makedirs(os.path.dirname(theirs))
    with open(theirs, 'wb') as f:
        f.write(b'THEIR-MKFS')
    op = migrate(make_env, instance, dest, LocalTransport())
    op.validate()
    op.copy_backing()

    renamed = os.path.basename(base) + '.' + sha256(base)[:16]
    assert sorted(os.listdir(os.path.dirname(theirs))) == sorted(
        [os.path.basename(theirs), renamed] + [
            os.path.basename(b) for b in op.backing_to_copy if b != base])
    with open(theirs, 'rb') as f:
        assert f.read() == b'THEIR-MKFS'
    assert sha256(os.path.join(dest, '_base', renamed)) == sha256(base)
    [local] = [d for d in op.disks if d.name == 'disk.local']
    assert (local.backing_file, local.base_name) == (base, renamed)
    # recovery knows the name too
    again = MigrateDiskAndPowerOff.from_journal(op.env, op.journal_context())
    assert again._dest_base(base) == os.path.join(dest, '_base', renamed)


def test_a_destination_whose_image_base_differs_is_refused(
        instance, make_env, tmp_path):
    """Only an ephemeral disk's base is Nova's mkfs output: a root disk's
    is an image, which another file of its name cannot stand in for."""
    dest = str(tmp_path / 'dest')
    os.mkdir(dest)
    op = migrate(make_env, instance, dest, LocalTransport())
    op.validate()
    [base] = op.backing_to_copy
    theirs = os.path.join(dest, '_base', os.path.basename(base))
    os.makedirs(os.path.dirname(theirs))
    with open(theirs, 'wb') as f:
        f.write(b'ANOTHER IMAGE')
    with pytest.raises(exception.ResizeRefused, match='differs from our'):
        migrate(make_env, instance, dest, LocalTransport()).validate()
