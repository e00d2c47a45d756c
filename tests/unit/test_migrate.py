"""migrate_disk_and_power_off on real files, with a fake libvirt."""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import threading
import time

import pytest
from oslo_config import cfg

from resizedriver import exception
from resizedriver import transport
from resizedriver.engine import ResizeEngine
from resizedriver.layout import RECORD_NAME
from resizedriver.model import Destination, DiskRole, Flavor, MiB
from resizedriver.operations.migrate import MigrateDiskAndPowerOff
from resizedriver.record import ResizeRecord
from resizedriver.transport import LocalTransport
from tests.unit.conftest import make_instance, qemu_img, sha256, write_at
from tests.unit.fakes import FakeGuest, FakeHost

GROW = Flavor(vcpus=2, memory_mib=512, root_bytes=16 * MiB,
              ephemeral_bytes=4 * MiB, swap_bytes=0)
COPIED = ['disk', 'disk.info', 'disk.local', 'kernel']


def guest_for(inst, running=True) -> FakeGuest:
    return FakeGuest(inst.uuid, 'guest-1', inst.xml, running=running)


def same_host(instances) -> Destination:
    return Destination(None, instances, same_hypervisor=True)


class FailingCopy(LocalTransport):
    """Copies for real ``ok`` times, then fails."""

    def __init__(self, ok: int) -> None:
        self.ok = ok
        self.calls: list[str] = []

    def copy_file(self, src, dst, progress=None, *, owner, prepare=None):
        self.calls.append(dst)
        if len(self.calls) > self.ok:
            raise exception.CommandFailed(f'copy to {dst} failed')
        super().copy_file(src, dst, progress, owner=owner, prepare=prepare)


def test_same_host_plan_moves_and_copies(instance, make_env, instances):
    before = instance.hashes()
    guest = guest_for(instance)
    progress = []
    env = make_env(guest)
    env.progress = lambda name, done, total: progress.append(name)
    op = MigrateDiskAndPowerOff(env, instance.uuid, GROW,
                                same_host(instances), LocalTransport())
    plan = op.plan()
    assert plan.step_names == ['write resize record', 'power off',
                               'move instance dir to _resize',
                               'create instance dir', 'copy disks']
    plan.run()

    # the kept source copy is byte for byte the instance as it was
    kept = instance.hashes(instance.resize_dir)
    assert {n: h for n, h in kept.items() if n != RECORD_NAME} == before
    # the new instance dir holds copies of the disks, not the record or
    # the console log
    assert sorted(os.listdir(instance.dir)) == COPIED
    now = instance.hashes()
    assert all(now[n] == before[n] for n in COPIED)
    # the copy is sparse, as the source was
    assert os.stat(instance.path('disk.local')).st_blocks * 512 < \
        2 * MiB
    assert guest.calls == [('power_off', 7, 3)]
    assert set(progress) >= {'disk', 'disk.local', 'kernel'}

    rec = ResizeRecord.read(os.path.join(instance.resize_dir, RECORD_NAME))
    assert rec == op.record
    assert rec.uuid == instance.uuid
    assert rec.name == 'guest-1'
    assert rec.was_running is True
    assert rec.shared_path is True
    assert rec.new_flavor == GROW
    assert rec.old_flavor == Flavor(1, 256, 8 * MiB, 4 * MiB, 0)
    assert rec.source_xml == instance.xml
    assert {d.name for d in rec.disks} == {'disk', 'disk.local', 'kernel'}


def test_other_path_copies_backing_file(instance, make_env, instances,
                                        tmp_path):
    dest_path = tmp_path / 'dest-instances'
    dest_path.mkdir()
    before = instance.hashes()
    guest = guest_for(instance)
    op = MigrateDiskAndPowerOff(
        make_env(guest), instance.uuid, GROW,
        Destination(None, str(dest_path), same_hypervisor=True),
        LocalTransport())
    plan = op.plan()
    assert plan.step_names == ['copy backing files',
                               'create destination dir',
                               'write resize record', 'power off',
                               'move instance dir to _resize', 'copy disks']
    plan.run()
    dest_dir = dest_path / instance.uuid
    assert sorted(os.listdir(dest_dir)) == COPIED
    assert all(sha256(str(dest_dir / n)) == before[n] for n in COPIED)
    base = [d for d in op.disks if d.role is DiskRole.ROOT][0].backing_file
    copied_base = dest_path / '_base' / os.path.basename(base)
    assert sha256(str(copied_base)) == sha256(base)
    assert not os.path.exists(instance.dir)
    assert os.path.isfile(os.path.join(instance.resize_dir, RECORD_NAME))
    assert op.record.shared_path is False


def test_engine_runs_the_same_plan(instance, conf, instances):
    guest = guest_for(instance)
    engine = ResizeEngine(conf, host=FakeHost([guest]))
    rec = engine.migrate_disk_and_power_off(instance.uuid, GROW,
                                            same_host(instances))
    assert rec.new_flavor == GROW
    assert engine.pending() == [rec]
    assert guest.call_names == ['power_off']


def test_a_migrate_runs_in_one_session_of_its_transport(
        instance, conf, instances, tmp_path, monkeypatch):
    """Validation, copies and the commands made with the guest off all
    run inside the destination transport's one session (over ssh: one
    connection for them all, ``SshTransport.session``)."""
    events: list[str] = []

    class Recording(LocalTransport):
        @contextlib.contextmanager
        def session(self):
            events.append('open')
            yield
            events.append('closed')

        def execute(self, *argv, **kw):
            events.append('command')
            return super().execute(*argv, **kw)

    monkeypatch.setattr(transport, 'for_host',
                        lambda host, conf: Recording())
    engine = ResizeEngine(conf, host=FakeHost([guest_for(instance)]))
    dest = tmp_path / 'other-instances'
    dest.mkdir()
    engine.migrate_disk_and_power_off(
        instance.uuid, GROW, Destination(None, str(dest), True))
    assert events[0] == 'open' and events[-1] == 'closed', events
    assert events.count('open') == 1 and 'command' in events, events


def _assert_untouched(instance, before):
    assert not os.path.exists(instance.resize_dir)
    assert instance.hashes() == before
    assert not os.path.exists(instance.path(RECORD_NAME))


@pytest.mark.parametrize('flavor', [
    Flavor(1, 256, root_bytes=8 * MiB - 512, ephemeral_bytes=4 * MiB),
    Flavor(1, 256, root_bytes=16 * MiB, ephemeral_bytes=2 * MiB)])
def test_shrink_refused_before_power_off(instance, make_env, instances,
                                         flavor):
    before = instance.hashes()
    guest = guest_for(instance)
    op = MigrateDiskAndPowerOff(make_env(guest), instance.uuid, flavor,
                                same_host(instances), LocalTransport())
    with pytest.raises(exception.DiskShrinkRefused):
        op.plan().run()
    assert guest.calls == []
    assert guest.running
    _assert_untouched(instance, before)


def test_pending_resize_refused(instance, make_env, instances):
    os.mkdir(instance.resize_dir)
    before = instance.hashes()
    guest = guest_for(instance)
    op = MigrateDiskAndPowerOff(make_env(guest), instance.uuid, GROW,
                                same_host(instances), LocalTransport())
    with pytest.raises(exception.ResizePending):
        op.plan()
    assert guest.calls == []
    assert instance.hashes() == before
    assert os.listdir(instance.resize_dir) == []


def test_unknown_domain_refused(instance, make_env, instances):
    op = MigrateDiskAndPowerOff(make_env(), instance.uuid, GROW,
                                same_host(instances), LocalTransport())
    with pytest.raises(exception.ResizeRefused, match='no libvirt domain'):
        op.plan()


def test_unsafe_disk_refused_before_power_off(instance, make_env,
                                              instances, tmp_path):
    outside = tmp_path / 'outside'
    outside.write_bytes(b'x' * 4096)
    os.unlink(instance.path('kernel'))
    os.symlink(outside, instance.path('kernel'))
    guest = guest_for(instance)
    op = MigrateDiskAndPowerOff(make_env(guest), instance.uuid, GROW,
                                same_host(instances), LocalTransport())
    with pytest.raises(exception.UnsafePath):
        op.plan()
    assert guest.calls == []
    assert not os.path.exists(instance.resize_dir)


def test_insufficient_space_refused(instance, make_env, instances,
                                    monkeypatch):
    guest = guest_for(instance)
    transport = LocalTransport()
    monkeypatch.setattr(transport, 'free_bytes', lambda path: 1024)
    op = MigrateDiskAndPowerOff(make_env(guest), instance.uuid, GROW,
                                same_host(instances), transport)
    with pytest.raises(exception.InsufficientSpace):
        op.plan()
    assert guest.calls == []


def test_copy_failure_rolls_back_same_host(instance, make_env, instances):
    before = instance.hashes()
    guest = guest_for(instance)
    transport = FailingCopy(ok=0)
    op = MigrateDiskAndPowerOff(make_env(guest), instance.uuid, GROW,
                                same_host(instances), transport)
    with pytest.raises(exception.ResizeFailed) as ei:
        op.plan().run()
    assert ei.value.step == 'copy disks'
    assert ei.value.rolled_back is True
    assert len(transport.calls) == 1
    _assert_untouched(instance, before)
    assert guest.call_names == ['power_off', 'start']
    assert guest.running


def test_copy_failure_rolls_back_other_path(instance, make_env, instances,
                                            tmp_path):
    dest_path = tmp_path / 'dest-instances'
    dest_path.mkdir()
    before = instance.hashes()
    guest = guest_for(instance)
    # the backing file and the first disk copy fine, the second fails
    transport = FailingCopy(ok=2)
    op = MigrateDiskAndPowerOff(
        make_env(guest), instance.uuid, GROW,
        Destination(None, str(dest_path), same_hypervisor=False), transport)
    with pytest.raises(exception.ResizeFailed) as ei:
        op.plan().run()
    assert ei.value.step == 'copy disks'
    assert ei.value.rolled_back is True
    assert len(transport.calls) == 3
    _assert_untouched(instance, before)
    assert not os.path.exists(dest_path / instance.uuid)
    # the verified backing copy stays (other instances may use it by now),
    # our partial files do not
    base = [d for d in op.disks if d.role is DiskRole.ROOT][0].backing_file
    assert os.listdir(dest_path / '_base') == [os.path.basename(base)]
    assert sha256(str(dest_path / '_base' / os.path.basename(base))) == \
        sha256(base)
    assert guest.call_names == ['power_off', 'start']


def test_rollback_does_not_start_a_guest_that_was_off(instance, make_env,
                                                      instances):
    before = instance.hashes()
    guest = guest_for(instance, running=False)
    op = MigrateDiskAndPowerOff(make_env(guest), instance.uuid, GROW,
                                same_host(instances), FailingCopy(ok=0))
    with pytest.raises(exception.ResizeFailed):
        op.plan().run()
    assert 'start' not in guest.call_names
    assert not guest.running
    _assert_untouched(instance, before)


def test_power_off_failure_rolls_back_record(instance, make_env, instances):
    before = instance.hashes()
    guest = guest_for(instance)

    def broken_power_off(timeout, retry):
        raise exception.ResizeDriverError('libvirt went away')
    guest.power_off = broken_power_off
    op = MigrateDiskAndPowerOff(make_env(guest), instance.uuid, GROW,
                                same_host(instances), LocalTransport())
    with pytest.raises(exception.ResizeFailed) as ei:
        op.plan().run()
    assert ei.value.step == 'power off'
    _assert_untouched(instance, before)
    assert guest.call_names == []


def test_copy_that_reads_back_different_rolls_back(instance, make_env,
                                                  instances, corrupting_wire):
    """The copy is checked against the hash of the bytes sent, so a bad
    wire or disk is still caught: nothing goes on record as verified and
    everything is undone."""
    before = instance.hashes()
    guest = guest_for(instance)
    op = MigrateDiskAndPowerOff(make_env(guest), instance.uuid, GROW,
                                same_host(instances), LocalTransport())
    with pytest.raises(exception.ResizeFailed, match='differs') as ei:
        op.plan().run()
    assert ei.value.step == 'copy disks'
    assert ei.value.rolled_back is True
    assert op.record.copies_verified is False
    _assert_untouched(instance, before)
    assert guest.running


def test_verified_copies_are_on_record(instance, make_env, instances):
    guest = guest_for(instance)
    op = MigrateDiskAndPowerOff(make_env(guest), instance.uuid, GROW,
                                same_host(instances), LocalTransport())
    op.plan().run()
    rec = ResizeRecord.read(os.path.join(instance.dir + '_resize',
                                         RECORD_NAME))
    assert rec.copies_verified is True


def test_confirm_refuses_to_delete_unverified_source(instance, make_env,
                                                     instances):
    from resizedriver.operations.confirm import ConfirmMigration
    guest = guest_for(instance)
    env = make_env(guest)
    op = MigrateDiskAndPowerOff(env, instance.uuid, GROW,
                                same_host(instances), LocalTransport())
    op.plan().run()
    rec = op.record
    rec.copies_verified = False
    with pytest.raises(exception.ResizeRefused, match='never verified'):
        ConfirmMigration(env, rec).plan().run()
    assert os.path.isdir(instance.dir + '_resize')


def test_the_chosen_plan_is_on_record_and_in_the_journal(instance, conf,
                                                         instances):
    guest = guest_for(instance)
    engine = ResizeEngine(conf, host=FakeHost([guest]))
    op = MigrateDiskAndPowerOff(engine.env, instance.uuid, GROW,
                                same_host(instances), LocalTransport())
    plan = op.plan()
    assert op.journal_context()['plan'] == 'copy'
    assert op.journal_context()['topology'] == 'same-host'
    engine.run(plan, op.journal_context())
    assert (op.record.plan, op.record.topology.value) == ('copy',
                                                          'same-host')


def test_files_are_copied_in_parallel_and_none_begins_after_a_failure(
        instance, make_env, conf, tmp_path):
    """``parallel_copies`` copies at once (each waits at a barrier only
    the other can lift); one failing does not cut the other short, no
    copy begins after it, and its error is what the step raises."""
    conf.set_override('parallel_copies', 2, group='resizedriver')
    barrier = threading.Barrier(2, timeout=10)
    begun, ended = [], []

    class Meeting(LocalTransport):
        def copy_file(self, src, dst, progress=None, *, owner, prepare=None):
            begun.append(os.path.basename(dst))
            barrier.wait()
            if dst.endswith('disk'):
                raise exception.CommandFailed(f'copy to {dst} failed')
            time.sleep(0.2)         # the failure is in by the time we end
            super().copy_file(src, dst, progress, owner=owner,
                              prepare=prepare)
            ended.append(os.path.basename(dst))

    op = MigrateDiskAndPowerOff(make_env(guest_for(instance)), instance.uuid,
                                GROW, same_host(str(tmp_path)), Meeting())
    with pytest.raises(exception.CommandFailed, match='disk failed'):
        op.copy_all([(instance.path(n), str(tmp_path / n))
                     for n in ('disk', 'disk.local', 'kernel', 'disk.info')])
    assert (begun, ended) == (['disk', 'disk.local'], ['disk.local'])


def test_ctrl_c_during_parallel_copies_waits_for_those_under_way(
        instance, make_env, conf, tmp_path, monkeypatch):
    """The undo that follows must not race a copy still writing: the
    interrupt comes out only once the copies under way ended, and no
    other begins."""
    from resizedriver.operations import migrate as migrate_module
    conf.set_override('parallel_copies', 2, group='resizedriver')
    begun, ended = [], []

    class Slow(LocalTransport):
        def copy_file(self, src, dst, progress=None, *, owner, prepare=None):
            begun.append(os.path.basename(dst))
            time.sleep(0.3)
            super().copy_file(src, dst, progress, owner=owner,
                              prepare=prepare)
            ended.append(os.path.basename(dst))

    def interrupted(jobs, *args, **kwargs):
        time.sleep(0.1)
        raise KeyboardInterrupt

    monkeypatch.setattr(migrate_module.futures, 'wait', interrupted)
    op = MigrateDiskAndPowerOff(make_env(guest_for(instance)), instance.uuid,
                                GROW, same_host(str(tmp_path)), Slow())
    with pytest.raises(KeyboardInterrupt):
        op.copy_all([(instance.path(n), str(tmp_path / n))
                     for n in ('disk', 'disk.local', 'kernel', 'disk.info')])
    assert sorted(begun) == sorted(ended) == ['disk', 'disk.local']


def test_the_swaps_base_is_neither_copied_nor_compared(instances, make_env,
                                                        tmp_path):
    """Nova's disk.swap is a qcow2 over ``_base/swap_<MiB>``, made by
    ``mkswap`` on each host (a UUID of its own): every host's differs.
    Swap is made anew at the destination, never copied, so its base is
    not the destination's to have: a move there is not refused for it."""
    inst = make_instance(instances, swap_mib=8)
    base = os.path.join(instances, '_base', 'swap_8')
    qemu_img('create', '-f', 'raw', base, '8M')
    write_at(base, 1024, b'SWAPSPACE2 of host A')
    qemu_img('create', '-f', 'qcow2', '-F', 'raw', '-b', base,
             inst.path('disk.swap'), '8M')
    inst.xml = inst.xml.replace(
        "type='raw' cache='none'/>\n      <source file='%s'" %
        inst.path('disk.swap'),
        "type='qcow2' cache='none'/>\n      <source file='%s'" %
        inst.path('disk.swap'))
    dest_path = tmp_path / 'dest-instances'
    (dest_path / '_base').mkdir(parents=True)
    theirs = dest_path / '_base' / 'swap_8'
    qemu_img('create', '-f', 'raw', str(theirs), '8M')
    write_at(str(theirs), 1024, b'SWAPSPACE2 of host B')

    op = MigrateDiskAndPowerOff(
        make_env(guest_for(inst)), inst.uuid, GROW,
        Destination(None, str(dest_path), same_hypervisor=True),
        LocalTransport())
    op.plan()
    swap = next(d for d in op.disks if d.role is DiskRole.SWAP)
    assert (swap.format, swap.backing_file) == ('qcow2', base)
    assert base not in op.backing_to_copy
    assert op.backing_to_copy           # the root disk's still is


def test_copy_threads_log_with_the_callers_request_and_instance(
        instance, make_env, conf, tmp_path, monkeypatch):
    """oslo.context keeps the request context thread-local, and oslo.log
    takes the request id from there: a line logged in a copy running in
    a thread of its own (``parallel_copies``) must still name the request
    of the call (Nova's ``req-...``) and the instance."""
    from oslo_context import context as oslo_context
    from oslo_log import formatters
    from oslo_log import log as oslo_log
    logging_conf = cfg.ConfigOpts()
    oslo_log.register_options(logging_conf)
    logging_conf([])
    conf.set_override('parallel_copies', 2, group='resizedriver')
    lines: list[str] = []

    class Collect(std_logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(formatters.ContextFormatter(config=logging_conf))
    logger = std_logging.getLogger('resizedriver.test-copy')
    logger.addHandler(handler)
    logger.setLevel(std_logging.INFO)
    log = oslo_log.getLogger('resizedriver.test-copy')

    class Logging(LocalTransport):
        def copy_file(self, src, dst, progress=None, *, owner, prepare=None):
            log.info('copying %s', os.path.basename(dst),
                     instance_uuid=owner)
            super().copy_file(src, dst, progress, owner=owner,
                              prepare=prepare)

    # the calling thread's context, as Nova's RPC dispatch stores it
    # (dropped again after the test)
    monkeypatch.setattr(oslo_context._request_store, 'context', None,
                        raising=False)
    oslo_context.RequestContext(request_id='req-resize-42')
    try:
        op = MigrateDiskAndPowerOff(make_env(guest_for(instance)),
                                    instance.uuid, GROW,
                                    same_host(str(tmp_path)), Logging())
        op.copy_all([(instance.path(n), str(tmp_path / n))
                     for n in ('disk', 'disk.local')])
    finally:
        logger.removeHandler(handler)
    assert len(lines) == 2
    for line in lines:
        assert 'req-resize-42' in line, line
        assert f'[instance: {instance.uuid}]' in line, line
