"""The journal and the plan's use of it: what is on disk at each moment."""

from __future__ import annotations

import json
import os

import pytest

from resizedriver import exception
from resizedriver.journal import DONE, STARTED, Journal, JournalStore
from resizedriver.plan import Plan, Step

UUID = '11111111-2222-3333-4444-555555555555'


class Crash(BaseException):
    """The process dying: nothing in the plan may catch it."""


@pytest.fixture
def store(tmp_path) -> JournalStore:
    return JournalStore(str(tmp_path), 'host-a')


def on_disk(store: JournalStore) -> list[list]:
    [journal] = store.find(UUID)
    return journal.steps


def test_each_step_is_on_disk_as_started_before_it_runs(store):
    seen = []
    plan = Plan('op', UUID, [
        Step('a', lambda: seen.append(on_disk(store)), lambda: None),
        Step('b', lambda: seen.append(on_disk(store)))])
    plan.run(store.open('op', UUID, {'k': 1}))
    assert seen == [[['a', STARTED, True]],
                    [['a', DONE, True], ['b', STARTED, False]]]
    assert store.find(UUID) == []          # closed on success


def test_a_crash_leaves_the_journal_saying_where(store):
    def crash():
        raise Crash()
    plan = Plan('op', UUID, [Step('a', lambda: None), Step('b', crash)])
    with pytest.raises(Crash):
        plan.run(store.open('op', UUID, {'k': 1}))
    [journal] = store.find(UUID)
    assert journal.interrupted_at == 'b'
    assert journal.finished == {'a'}
    assert journal.context == {'k': 1}
    assert not os.path.exists(journal.path + '.tmp')


def test_clean_rollback_closes_it_incomplete_keeps_it(store):
    def boom():
        raise RuntimeError('boom')

    def undo_fails():
        raise RuntimeError('undo broke')
    with pytest.raises(exception.ResizeFailed):
        Plan('op', UUID, [Step('a', lambda: None, lambda: None),
                          Step('b', boom)]).run(store.open('op', UUID, {}))
    assert store.find(UUID) == []
    with pytest.raises(exception.ResizeFailed) as ei:
        Plan('op', UUID, [Step('a', lambda: None, undo_fails),
                          Step('b', boom)]).run(store.open('op', UUID, {}))
    assert ei.value.rolled_back is False
    [journal] = store.find(UUID)
    assert journal.undo_incomplete


def test_forward_plan_failure_keeps_the_journal(store):
    def boom():
        raise RuntimeError('boom')
    with pytest.raises(exception.ResizeFailed):
        Plan('op', UUID, [Step('a', lambda: None), Step('b', boom)],
             forward=True).run(store.open('op', UUID, {}))
    [journal] = store.find(UUID)
    assert journal.interrupted_at == 'b'


def test_a_refusal_at_the_first_step_leaves_no_journal(store):
    def refuse():
        raise exception.ResizeRefused('no')
    with pytest.raises(exception.ResizeRefused):
        Plan('op', UUID, [Step('a', refuse)]).run(store.open('op', UUID, {}))
    assert store.find(UUID) == []


def test_roll_back_undoes_begun_steps_interrupted_one_too(store):
    log = []
    steps = [Step(n, lambda: None, lambda n=n: log.append(n))
             for n in 'abc']
    journal = store.open('op', UUID, {})
    journal.started('a', True)
    journal.done('a')
    journal.started('b', True)
    assert Plan('op', UUID, steps).roll_back(journal) == 2
    assert log == ['b', 'a']
    assert store.find(UUID) == []


def test_roll_back_refuses_to_guess_at_unknown_steps(store):
    journal = store.open('op', UUID, {})
    journal.started('needs undo', True)
    journal.done('needs undo')
    journal.started('no undo', False)
    with pytest.raises(exception.ResizeDriverError, match='needs undo'):
        Plan('op', UUID, [Step('a', lambda: None)]).roll_back(journal)
    assert store.find(UUID) != []          # kept for a later version


def test_roll_back_skips_unknown_steps_that_need_no_undo(store):
    log = []
    journal = store.open('op', UUID, {})
    for name in ('a', 'nova only'):
        journal.started(name, name == 'a')
        journal.done(name)
    Plan('op', UUID, [Step('a', lambda: None, lambda: log.append('a'))]) \
        .roll_back(journal)
    assert log == ['a']


def test_roll_forward_runs_what_is_not_done(store):
    log = []
    steps = [Step(n, lambda n=n: log.append(n)) for n in 'abc']
    journal = store.open('op', UUID, {})
    journal.started('a', False)
    journal.done('a')
    journal.started('b', False)
    assert Plan('op', UUID, steps, forward=True).roll_forward(journal) == 2
    assert log == ['b', 'c']
    assert store.find(UUID) == []


def test_open_refuses_while_an_interrupted_operation_waits(store):
    store.open('migrate_disk_and_power_off', UUID, {})
    with pytest.raises(exception.RecoveryNeeded, match='recover'):
        store.open('finish_revert_migration', UUID, {})
    with pytest.raises(exception.RecoveryNeeded):
        store.open('resize', UUID, {})


def test_the_outer_resize_journal_lets_engine_ones_run(store):
    store.open('resize', UUID, {})
    store.open('migrate_disk_and_power_off', UUID, {})
    assert {j.operation for j in store.find(UUID)} == {
        'resize', 'migrate_disk_and_power_off'}


def test_other_hosts_journals_are_theirs(store, tmp_path):
    JournalStore(str(tmp_path), 'host-b').open('op', UUID, {})
    assert store.find() == []
    store.open('op', UUID, {})             # no conflict either


@pytest.mark.parametrize('content', [
    '', '{', '[]', json.dumps({'operation': 'op', 'uuid': '../x',
                               'host': 'host-a', 'context': {},
                               'steps': []}),
    json.dumps({'operation': 'op', 'uuid': UUID, 'host': 'host-a',
                'context': {}, 'steps': [['a', 'maybe', True]]}),
])
def test_a_damaged_journal_is_a_clear_error(store, content):
    os.makedirs(store.dir)
    with open(os.path.join(store.dir, f'{UUID}.op.json'), 'w') as f:
        f.write(content)
    with pytest.raises(exception.ResizeDriverError, match='journal'):
        store.find()


def test_journal_round_trips(store):
    journal = store.open('op', UUID, {'x': [1, 2]})
    journal.started('a', True)
    assert Journal.read(journal.path) == journal
