"""A migrate killed at every step, then recovered: real files, fake libvirt.

The crash is a BaseException no plan catches, raised right after the
journal says the step started (the step never ran) or right after it ran
(the journal does not know it finished): the two ends of each step.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types

import pytest

from resizedriver import exception
from resizedriver import journal
from resizedriver import recovery
from resizedriver.engine import ResizeEngine
from resizedriver.model import Destination, Flavor, MiB
from resizedriver.operations.migrate import MigrateDiskAndPowerOff
from resizedriver.sparse import partial_path
from resizedriver.transport import LocalTransport
from tests.unit.conftest import sha256
from tests.unit.fakes import FakeGuest, FakeHost

GROW = Flavor(vcpus=2, memory_mib=512, root_bytes=16 * MiB,
              ephemeral_bytes=4 * MiB, swap_bytes=0)
SAME_PATH_STEPS = ['write resize record', 'power off',
                   'move instance dir to _resize', 'create instance dir',
                   'copy disks']
OTHER_PATH_STEPS = ['copy backing files', 'create destination dir',
                    'write resize record', 'power off',
                    'move instance dir to _resize', 'copy disks']


class Crash(BaseException):
    pass


def crashing(plan, at: str, after: bool):
    def die(step):
        def do():
            if after:
                step.do()
            raise Crash(step.name)
        return do
    plan.steps = [dataclasses.replace(s, do=die(s)) if s.name == at else s
                  for s in plan.steps]
    return plan


def run_until_crash(conf, guest, instance, dest, at, after):
    engine = ResizeEngine(conf, host=FakeHost([guest]))
    op = MigrateDiskAndPowerOff(engine.env, instance.uuid, GROW, dest,
                                LocalTransport())
    plan = crashing(op.plan(), at, after)
    with pytest.raises(Crash):
        engine.run(plan, op.journal_context())
    return engine


def check_recovered(engine, guest, instance, before, dest_dir):
    [result] = engine.recover()
    assert result.error is None, result
    assert result.action == 'rolled back'
    assert instance.hashes() == before             # same bytes, same files
    assert not os.path.exists(instance.resize_dir)
    if dest_dir:
        assert not os.path.exists(dest_dir)
    assert guest.running
    assert engine.journals.find() == []
    assert engine.recover() == []                  # nothing left to do


@pytest.mark.parametrize('after', [False, True], ids=['start', 'end'])
@pytest.mark.parametrize('at', SAME_PATH_STEPS)
def test_same_path_crash_at_each_step(conf, instance, instances, at, after):
    before = instance.hashes()
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    engine = run_until_crash(conf, guest, instance,
                             Destination(None, instances, True), at, after)
    assert engine.journals.find()[0].interrupted_at == at
    check_recovered(engine, guest, instance, before, None)
    # and the same resize then goes through
    retry = run_and_finish_migrate(engine, instance,
                                   Destination(None, instances, True))
    assert retry.copies_verified


@pytest.mark.parametrize('after', [False, True], ids=['start', 'end'])
@pytest.mark.parametrize('at', OTHER_PATH_STEPS)
def test_other_path_crash_at_each_step(conf, instance, tmp_path, at, after):
    dest = tmp_path / 'dest'
    dest.mkdir()
    before = instance.hashes()
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    engine = run_until_crash(conf, guest, instance,
                             Destination(None, str(dest), False), at, after)
    check_recovered(engine, guest, instance, before,
                    str(dest / instance.uuid))
    # a verified backing copy may stay (shared cache), a partial may not
    base = dest / '_base'
    for name in os.listdir(base) if base.exists() else []:
        assert sha256(str(base / name)) == \
            sha256(os.path.join(instance.instances, '_base', name))
    retry = run_and_finish_migrate(engine, instance,
                                   Destination(None, str(dest), False))
    assert retry.copies_verified


def run_and_finish_migrate(engine, instance, dest):
    return engine.migrate_disk_and_power_off(instance.uuid, GROW, dest)


def test_a_crash_mid_copy_leaves_no_partial_file(conf, instance, tmp_path,
                                                 monkeypatch):
    """Killed inside the copy of the second disk: recovery removes the
    dest dir with the partial file; the source is as it was."""
    dest = tmp_path / 'dest'
    dest.mkdir()
    before = instance.hashes()
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    engine = ResizeEngine(conf, host=FakeHost([guest]))
    copies = []
    real_copy = LocalTransport.copy_file

    def copy_then_die(self, src, dst, progress=None, *, owner, prepare=None):
        copies.append(dst)
        if len(copies) == 3:
            with open(partial_path(dst, owner), 'wb') as f:
                f.write(b'half')
            raise Crash(dst)
        real_copy(self, src, dst, progress, owner=owner, prepare=prepare)

    monkeypatch.setattr(LocalTransport, 'copy_file', copy_then_die)
    with pytest.raises(Crash):
        engine.migrate_disk_and_power_off(
            instance.uuid, GROW, Destination(None, str(dest), False))
    monkeypatch.undo()
    check_recovered(engine, guest, instance, before, str(dest / instance.uuid))


def test_new_operations_wait_for_recovery(conf, instance, instances):
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    engine = run_until_crash(conf, guest, instance,
                             Destination(None, instances, True),
                             'copy disks', False)
    with pytest.raises(exception.RecoveryNeeded):
        engine.finish_revert_migration(instance.uuid)
    assert engine.recover(instance.uuid)[0].error is None


def test_recovery_of_a_guest_that_was_off_leaves_it_off(conf, instance,
                                                        instances):
    before = instance.hashes()
    guest = FakeGuest(instance.uuid, 'g', instance.xml, running=False)
    engine = run_until_crash(conf, guest, instance,
                             Destination(None, instances, True),
                             'copy disks', True)
    engine.recover()
    assert not guest.running
    assert instance.hashes() == before


REVERT_STEPS = ['stop resized guest', 'move _resize back',
                'define source domain', 'plug VIFs', 'start guest',
                'remove resize record']


@pytest.mark.parametrize('at', REVERT_STEPS)
def test_revert_killed_after_each_step_is_completed(conf, instance,
                                                    instances, at,
                                                    monkeypatch):
    """Revert is completed, not undone: recovery runs again every step
    the journal lacks as done, each on its own (no state from the ones
    before it)."""
    monkeypatch.setattr('resizedriver.vif.plug', lambda vifs, uuid: None)
    before = instance.hashes()
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    engine = ResizeEngine(conf, host=FakeHost([guest]))
    engine.migrate_disk_and_power_off(instance.uuid, GROW,
                                      Destination(None, instances, True))
    real_done = journal.Journal.done

    def die_after(self, step):
        if step == at:
            raise Crash(step)
        real_done(self, step)
    monkeypatch.setattr(journal.Journal, 'done', die_after)
    with pytest.raises(Crash):
        engine.finish_revert_migration(instance.uuid)
    monkeypatch.setattr(journal.Journal, 'done', real_done)

    [result] = engine.recover()
    assert result.error is None, result
    assert result.action == 'completed'
    assert instance.hashes() == before
    assert not os.path.exists(instance.resize_dir)
    assert engine.env.host.lookup(instance.uuid).running
    assert engine.journals.find() == []


def crash_with_impl(conf, guest, instance, instances, impl):
    """A same-path migrate killed at 'copy disks', journaled as ``impl``
    had run it."""
    engine = ResizeEngine(conf, host=FakeHost([guest]))
    op = MigrateDiskAndPowerOff(engine.env, instance.uuid, GROW,
                                Destination(None, instances, True),
                                LocalTransport())
    plan = crashing(op.plan(), 'copy disks', False)
    with pytest.raises(Crash):
        engine.run(plan, dict(op.journal_context(), impl=impl))
    return engine


class OtherImplMigrate(MigrateDiskAndPowerOff):
    """Another implementation's migrate: its recovery leaves the guest
    off (as Nova's does, whose start-up starts it)."""
    rebuilt: list = []

    @classmethod
    def from_journal(cls, env, context):
        op = super().from_journal(env, context)
        op.was_running = False
        cls.rebuilt.append(context['impl'])
        return op


def test_recovery_uses_the_implementation_the_journal_names(
        conf, instance, instances, monkeypatch):
    impl = types.ModuleType('rdtest_other_impl')
    impl.OPERATIONS = {'migrate_disk_and_power_off': OtherImplMigrate}
    monkeypatch.setitem(sys.modules, impl.__name__, impl)
    monkeypatch.setitem(recovery.IMPLEMENTATIONS, 'other', impl.__name__)
    before = instance.hashes()
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    engine = crash_with_impl(conf, guest, instance, instances, 'other')

    [result] = engine.recover()
    assert result.error is None, result
    assert OtherImplMigrate.rebuilt == ['other']
    assert not guest.running                  # its policy, not the engine's
    assert instance.hashes() == before
    assert engine.journals.find() == []


def test_a_journal_of_an_unknown_implementation_is_kept(conf, instance,
                                                        instances):
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    engine = crash_with_impl(conf, guest, instance, instances, 'nosuch')

    [result] = engine.recover()
    assert "unknown implementation 'nosuch'" in result.error
    assert os.path.isdir(instance.resize_dir)   # nothing done by guess
    assert not guest.running
    assert len(engine.journals.find()) == 1


def test_an_implementation_that_cannot_be_loaded_is_named(
        conf, instance, instances, monkeypatch):
    monkeypatch.setitem(recovery.IMPLEMENTATIONS, 'absent',
                        'rdtest_no_such_module')
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    engine = crash_with_impl(conf, guest, instance, instances, 'absent')

    [result] = engine.recover()
    assert 'written by the absent implementation' in result.error
    assert len(engine.journals.find()) == 1
