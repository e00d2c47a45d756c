"""A persistent journal of each running operation, for crash recovery.

Before a step runs, the journal says it started; after, that it is done.
Every change is written atomically (temp file, fsync, rename, fsync the
directory), so after a crash the journal says exactly which steps may have
touched anything: the done ones and at most one started one.  Recovery
(:mod:`resizedriver.recovery`) then rolls the operation back or completes
it, as the operation prescribes, never guessing from the state of disks.

The journals live in ``<instances_path>/resize-journal/``, not in the
instance directory: the very steps they describe rename that directory
(to ``_resize`` and back) and delete it (confirm), so a journal inside it
would move or vanish mid-operation.

Why not taskflow: it was weighed (6.5.0).  Its file backend (``impl_dir``)
writes a logbook in place with ``open(..., 'wb')``, no temp file, fsync or
rename, so a crash can leave a torn logbook; the database backend needs
SQLAlchemy and alembic migrations on every compute node.  Its resumption
re-runs atoms that were RUNNING, while a half-done migrate must be *undone*
step by step.  And it would bring 13 more packages (networkx, pydot,
automaton, futurist, jsonschema, ...) into nova-compute for what is ~100
lines over our ``Plan``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any, Optional

from resizedriver import exception
from resizedriver import fileutil
from resizedriver import layout

JOURNAL_DIR = 'resize-journal'
STARTED = 'started'
DONE = 'done'
#: The orchestrator's whole-resize journal, around the engine's ones, and
#: the engine operations it runs itself (its steps and its undo): nothing
#: else may start while it is there, since the resize may be half done.
OUTER_OPERATIONS = {
    'resize': ('migrate_disk_and_power_off', 'finish_migration',
               'after_finish_migration', 'finish_revert_migration'),
}


@dataclasses.dataclass
class Journal:
    path: str
    operation: str
    uuid: str
    host: str
    #: what the operation needs to be rebuilt for recovery
    context: dict[str, Any]
    #: [step name, STARTED | DONE, needs undo after a crash], in the
    #: order the steps ran
    steps: list[list[Any]] = dataclasses.field(default_factory=list)
    #: an in-process rollback failed part way: recovery must finish it
    undo_incomplete: bool = False

    def _write(self) -> None:
        fileutil.write_atomic(self.path, json.dumps({
            'operation': self.operation, 'uuid': self.uuid,
            'host': self.host, 'context': self.context,
            'steps': self.steps, 'undo_incomplete': self.undo_incomplete,
        }, indent=1), fileutil.PRIVATE)

    def started(self, step: str, needs_undo: bool) -> None:
        self.steps.append([step, STARTED, needs_undo])
        self._write()

    def done(self, step: str) -> None:
        self.steps[-1][1] = DONE
        self._write()

    def save(self) -> None:
        """Write it again as it is now: the operation's ``context`` may
        hold facts its steps learnt while it ran (the operation's own
        dict), which an undo after a crash needs as much as one now."""
        self._write()

    def mark_undo_incomplete(self) -> None:
        self.undo_incomplete = True
        self._write()

    def close(self) -> None:
        """The operation ended cleanly (done, or fully undone)."""
        fileutil.remove_durably(self.path)

    @property
    def begun(self) -> list[str]:
        """Steps that may have changed something, in the order they ran."""
        return [name for name, _state, _undo in self.steps]

    @property
    def needing_undo(self) -> list[str]:
        return [name for name, _state, undo in self.steps if undo]

    @property
    def finished(self) -> set[str]:
        return {name for name, state, _undo in self.steps if state == DONE}

    @property
    def interrupted_at(self) -> Optional[str]:
        return next((n for n, s, _u in self.steps if s == STARTED), None)

    @classmethod
    def read(cls, path: str) -> 'Journal':
        try:
            with open(path) as f:
                d = json.load(f)
            steps = [[str(n), str(s), bool(u)] for n, s, u in d['steps']]
            if any(s not in (STARTED, DONE) for _n, s, _u in steps):
                raise ValueError('unknown step state')
            return cls(path=path, operation=str(d['operation']),
                       uuid=layout.check_uuid(d['uuid']),
                       host=str(d['host']), context=dict(d['context']),
                       steps=steps,
                       undo_incomplete=bool(d.get('undo_incomplete')))
        except (OSError, ValueError, KeyError, TypeError,
                exception.ResizeRefused) as e:
            raise exception.ResizeDriverError(
                f'unreadable journal {path}: {e}; move it away once the '
                f'instance has been checked by hand') from e


class JournalStore:
    """This host's journals under one instances path."""

    def __init__(self, instances_path: str, hostname: str) -> None:
        self.dir = os.path.join(instances_path, JOURNAL_DIR)
        self.hostname = hostname

    def _path(self, uuid: str, operation: str) -> str:
        return os.path.join(self.dir, f'{uuid}.{operation}.json')

    def open(self, operation: str, uuid: str,
             context: dict[str, Any]) -> Journal:
        """Start the journal of a new operation.

        Refused while an interrupted operation on the instance awaits
        recovery: running another on top would build on unknown state.
        An outer journal (the whole resize) lets only the engine
        operations it runs itself start inside it: a confirm between its
        halves would delete the source the domain still runs from.
        """
        for other in self.find(uuid):
            if operation not in OUTER_OPERATIONS.get(other.operation, ()):
                raise exception.RecoveryNeeded(
                    f'an interrupted {other.operation} of {uuid} is in '
                    f'{other.path}: run "resizedriver recover {uuid}" '
                    f'(nova-compute does at start) before anything else')
        os.makedirs(self.dir, exist_ok=True)
        journal = Journal(self._path(uuid, operation), operation, uuid,
                          self.hostname, context)
        journal._write()
        return journal

    def find(self, uuid: Optional[str] = None) -> list[Journal]:
        """This host's journals (of one instance, or all); an unreadable
        one raises: nothing may proceed on guesses about it."""
        journals, unreadable = self.scan(uuid)
        if unreadable:
            raise unreadable[0].error
        return journals

    def scan(self, uuid: Optional[str] = None) \
            -> tuple[list[Journal], list['Unreadable']]:
        """This host's journals, and apart those that cannot be read
        (whose host is unknown, so they are everyone's concern)."""
        pattern = os.path.join(self.dir, f'{uuid or "*"}.*.json')
        journals, unreadable = [], []
        for path in sorted(glob.glob(pattern)):
            try:
                journal = Journal.read(path)
            except exception.ResizeDriverError as e:
                unreadable.append(Unreadable(path, e))
                continue
            if journal.host == self.hostname:
                journals.append(journal)
        return journals, unreadable


@dataclasses.dataclass(frozen=True)
class Unreadable:
    """A journal file that cannot be parsed, named ``<uuid>.<op>.json``."""

    path: str
    error: exception.ResizeDriverError

    @property
    def uuid(self) -> str:
        return os.path.basename(self.path).split('.', 1)[0]

    @property
    def operation(self) -> str:
        return os.path.basename(self.path).split('.')[1]
