"""Recovering operations a crash interrupted, from their journals.

Each operation says which way it recovers: migrate and finish are rolled
back (the instance returns to the source copy, which they never modify);
confirm and revert are completed (they only go one way once begun).  The
operation is rebuilt from what its journal saved, not from guesses about
the files found.

The journal also says which implementation ran (``impl`` in its context,
absent for the engine's own): the Nova adapter replaces steps with Nova's,
and after a crash its plan, not the engine's, says what to undo or
complete (with no Nova objects at start-up it does only the disk work and
leaves define, VIFs and start to Nova: see ``resizedriver.nova``).  The
implementations are a fixed table, never a module named by the journal,
so a journal cannot make recovery import code.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import time
from typing import Callable, Optional

from oslo_log import log as logging

from resizedriver.env import HostEnv
from resizedriver.journal import Journal
from resizedriver.operations.confirm import ConfirmMigration
from resizedriver.operations.finish import AfterFinish, FinishMigration
from resizedriver.operations.migrate import MigrateDiskAndPowerOff
from resizedriver.operations.revert import FinishRevertMigration
from resizedriver.plan import Plan

LOG = logging.getLogger(__name__)

#: by plan name; the order recovery takes them in for one instance: the
#: destination half before the source half it depends on.
OPERATIONS = {
    'finish_migration': FinishMigration,
    AfterFinish.OPERATION: AfterFinish,
    'migrate_disk_and_power_off': MigrateDiskAndPowerOff,
    'finish_revert_migration': FinishRevertMigration,
    'confirm_migration': ConfirmMigration,
}
#: the journal context key naming the implementation whose plan ran
IMPL = 'impl'
ENGINE = 'engine'
#: implementation -> the module whose ``OPERATIONS`` rebuild its plans
#: (imported when a journal needs it: the CLI on a Nova host, say)
IMPLEMENTATIONS = {ENGINE: __name__, 'nova': 'resizedriver.nova.operations'}


@dataclasses.dataclass
class Recovered:
    """What recovery did with one journal (for the operator and the log)."""

    uuid: str
    operation: str
    interrupted_at: Optional[str]
    action: str = ''
    steps: int = 0
    error: Optional[str] = None

    def __str__(self) -> str:
        where = (f'interrupted at {self.interrupted_at!r}'
                 if self.interrupted_at else 'interrupted between steps')
        if self.error:
            return (f'{self.uuid}: {self.operation} {where}: NOT recovered: '
                    f'{self.error}')
        what = 'undone' if self.action == 'rolled back' else 'run again'
        return (f'{self.uuid}: {self.operation} {where}: {self.action} '
                f'({self.steps} step(s) {what})')


class LoggedProgress:
    """A fold's progress (``env.CopyProgress``) in the log, with its
    instance on every line: at most every ``INTERVAL`` seconds per disk,
    and at the end.  For what runs where no caller shows progress
    (the folds a service's start leaves for later)."""

    INTERVAL = 30.0

    def __init__(self, uuid: str) -> None:
        self.uuid = uuid
        self._last: dict[str, float] = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and \
                now - self._last.get(what, -math.inf) < self.INTERVAL:
            return
        self._last[what] = now
        LOG.info('%s: %d of %d bytes (%d%%)', what, done, total,
                 100 * done // total if total else 100,
                 instance_uuid=self.uuid)


def sort_key(journal: Journal) -> int:
    names = list(OPERATIONS)
    return names.index(journal.operation) if journal.operation in names \
        else len(names)


def _operations(journal: Journal) -> dict:
    """The ``OPERATIONS`` of the implementation that wrote ``journal``."""
    impl = journal.context.get(IMPL, ENGINE)
    module = IMPLEMENTATIONS.get(impl)
    if module is None:
        raise LookupError(f'unknown implementation {impl!r}')
    try:
        return importlib.import_module(module).OPERATIONS
    except ImportError as e:
        raise LookupError(f'it was written by the {impl} implementation, '
                          f'which cannot be loaded here ({e}); recover it '
                          f'where that runs') from e


def recover(env: HostEnv, journal: Journal) -> Recovered:
    """Roll back or complete the operation of ``journal`` with the plan of
    the implementation that ran it (for an integration: what it can do
    without its caller's objects, as its ``recovery_plan`` declares)."""
    try:
        cls = _operations(journal).get(journal.operation)
        if cls is None:
            raise LookupError('unknown operation')
    except LookupError as e:
        return Recovered(journal.uuid, journal.operation,
                         journal.interrupted_at,
                         error=f'{e} in {journal.path}; check the instance '
                               f'by hand, then remove it')
    return run(journal, lambda: cls.from_journal(
        env, journal.context).recovery_plan())


def run(journal: Journal, build_plan: Callable[[], Plan]) -> Recovered:
    """Rebuild the plan of ``journal`` and recover it its own way."""
    result = Recovered(journal.uuid, journal.operation,
                       journal.interrupted_at)
    try:
        plan = build_plan()
        if plan.forward:
            result.action = 'completed'
            result.steps = plan.roll_forward(journal)
        else:
            result.action = 'rolled back'
            result.steps = plan.roll_back(journal)
    except Exception as e:     # one instance must not stop the others
        LOG.exception('Recovery of %s failed', journal.operation,
                      instance_uuid=journal.uuid)
        result.error = str(e)
    return result
