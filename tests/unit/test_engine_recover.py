"""engine.recover with a damaged journal (review #8.12): nova-compute's
init_host calls it, and one bad file must not keep the service down."""

from __future__ import annotations

import dataclasses
import logging
import os

import pytest

from resizedriver import chooser
from resizedriver import stepname
from resizedriver.engine import ResizeEngine
from resizedriver.operations import precopy
from resizedriver.operations.finish import AfterFinish
from tests.unit.fakes import FakeGuest, FakeHost
from tests.unit.test_recovery import run_until_crash
from resizedriver.model import Destination
from tests.unit.test_record import make_record

BAD_UUID = '99999999-2222-3333-4444-555555555555'
FOLD_UUID = '88888888-2222-3333-4444-555555555555'


def test_one_unreadable_journal_does_not_stop_the_others(conf, instance,
                                                         instances):
    before = instance.hashes()
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    engine = run_until_crash(conf, guest, instance,
                             Destination(None, instances, True),
                             'copy disks', True)
    bad = os.path.join(engine.journals.dir,
                       f'{BAD_UUID}.migrate_disk_and_power_off.json')
    with open(bad, 'w') as f:
        f.write('{"torn')

    results = ResizeEngine(conf, host=FakeHost([guest])).recover()

    by_uuid = {r.uuid: r for r in results}
    assert by_uuid[instance.uuid].error is None
    assert instance.hashes() == before and guest.running
    assert 'unreadable journal' in by_uuid[BAD_UUID].error
    assert os.path.exists(bad)          # kept for the operator to look at
    # still refused for the damaged instance, and reported again
    again = engine.recover()
    assert [r.uuid for r in again] == [BAD_UUID] and again[0].error


@pytest.mark.parametrize('running', [True, False])
def test_at_start_a_live_fold_is_left_for_later(conf, instance, instances,
                                                monkeypatch, caplog,
                                                running):
    """init_host ran every interrupted operation's block jobs before Nova
    initialised any instance: a fold, one instance after another, up to
    an hour per disk, while nova-compute reports down.  At start only
    what restores state runs (here: a migrate rolled back); a fold whose
    guest runs on its valid chain is left, and completed after
    (``complete_folds``: the driver runs it in the background), its
    progress logged with the instance on every line.  With the guest
    off (the host rebooted) the fold runs first, offline: Nova may start
    the guest next, on a chain that must be Nova's."""
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    engine = run_until_crash(conf, guest, instance,
                             Destination(None, instances, True),
                             'copy disks', True)
    record = dataclasses.replace(make_record(instances), plan=chooser.PRECOPY,
                                 uuid=FOLD_UUID)
    folded = FakeGuest(FOLD_UUID, 'f', record.source_xml, running=running)
    engine = ResizeEngine(conf, host=FakeHost([guest, folded]))
    after = AfterFinish(engine.env, record)
    engine.journals.open(after.OPERATION, FOLD_UUID,
                         after.journal_context()).started(
                             stepname.FOLD_PRECOPY, False)
    folds = []

    def fold(op) -> None:
        if op.env.progress is not None:
            op.env.progress('disk (fold)', 3, 4)
        folds.append(op.record.uuid)
    monkeypatch.setattr(precopy, 'fold_layers', fold)
    with caplog.at_level(logging.INFO):
        results, later = engine.recover_at_start()
    assert {r.uuid: r.action for r in results}[instance.uuid] == \
        'rolled back'
    assert guest.running and not os.path.exists(instance.resize_dir)
    if not running:
        assert later == [] and folds == [FOLD_UUID]
        assert engine.journals.find() == []
        return
    assert later == [FOLD_UUID] and folds == []
    assert [j.operation for j in engine.journals.find()] == \
        [AfterFinish.OPERATION]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        [result] = engine.complete_folds(later)
    assert (result.action, result.error) == ('completed', None)
    assert folds == [FOLD_UUID] and engine.journals.find() == []
    lines = [r for r in caplog.records if r.name.startswith('resizedriver')]
    assert any('3 of 4 bytes' in r.getMessage() for r in lines), \
        caplog.text
    assert all(getattr(r, 'instance_uuid', None) == FOLD_UUID
               for r in lines), [(r.getMessage(),
                                  getattr(r, 'instance_uuid', None))
                                 for r in lines]
