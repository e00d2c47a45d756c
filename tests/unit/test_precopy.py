"""The pre-copy plan: when the chooser takes it, the snapshot it asks
libvirt for, and how its top is taken back whatever a crash left."""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import types

from lxml import etree

import pytest

from resizedriver import blockjob
from resizedriver import chooser
from resizedriver import exception
from resizedriver import stepname
from resizedriver import transport
from resizedriver.engine import ResizeEngine
from resizedriver.layout import InstanceLayout
from resizedriver.model import (Destination, DiskFile, DiskRole, GiB, MiB,
                                Topology)
from resizedriver.operations import precopy, sourcetops
from resizedriver.operations.finish import AfterFinish, FinishMigration
from resizedriver.operations.migrate import MigrateDiskAndPowerOff
from resizedriver.qemuimg import QemuImg
from resizedriver.summary import Summary
from resizedriver.transport import LocalTransport
from tests.unit.conftest import qemu_img
from tests.unit.test_migrate import GROW
from tests.unit.test_record import make_record
from tests.unit.fakes import FakeGuest, FakeHost
from tests.unit.test_headroom import XML

QCOW2 = [DiskFile('disk', DiskRole.ROOT, '/i/u/disk', 'qcow2', 64 * MiB,
                  MiB, '/i/_base/x', 'vda')]
UUID = '11111111-2222-3333-4444-555555555555'
RAW = [DiskFile('disk', DiskRole.ROOT, '/i/u/disk', 'raw', 64 * MiB, MiB,
                None, 'vda')]


def _choose(topology=Topology.OTHER_HOST, disks=QCOW2, running=True,
            pre_copy=True, **kw) -> chooser.Choice:
    return chooser.choose(topology, disks, use_cow_images=True,
                          running=running, pre_copy=pre_copy, **kw)


def test_the_chooser_takes_precopy_for_a_running_guest_going_elsewhere():
    assert _choose().plan == chooser.PRECOPY
    for why, choice in (
            ('the guest is not running', _choose(running=False)),
            ('pre_copy is false', _choose(pre_copy=False)),
            ('not a qcow2 disk device', _choose(disks=RAW)),
            ('not another host', _choose(Topology.SHARED_STORAGE)),
            ('does not offer it', _choose(offered=(chooser.COPY,)))):
        assert choice.plan == chooser.COPY, why
        assert why in choice.reason, choice.reason
    # the same host keeps its own plans
    assert _choose(Topology.SAME_HOST).plan == chooser.OVERLAY


def test_the_snapshot_tops_only_root_and_ephemeral_disks():
    inst = InstanceLayout('/i', UUID)
    snap = etree.fromstring(precopy.snapshot_xml(XML, inst, QCOW2).encode())
    assert snap.find('memory').get('snapshot') == 'no'
    disks = {d.get('name'): d for d in snap.iterfind('disks/disk')}
    assert disks['vda'].get('snapshot') == 'external'
    assert disks['vda'].find('source').get('file') == f'/i/{UUID}/disk.top'
    assert disks['vda'].find('driver').get('type') == 'qcow2'
    others = [d for name, d in disks.items() if name != 'vda']
    assert others and all(d.get('snapshot') == 'no' for d in others)


class _Img:
    def __init__(self) -> None:
        self.commits: list[str] = []
        self.into: list[str] = []

    def commit(self, path: str, base: str, size: int) -> None:
        self.commits.append(path)
        self.into.append(base)


def _env(host: FakeHost, img: _Img):
    conf = types.SimpleNamespace(
        resizedriver=types.SimpleNamespace(command_timeout=60,
                                           min_transfer_rate_mib=5,
                                           pre_copy_rounds=3,
                                           pre_copy_final_mb=0))
    return types.SimpleNamespace(host=host, conf=conf,
                                 qemu_img=lambda: img)


def _instance(tmp_path, xml_disk: str):
    inst = InstanceLayout(str(tmp_path), UUID)
    os.makedirs(inst.dir)
    for name in ('disk', 'disk.top', 'console.log.top'):
        open(inst.path(name), 'w').close()
    xml = XML.replace('/i/u/disk', inst.path(xml_disk))
    return inst, xml


def test_a_top_a_stopped_definition_reads_is_committed_then_redefined(
        tmp_path):
    inst, xml = _instance(tmp_path, 'disk.top')
    guest = FakeGuest(inst.uuid, 'g', xml, running=False)
    img, redefined = _Img(), []
    sourcetops.fold_tops_back(_env(FakeHost([guest]), img), inst,
                           lambda: redefined.append(1))
    assert img.commits == [inst.path('disk.top')]
    assert redefined == [1]
    assert not os.path.exists(inst.path('disk.top'))
    # not a disk's top: not ours to touch
    assert os.path.exists(inst.path('console.log.top'))


def test_a_running_guest_that_no_longer_reads_its_top_only_loses_it(
        tmp_path):
    """A crash after the pivot: the guest writes to disk; committing the
    stale top now would overwrite what it wrote since.  Paused (as the
    pivot leaves it until the top is gone), it is resumed after."""
    inst, xml = _instance(tmp_path, 'disk')
    for paused in (False, True):
        open(inst.path('disk.top'), 'w').close()
        guest = FakeGuest(inst.uuid, 'g', xml, running=True)
        guest.paused = paused
        img, redefined = _Img(), []
        sourcetops.fold_tops_back(_env(FakeHost([guest]), img), inst,
                               functools.partial(redefined.append, 1))
        assert (img.commits, redefined) == ([], [])
        assert not os.path.exists(inst.path('disk.top'))
        assert guest.call_names == (['resume'] if paused else [])


def test_a_top_under_a_stopped_guest_is_committed_even_if_unread(tmp_path):
    """Stopped, a guest never ran on a disk newer than its top (a pivot
    keeps it paused until the top is gone; nothing defines a guest on
    the disk while the top exists): the top may hold what a pivot's
    flush did not get onto the disk, or a definition Nova wrote anew may
    name the disk.  Deleting it lost those writes."""
    inst, xml = _instance(tmp_path, 'disk')
    img = _Img()
    sourcetops.fold_tops_back(
        _env(FakeHost([FakeGuest(inst.uuid, 'g', xml, running=False)]),
             img), inst, None)
    assert img.commits == [inst.path('disk.top')]
    assert not os.path.exists(inst.path('disk.top'))


def test_nothing_boots_a_disk_while_its_top_exists(tmp_path):
    inst, _xml = _instance(tmp_path, 'disk')
    with pytest.raises(exception.RecoveryNeeded, match='disk.top'):
        sourcetops.refuse_if_topped(inst)
    os.unlink(inst.path('disk.top'))
    sourcetops.refuse_if_topped(inst)


def test_precopy_needs_a_disk_file_and_room_for_the_fold():
    volume_only = [DiskFile('disk.config', DiskRole.CONFIG, '/i/u/disk.config',
                            'raw', MiB, MiB, None, 'hdd')]
    choice = _choose(disks=volume_only)
    assert choice.plan == chooser.COPY
    assert 'no root or ephemeral disk' in choice.reason
    choice = _choose(precopy_blockers=['the destination has 1 bytes free'])
    assert choice.plan == chooser.COPY
    assert 'the destination has 1 bytes free' in choice.reason


def _all_qcow2(instance) -> None:
    local = instance.path('disk.local')
    qemu_img('convert', '-f', 'raw', '-O', 'qcow2', local, local + '.q')
    os.rename(local + '.q', local)
    old = ("type='raw' cache='none'/>\n      <source file='"
           f"{instance.dir}/disk.local'")
    assert old in instance.xml
    instance.xml = instance.xml.replace(old, old.replace('raw', 'qcow2'))


def test_a_precopy_is_taken_only_with_room_for_two_copies(
        instance, make_env, tmp_path, monkeypatch):
    _all_qcow2(instance)
    dest = tmp_path / 'b-instances'
    dest.mkdir()
    free = {}
    transport = LocalTransport()
    monkeypatch.setattr(transport, 'free_bytes', lambda path: free['n'])

    def chosen(n: int) -> chooser.Choice:
        free['n'] = n
        op = MigrateDiskAndPowerOff(
            make_env(FakeGuest(instance.uuid, 'g', instance.xml)),
            instance.uuid, GROW, Destination(None, str(dest), False),
            transport)
        op.plan()
        return op.choice

    copies = chosen(1 << 40)
    assert copies.plan == chooser.PRECOPY, copies.reason
    needed = sum(os.path.getsize(instance.path(n))
                 for n in ('disk', 'disk.local'))
    # room for the copies but not for the fold's second copy: copy plan
    tight = chosen(needed + 64 * 1024 * 1024 // 8)
    assert tight.plan == chooser.COPY
    assert 'a pre-copy needs' in tight.reason


def test_a_host_without_cow_images_keeps_pre_copied_disks_qcow2(
        conf, make_env):
    """B's ``use_cow_images = False`` must not make the pre-copied qcow2
    chain be read as raw (its layer then deleted): Nova keeps a qcow2
    disk qcow2 too."""
    conf.set_override('use_cow_images', False)
    record = make_record()
    for plan, fmt in ((chooser.PRECOPY, 'qcow2'), (chooser.COPY, 'raw')):
        record.plan = plan
        op = FinishMigration(make_env(), record, power_on=True)
        root = [f for c, f in op.pairs if c.role is DiskRole.ROOT][0]
        assert root.format == fmt, plan


def test_with_no_domain_the_top_is_committed_and_with_no_top_nothing(
        tmp_path):
    inst, _xml = _instance(tmp_path, 'disk.top')
    img = _Img()
    sourcetops.fold_tops_back(_env(FakeHost([]), img), inst, None)
    assert img.commits == [inst.path('disk.top')]
    sourcetops.fold_tops_back(_env(FakeHost([]), img), inst, None)
    assert img.commits == [inst.path('disk.top')]       # nothing more


def test_a_failed_fold_on_the_destination_leaves_the_guest_running(
        conf, instances, monkeypatch):
    """The fold runs once the resized guest runs: its failure used to
    fail the finish, whose undo destroyed that guest (and a crash mid
    fold had recovery roll the finish back the same way).  Now it is a
    plan of its own that is only ever completed: the finish stands, the
    journal stays, recovery folds."""
    record = dataclasses.replace(make_record(instances), plan=chooser.PRECOPY)
    finish = FinishMigration(
        ResizeEngine(conf, host=FakeHost([])).env, record, power_on=True)
    assert stepname.FOLD_PRECOPY not in finish.plan()
    guest = FakeGuest(record.uuid, record.name, record.source_xml)
    engine = ResizeEngine(conf, host=FakeHost([guest]))
    folds = []

    def fold(op) -> None:
        folds.append(op.record.uuid)
        if len(folds) == 1:     # a refusal too must keep the journal
            raise exception.UnreadableImage('disk.precopy: unreadable')

    monkeypatch.setattr(precopy, 'fold_layers', fold)
    engine._after_finish(AfterFinish(engine.env, record))
    assert guest.running and guest.calls == []
    [journal] = engine.journals.find(record.uuid)
    assert journal.operation == AfterFinish.OPERATION
    [result] = engine.recover(record.uuid)
    assert (result.action, result.error) == ('completed', None), result
    assert folds == [record.uuid] * 2
    assert engine.journals.find(record.uuid) == []
    assert guest.running and guest.calls == []


def test_a_guest_paused_for_a_pivot_whose_top_went_is_resumed(tmp_path):
    """Killed between removing the top (renamed .pivoted) and resuming
    the guest: the next run finds no top to fold but resumes the guest
    (it stayed frozen for good otherwise)."""
    inst, xml = _instance(tmp_path, 'disk')
    os.rename(inst.path('disk.top'), inst.path('disk.top.pivoted'))
    guest = FakeGuest(inst.uuid, 'g', xml, running=True)
    guest.paused = True
    sourcetops.fold_tops_back(_env(FakeHost([guest]), _Img()), inst, None)
    assert guest.call_names == ['resume'] and not guest.paused
    assert not os.path.exists(inst.path('disk.top.pivoted'))



def test_the_fold_s_deadline_scales_with_the_layer_it_pulls(
        conf, tmp_path, monkeypatch):
    """The after-finish pull of a pre-copied layer had a flat
    ``fold_timeout`` (an hour): any layer larger than that hour at the
    slowest rate always timed out, every retry the same.  It now gets
    what a copy of its bytes gets."""
    dest = InstanceLayout(str(tmp_path), UUID)
    os.makedirs(dest.dir)
    final = DiskFile('disk', DiskRole.ROOT, dest.path('disk'), 'qcow2',
                     200 * GiB, MiB, str(tmp_path / '_base' / 'x'), 'vda')
    open(final.path, 'w').close()
    layer = dest.path('disk' + precopy.LAYER)
    with open(layer, 'w') as f:
        f.truncate(100 * GiB)
    guest = FakeGuest(UUID, 'g', XML.replace('/i/u/disk', final.path))
    pulls = []

    def pull(guest, dev, base, timeout, progress=None):
        pulls.append((dev, base, timeout))
    monkeypatch.setattr(precopy.blockjob, 'pull', pull)
    op = types.SimpleNamespace(
        env=types.SimpleNamespace(host=FakeHost([guest]), conf=conf,
                                  progress=None),
        record=types.SimpleNamespace(uuid=UUID), dest=dest,
        pairs=[(final, final)], qemu_img=None)
    precopy.fold_layers(op)
    assert pulls == [('vda', final.backing_file,
                      transport.deadlines(conf).for_size(100 * GiB))]
    assert pulls[0][2] > 3600           # the flat cap it had
    assert not os.path.exists(layer)


def test_the_next_resize_completes_a_fold_left_first(
        conf, instances, monkeypatch):
    """A pre-copied layer left by a fold that failed: the next resize of
    the instance folds it before anything else, and is refused before
    it touched anything while the fold fails again (it would copy a
    chain that is not Nova's)."""
    record = dataclasses.replace(make_record(instances), plan=chooser.PRECOPY)
    engine = ResizeEngine(conf, host=FakeHost([]))
    after = AfterFinish(engine.env, record)
    engine.journals.open(after.OPERATION, record.uuid,
                         after.journal_context()).started(
                             stepname.FOLD_PRECOPY, False)
    folds = []

    def fold(op) -> None:
        folds.append(op.record.uuid)
        if len(folds) == 1:
            raise exception.UnreadableImage('disk.precopy: unreadable')
    monkeypatch.setattr(precopy, 'fold_layers', fold)
    with pytest.raises(exception.ResizeRefused, match='unreadable'):
        engine.migrate_disk_and_power_off(
            record.uuid, GROW, Destination(None, instances, True))
    [journal] = engine.journals.find(record.uuid)
    assert journal.operation == AfterFinish.OPERATION
    engine._complete_after_finish(record.uuid)      # the migrate's call
    assert folds == [record.uuid] * 2
    assert engine.journals.find(record.uuid) == []


def test_a_fold_left_by_an_earlier_resize_is_dropped_not_run(
        conf, instances, monkeypatch):
    """The instance left this host (its files with it) and comes back by
    another resize: the old journal would fold the new copies by the old
    record; it goes instead."""
    old = dataclasses.replace(make_record(instances), plan=chooser.PRECOPY)
    new = dataclasses.replace(old, new_flavor=dataclasses.replace(
        old.new_flavor, vcpus=4))
    engine = ResizeEngine(conf, host=FakeHost([]))
    after = AfterFinish(engine.env, old)
    journal = engine.journals.open(after.OPERATION, old.uuid,
                                   after.journal_context())
    journal.started(stepname.FOLD_PRECOPY, False)
    folds = []
    monkeypatch.setattr(precopy, 'fold_layers', folds.append)
    engine._complete_after_finish(new.uuid, new)
    assert folds == [] and engine.journals.find(new.uuid) == []


def test_no_power_off_when_the_tops_no_longer_fit(tmp_path):
    """The guest wrote a lot during the pre-copy: the destination is
    checked again before the guest is stopped."""
    inst, _xml = _instance(tmp_path, 'disk.top')
    with open(inst.path('disk.top'), 'wb') as f:
        f.write(b'w' * 4096)
    disks = [DiskFile('disk', DiskRole.ROOT, inst.path('disk'), 'qcow2',
                      64 * MiB, 1000, None, 'vda')]
    free = {'n': 4096 + 1000}
    op = types.SimpleNamespace(
        disks=disks, inst=inst, dest_inst=InstanceLayout('/b', UUID),
        dest=InstanceLayout('/b', UUID), copy_all=lambda pairs: None,
        source_xml=XML, summary=Summary(),
        env=_env(FakeHost([]), _Img()),
        transport=types.SimpleNamespace(
            sync_dir=lambda *d: None, free_bytes=lambda p: free['n']))
    # 4096 bytes left after a round that moved 1000: no second round
    # (another would not move less)
    precopy.precopy(op)
    free['n'] -= 1
    with pytest.raises(exception.InsufficientSpace, match='not powering'):
        precopy.precopy(op)


# -- rounds: stacked tops -----------------------------------------------------

def _stack(tmp_path, *names: str):
    inst = InstanceLayout(str(tmp_path), UUID)
    os.makedirs(inst.dir)
    for name in ('disk',) + names:
        open(inst.path(name), 'w').close()
    return inst


def test_stacked_tops_of_a_stopped_guest_are_committed_at_once(tmp_path):
    """One commit from the last round's top down into the disk: committed
    one by one, an interruption between two would leave a lower top that
    a later run commits again over the newer data."""
    inst = _stack(tmp_path, 'disk.top', 'disk.top.2', 'disk.top.10')
    xml = XML.replace('/i/u/disk', inst.path('disk.top.10'))
    img, redefined = _Img(), []
    sourcetops.fold_tops_back(
        _env(FakeHost([FakeGuest(UUID, 'g', xml, running=False)]), img),
        inst, lambda: redefined.append(1))
    assert (img.commits, img.into) == ([inst.path('disk.top.10')],
                                       [inst.path('disk')])
    assert redefined == [1]
    assert sorted(os.listdir(inst.dir)) == ['disk']


def test_a_disk_marked_folded_only_loses_its_stale_tops(tmp_path):
    """Interrupted after the disk got its tops' data (the marker is on
    disk) but before the lower tops went: they are removed, never
    committed again -- with the guest paused for its pivot (resumed
    after) or gone with the host."""
    for guest_runs in (True, False):
        inst = _stack(tmp_path / str(guest_runs), 'disk.top',
                      'disk.top.pivoted')
        guest = FakeGuest(UUID, 'g', XML.replace('/i/u/disk',
                                                 inst.path('disk')),
                          running=guest_runs)
        guest.paused = guest_runs
        img = _Img()
        sourcetops.fold_tops_back(_env(FakeHost([guest]), img), inst, None)
        assert img.commits == []
        assert sorted(os.listdir(inst.dir)) == ['disk']
        assert guest.call_names == (['resume'] if guest_runs else [])


def test_a_running_guest_on_stacked_tops_is_committed_down_to_its_disk(
        tmp_path, monkeypatch):
    """Its deadline scales with the data to move (the tops' bytes), as
    copies' do: a flat cap aborted every fold of a large enough top."""
    inst = _stack(tmp_path, 'disk.top', 'disk.top.2')
    for top, size in (('disk.top', 40 * GiB), ('disk.top.2', 2 * GiB)):
        os.truncate(inst.path(top), size)
    guest = FakeGuest(UUID, 'g', XML.replace('/i/u/disk',
                                             inst.path('disk.top.2')))
    commits = []
    env = _env(FakeHost([guest]), _Img())

    def commit_active(guest, dev, base, timeout, drop_top):
        commits.append((dev, base))
        assert timeout == transport.deadlines(env.conf).for_size(42 * GiB)
        guest.paused = True             # as the pivot leaves it
        drop_top()
        assert os.path.exists(inst.path('disk.top.pivoted'))
    monkeypatch.setattr(sourcetops.blockjob, 'commit_active', commit_active)
    sourcetops.fold_tops_back(env, inst, None)
    assert commits == [('vda', inst.path('disk'))]
    assert sorted(os.listdir(inst.dir)) == ['disk']
    assert guest.call_names == ['resume']


def test_round_n_snapshots_name_their_tops_after_the_round():
    inst = InstanceLayout('/i', UUID)
    snap = etree.fromstring(precopy.snapshot_xml(XML, inst, QCOW2, 3)
                            .encode())
    vda = [d for d in snap.iterfind('disks/disk') if d.get('name') == 'vda']
    assert vda[0].find('source').get('file') == f'/i/{UUID}/disk.top.3'


class _RoundGuest:
    """Each snapshot makes the named tops, as large as the guest will
    have written into them by the time they are looked at."""

    def __init__(self, xml: str, writes: list[int]) -> None:
        self.xml, self.writes = xml, writes

    def live_xml(self) -> str:
        return self.xml

    def snapshot_disks(self, snapshot_xml: str) -> None:
        domain = etree.fromstring(self.xml.encode())
        for disk in etree.fromstring(snapshot_xml.encode()).iter('disk'):
            source = disk.find('source')
            if source is None:
                continue
            with open(source.get('file'), 'wb') as f:
                f.truncate(self.writes.pop(0))
            dev = disk.get("name")
            target = domain.find(f"devices/disk/target[@dev='{dev}']")
            target.getparent().find('source').set('file', source.get('file'))
        self.xml = etree.tostring(domain).decode()


class _RemoteImg:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def rebase_unsafe(self, path, backing, fmt) -> None:
        self.calls.append(('rebase', path, backing))

    def rebase_unsafe_argv(self, path, backing, fmt) -> list[str]:
        return ['rebase', path, backing, fmt]

    def commit_into_layer(self, path, layer, backing, size) -> None:
        self.calls.append(('commit', path, layer, backing, size))


def _round_op(tmp_path, first_top: int, writes: list[int],
              free: int = 1 << 40, rounds: int = 3):
    inst = _stack(tmp_path, 'disk.top')
    with open(inst.path('disk.top'), 'wb') as f:
        f.truncate(first_top)
    disks = [DiskFile('disk', DiskRole.ROOT, inst.path('disk'), 'qcow2',
                      GiB, 100 * MiB, '/a/_base/x', 'vda')]
    img, copies, removed, synced = _RemoteImg(), [], [], []
    prepared: dict = {}

    def copy_all(pairs, prepare=None) -> None:
        copies.append(pairs)
        prepared.update(prepare or {})

    conf = types.SimpleNamespace(resizedriver=types.SimpleNamespace(
        pre_copy_rounds=rounds, pre_copy_final_mb=1))
    dest = InstanceLayout('/b', UUID)
    op = types.SimpleNamespace(
        disks=disks, inst=inst, dest_inst=dest, dest=dest, source_xml=XML,
        copy_all=copy_all, img=img, removed=removed, copies=copies,
        prepared=prepared,
        summary=Summary(), synced=synced,
        guest=_RoundGuest(XML.replace('/i/u/disk', inst.path('disk.top')),
                          list(writes)),
        env=types.SimpleNamespace(conf=conf,
                                  qemu_img=lambda transport=None: img),
        transport=types.SimpleNamespace(
            sync_dir=lambda *d: synced.append(d),
            free_bytes=lambda p: free, remove_file=removed.append))
    return op


def test_the_destination_s_directory_is_durable_before_power_off(
        tmp_path):
    """Its own entry in the instances path (made by ``create dest
    dir``) is fsynced with the pre-copy, while the guest runs: nothing
    in the window changes it, so the copy made with the guest off
    fsyncs only the directory its files go to (``Transport.publish``)."""
    op = _round_op(tmp_path, MiB, [], rounds=1)
    precopy.precopy(op)
    assert op.synced == [(op.dest_inst.dir, op.dest.instances_path)]


def test_rounds_go_on_while_they_converge_up_to_the_limit(tmp_path):
    # round 1 moved the 100 MiB disk while the guest wrote 40 MiB; round
    # 2 moves those 40 while it writes 10; round 3 those 10 (5 written)
    op = _round_op(tmp_path, 40 * MiB, [10 * MiB, 5 * MiB])
    precopy.precopy(op)
    layer = op.dest.path('disk.precopy')
    assert op.copies[1:] == [
        [(op.inst.path('disk.top'), layer + '.2')],
        [(op.inst.path('disk.top.2'), layer + '.3')]]
    # each commit opens B's copy of _base under the layer
    base = op.dest.base_path('x')
    assert op.img.calls == [
        ('rebase', layer + '.2', layer),
        ('commit', layer + '.2', layer, base, 40 * MiB),
        ('rebase', layer + '.3', layer),
        ('commit', layer + '.3', layer, base, 10 * MiB)]
    assert op.removed == [layer + '.2', layer + '.3']
    assert os.path.exists(op.inst.path('disk.top.3'))
    assert op.summary.precopy_rounds == 3


@pytest.mark.parametrize('first_top, free, why', [
    (512 * 1024, 1 << 40, 'at most the final size'),
    (200 * MiB, 1 << 40, 'the guest outruns the copy'),
    (40 * MiB, 100 * MiB + 40 * MiB + 79 * MiB, 'no room for the round'),
])
def test_no_further_round_when_it_would_not_pay(tmp_path, first_top, free,
                                                why):
    op = _round_op(tmp_path, first_top, [MiB], free=free)
    precopy.precopy(op)
    assert len(op.copies) == 1 and op.img.calls == [], why
    assert not os.path.exists(op.inst.path('disk.top.2'))


def test_one_round_when_configured_so(tmp_path):
    op = _round_op(tmp_path, 40 * MiB, [MiB], rounds=1)
    precopy.precopy(op)
    assert len(op.copies) == 1
    assert op.summary.precopy_rounds == 1


def test_the_last_rounds_top_is_what_crosses_while_the_guest_is_down(
        tmp_path):
    op = _round_op(tmp_path, MiB, [])
    os.makedirs(op.inst.resize_dir)
    for name in ('disk.top', 'disk.top.2', 'disk.top.pivoted'):
        open(op.inst.in_resize_dir(name), 'w').close()
    written = []
    op.record = types.SimpleNamespace(copies_verified=False,
                                      write=written.append)
    precopy.copy_tops(op)
    assert op.copies == [[(op.inst.in_resize_dir('disk.top.2'),
                           op.dest.path('disk'))]]
    # its header names the layer before it gets the disk's name, in the
    # round trip of the rename (``Transport.copy_file``'s ``prepare``):
    # no command of its own with the guest off
    assert op.img.calls == []
    part = op.dest.path('disk') + '.part'
    assert op.prepared[op.dest.path('disk')](part) == [
        'rebase', part, op.dest.path('disk.precopy'), 'qcow2']
    assert op.synced == []          # made durable before (above)
    assert op.record.copies_verified and written
    for name in ('disk.top', 'disk.top.2'):
        os.unlink(op.inst.in_resize_dir(name))
    with pytest.raises(exception.ResizeDriverError, match='no pre-copy top'):
        precopy.copy_tops(op)


def _qemu_io(path: str, *commands: str) -> None:
    """Run qemu-io commands on the qcow2 ``path`` through its chain (a
    ``read -P`` that finds other bytes makes it fail)."""
    args = [a for c in commands for a in ('-c', c)]
    done = subprocess.run(['qemu-io', '-f', 'qcow2', *args, path],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize('layer_opts, part_opts', [
    ('cluster_size=2M', 'cluster_size=64k'),
    ('cluster_size=64k', 'cluster_size=64k,extended_l2=on'),
], ids=['layer clusters larger than the part\'s',
        'part allocated in subclusters'])
def test_a_rounds_commit_keeps_base_data_around_what_it_writes(
        tmp_path, layer_opts, part_opts):
    # B's layer names A's _base (absent here) in its header; the commit
    # must still fill what a cluster of the layer does not get from the
    # part with what the guest reads there: B's copy of _base, not zeros
    base = str(tmp_path / 'b_base')
    with open(base, 'wb') as f:
        f.write(b'\x11' * (4 * MiB))
    layer, part = str(tmp_path / 'disk.precopy'), str(tmp_path / 'part')
    qemu_img('create', '-f', 'qcow2', '-o', layer_opts, '-F', 'raw', '-b',
             base, layer, str(4 * MiB))
    qemu_img('create', '-f', 'qcow2', '-o', part_opts, '-F', 'qcow2', '-b',
             layer, part)
    _qemu_io(part, 'write -P 0xab 524288 4096')
    qemu_img('rebase', '-u', '-f', 'qcow2', '-F', 'raw', '-b',
             '/nowhere/_base/a', layer)
    QemuImg(LocalTransport(), 64 * GiB).commit_into_layer(
        part, layer, base, 4 * MiB)
    qemu_img('rebase', '-u', '-f', 'qcow2', '-F', 'raw', '-b', base, layer)
    _qemu_io(layer, 'read -P 0x11 0 524288', 'read -P 0xab 524288 4096',
             f'read -P 0x11 {524288 + 4096} {4 * MiB - 524288 - 4096}')


# -- review findings: resumes, redefinitions, stray tops ----------------------

class _ResumeWatch(FakeGuest):
    """Records what the instance directory holds when it is resumed."""

    def __init__(self, inst: InstanceLayout, xml: str) -> None:
        super().__init__(UUID, 'g', xml, running=True)
        self.inst, self.paused, self.seen = inst, True, []

    def resume(self) -> None:
        self.seen = sorted(os.listdir(self.inst.dir))
        super().resume()


def test_a_paused_guest_resumes_only_once_every_pivoted_disk_is_marked(
        tmp_path):
    """Killed in the second disk's pivot: disk is marked, disk.local is
    pivoted (the guest reads it, paused) but not marked.  Resumed before
    disk.local's top is marked, the guest writes to disk.local while
    disk.local.top says it holds newer data: a second crash and a later
    offline fold would commit that old top over the new writes."""
    inst = _stack(tmp_path, 'disk.local', 'disk.top.pivoted',
                  'disk.local.top')
    xml = XML.replace('/i/u/disk', inst.path('disk'), 1).replace(
        '/i/u/disk.local', inst.path('disk.local'))
    guest = _ResumeWatch(inst, xml)
    img = _Img()
    sourcetops.fold_tops_back(_env(FakeHost([guest]), img), inst, None)
    assert guest.call_names == ['resume']
    assert 'disk.local.top' not in guest.seen, guest.seen
    assert img.commits == []
    assert sorted(os.listdir(inst.dir)) == ['disk', 'disk.local']


def test_a_fold_killed_before_its_redefinition_redefines_on_the_rerun(
        tmp_path):
    """Killed after the offline commit's marker (disk.top.2 renamed) and
    before the stopped definition that names disk.top.2 was replaced:
    the rerun finds only stale tops, and must still redefine."""
    inst = _stack(tmp_path, 'disk.top', 'disk.top.pivoted')
    xml = XML.replace('/i/u/disk', inst.path('disk.top.2'), 1)
    img, redefined = _Img(), []
    sourcetops.fold_tops_back(
        _env(FakeHost([FakeGuest(UUID, 'g', xml, running=False)]), img),
        inst, lambda: redefined.append(1))
    assert img.commits == []
    assert redefined == [1]
    assert sorted(os.listdir(inst.dir)) == ['disk']


@pytest.mark.parametrize('left', ['disk.top.7', 'disk.top.pivoted'])
def test_a_resize_is_refused_while_a_pre_copy_left_files(tmp_path, left):
    """Whatever the plan: a top holds writes the disk lacks and a marker
    a fold not finished; a stray top would also be taken for a round's."""
    inst = _stack(tmp_path, left)
    with pytest.raises(exception.RecoveryNeeded, match=left):
        sourcetops.refuse_if_topped(inst)


def test_a_round_freezes_the_top_the_guest_writes_to_or_refuses(tmp_path):
    op = _round_op(tmp_path, 40 * MiB, [10 * MiB])
    open(op.inst.path('disk.top.9'), 'w').close()
    with pytest.raises(exception.ResizeDriverError, match='disk.top.9'):
        precopy.snapshot(op, 2)
    os.remove(op.inst.path('disk.top.9'))
    op.guest.xml = XML.replace('/i/u/disk', op.inst.path('disk'))
    with pytest.raises(exception.ResizeDriverError,
                       match='the guest writes to .*/disk[^.]'):
        precopy.snapshot(op, 2)


# -- second review: a fold or a start on a directory that is not what it was -

@pytest.mark.parametrize('there', [(), ('disk.local',)])
def test_a_definition_naming_a_top_of_a_disk_not_there_is_kept(tmp_path,
                                                                there):
    """The undo of a pre-copy killed after the move to _resize, with the
    move back not done (the directory missing, or a stray one in its
    place): nothing to fold here, and replacing the definition that
    names the top would have the rerun boot on the disk without it --
    and then drop the tops as pivoted away from."""
    inst = InstanceLayout(str(tmp_path), UUID)
    if there:
        os.makedirs(inst.dir)
        for name in there:
            open(inst.path(name), 'w').close()
    xml = XML.replace('/i/u/disk', inst.path('disk.top.2'), 1)
    img, redefined = _Img(), []
    sourcetops.fold_tops_back(
        _env(FakeHost([FakeGuest(UUID, 'g', xml, running=False)]), img),
        inst, lambda: redefined.append(1))
    assert (img.commits, redefined) == ([], [])


@pytest.mark.parametrize('paused', [False, True])
def test_a_guest_reading_neither_its_tops_nor_its_disk_is_refused(
        tmp_path, paused):
    """Only a guest seen reading the disk itself was pivoted: one that
    reads it by another name (a symlinked instances path) may still
    write to the top, which must not be taken for stale."""
    inst = _stack(tmp_path, 'disk.top')
    guest = FakeGuest(UUID, 'g', XML.replace('/i/u/disk', '/elsewhere/disk'))
    guest.paused = paused
    with pytest.raises(exception.ResizeDriverError,
                       match='reads neither disk.top nor'):
        sourcetops.fold_tops_back(_env(FakeHost([guest]), _Img()), inst, None)
    assert sorted(os.listdir(inst.dir)) == ['disk', 'disk.top']
    assert guest.call_names == []


def test_no_guest_starts_beside_tops_its_definition_does_not_name(tmp_path):
    """Powering a guest on again (the undo of the power off) on a disk
    whose tops hold newer data would hide them, and the fold after it
    would take them for stale."""
    inst = _stack(tmp_path, 'disk.top', 'disk.top.2')
    on_disk = XML.replace('/i/u/disk', inst.path('disk'), 1)
    with pytest.raises(exception.RecoveryNeeded, match='disk.top.2'):
        sourcetops.refuse_to_start_beside_tops(on_disk, inst)
    sourcetops.refuse_to_start_beside_tops(
        XML.replace('/i/u/disk', inst.path('disk.top.2'), 1), inst)
    open(inst.path('disk.top.pivoted'), 'w').close()   # folded: stale tops
    sourcetops.refuse_to_start_beside_tops(on_disk, inst)


def test_a_marker_is_only_a_disk_s(tmp_path):
    inst = _stack(tmp_path, 'console.log.top.pivoted')
    sourcetops.refuse_if_topped(inst)


def test_the_undo_of_the_power_off_checks_the_tops_first(tmp_path):
    inst = _stack(tmp_path, 'disk.top')
    guest = FakeGuest(UUID, 'g', XML.replace('/i/u/disk', inst.path('disk'),
                                             1), running=False)
    op = types.SimpleNamespace(
        was_running=True, guest=guest, inst=inst,
        env=types.SimpleNamespace(conf=types.SimpleNamespace(
            resizedriver=types.SimpleNamespace(start_timeout=5))))
    with pytest.raises(exception.RecoveryNeeded, match='disk.top'):
        MigrateDiskAndPowerOff.power_on_again(op)
    assert guest.call_names == []
    guest._xml = XML.replace('/i/u/disk', inst.path('disk.top'), 1)
    MigrateDiskAndPowerOff.power_on_again(op)
    assert guest.running


def test_a_config_drive_the_guest_may_write_crosses_after_power_off(
        tmp_path):
    """vfat (Nova attaches it as a writable disk): copied while the guest
    runs, the copy could miss its last writes; a CD-ROM one cannot change
    and crosses with the bulk."""
    op = _round_op(tmp_path, MiB, [], rounds=1)
    config = DiskFile('disk.config', DiskRole.CONFIG,
                      op.inst.path('disk.config'), 'raw', 300, 300)
    open(config.path, 'w').close()
    op.disks.append(config)
    vfat = op.guest.xml.replace('/iso', config.path).replace(
        "device='cdrom'", "device='disk'").replace('<readonly/>', '')
    op.source_xml = vfat
    precopy.precopy(op)
    assert op.copies == [[(op.inst.path('disk'),
                           op.dest.path('disk.precopy'))]]
    os.makedirs(op.inst.resize_dir)
    open(op.inst.in_resize_dir('disk.top'), 'w').close()
    op.record = types.SimpleNamespace(copies_verified=False,
                                      write=lambda path: None)
    op.copies.clear()
    precopy.copy_tops(op)
    assert op.copies == [[(op.inst.in_resize_dir('disk.top'),
                           op.dest.path('disk')),
                          (op.inst.in_resize_dir('disk.config'),
                           op.dest.path('disk.config'))]]

    op.source_xml = op.guest.xml.replace('/iso', config.path)   # CD-ROM
    op.copies.clear()
    precopy.precopy(op)
    assert (config.path, op.dest.path('disk.config')) in op.copies[0]


def test_a_commit_failing_after_its_pivot_is_retried_and_the_guest_resumed(
        tmp_path, monkeypatch):
    """The pivot happened (or may have), then the commit failed: the
    guest is left paused, its top must go first.  Left so, it stayed
    paused until a service restart (Nova's unpause is refused beside the
    top, the next resize by the kept journal).  The fold is tried again
    in-process, within the deadline a commit of the tops has: the next
    try finds the guest pivoted, drops the top and resumes it."""
    inst, xml = _instance(tmp_path, 'disk.top')
    os.truncate(inst.path('disk.top'), 3 * GiB)
    guest = FakeGuest(UUID, 'g', xml)
    env = _env(FakeHost([guest]), _Img())
    timeouts = []

    def pivot_then_fail(guest_, dev, base, timeout, drop_top):
        timeouts.append(timeout)
        guest._xml = xml.replace(inst.path('disk.top'), inst.path('disk'))
        guest.paused = True
        raise blockjob.FoldFailed(f'{dev}: the commit ended before its '
                                  f'pivot')
    monkeypatch.setattr(sourcetops.blockjob, 'commit_active',
                        pivot_then_fail)
    monkeypatch.setattr('time.sleep', lambda seconds: None)
    sourcetops.fold_tops_back(env, inst, None)
    assert timeouts == [transport.deadlines(env.conf).for_size(3 * GiB)]
    assert sorted(os.listdir(inst.dir)) == ['console.log.top', 'disk']
    assert guest.call_names == ['resume'] and not guest.paused


def test_a_fold_that_keeps_the_guest_paused_gives_up_at_its_deadline(
        tmp_path, monkeypatch):
    """Tried again only until the deadline a commit of the tops has
    (``command_timeout`` plus their size at ``min_transfer_rate_mib``);
    then the guest stays paused beside its top (the safety rule) and
    the failure is the caller's."""
    inst, xml = _instance(tmp_path, 'disk.top')
    guest = FakeGuest(UUID, 'g', xml)
    env = _env(FakeHost([guest]), _Img())
    clock, tries = [0.0], []

    def fail_paused(guest_, dev, base, timeout, drop_top):
        tries.append(clock[0])
        guest.paused = True
        raise blockjob.FoldFailed(f'{dev}: cannot tell whether it pivoted')
    monkeypatch.setattr(sourcetops.blockjob, 'commit_active', fail_paused)
    monkeypatch.setattr('time.monotonic', lambda: clock[0])
    monkeypatch.setattr('time.sleep',
                        lambda seconds: clock.__setitem__(0, clock[0] +
                                                          seconds))
    with pytest.raises(blockjob.FoldFailed, match='cannot tell'):
        sourcetops.fold_tops_back(env, inst, None)
    # tried again and again, never beyond the deadline, up to near it
    assert len(tries) > 1 and tries[-1] <= 60 and clock[0] >= 50
    assert guest.paused and 'resume' not in guest.call_names
    assert os.path.exists(inst.path('disk.top'))


def test_a_failed_fold_that_left_the_guest_running_is_not_retried(
        tmp_path, monkeypatch):
    """Before its pivot a failed commit resumes the guest on its top, as
    it was: nothing waits on it, the failure is the caller's at once."""
    inst, xml = _instance(tmp_path, 'disk.top')
    guest = FakeGuest(UUID, 'g', xml)
    tries = []

    def fail(guest_, dev, base, timeout, drop_top):
        tries.append(dev)
        raise blockjob.FoldFailed(f'{dev}: the pivot was refused')
    monkeypatch.setattr(sourcetops.blockjob, 'commit_active', fail)
    with pytest.raises(blockjob.FoldFailed):
        sourcetops.fold_tops_back(_env(FakeHost([guest]), _Img()), inst,
                                  None)
    assert tries == ['vda']
