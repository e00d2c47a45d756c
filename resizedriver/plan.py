"""Operations as plans of named, undoable steps.

An operation (migrate, finish, confirm, revert) is not one long function: it
builds a ``Plan`` from the instance and the flavors, and the plan runs its
steps in order.  When a step fails, the steps already done are undone in
reverse order, so every failure puts the instance back as it was.  Run
with a journal (``resizedriver.journal``), the plan also survives its
process: ``roll_back`` and ``roll_forward`` finish it after a crash.  A fast
path (same-host without copy, pre-copy, hot-plug) is another plan, not a
branch inside a step.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from oslo_log import log as logging

from resizedriver import exception
from resizedriver.journal import DONE, Journal

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    do: Callable[[], None]
    undo: Optional[Callable[[], None]] = None
    #: False when, after a crash, something else redoes the undo (Nova's
    #: start-up plugs VIFs and reconnects volumes): recovery may then run
    #: without knowing the step.
    undo_after_crash: bool = True

    @property
    def needs_undo_after_crash(self) -> bool:
        return self.undo is not None and self.undo_after_crash


class Plan:
    """Steps run in order.  ``forward`` plans (confirm, revert) have no
    undo: once begun they can only be completed, so after a failure or a
    crash their journal stays until a repeat or recovery completes them."""

    def __init__(self, name: str, uuid: str, steps: list[Step],
                 forward: bool = False) -> None:
        self.name = name
        self.uuid = uuid
        self.steps = steps
        self.forward = forward

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    def __contains__(self, name: str) -> bool:
        return name in self.step_names

    def _index(self, name: str) -> int:
        if name not in self:
            raise ValueError(f'{self.name} has no step {name!r} (it plans '
                             f'{", ".join(self.step_names)})')
        return self.step_names.index(name)

    def replace(self, name: str, *steps: Step) -> 'Plan':
        """Swap the step ``name`` for ``steps`` (none: drop it).

        This is how an integration (the Nova adapter) substitutes its own
        implementation of a step without copying the whole plan.  A step
        that is not planned is an error: check ``name in plan`` for the
        ones a plan has only sometimes.
        """
        at = self._index(name)
        self.steps[at:at + 1] = list(steps)
        return self

    def insert_after(self, name: str, *steps: Step) -> 'Plan':
        at = self._index(name) + 1
        self.steps[at:at] = list(steps)
        return self

    def run(self, journal: Optional[Journal] = None) -> None:
        """Run every step; on failure undo the failed step and the done
        ones, newest first.

        With a ``journal``, each step is on disk as started before it runs
        and as done after, so a crash anywhere can be recovered.
        """
        self._run(self.steps, [], journal)

    def _run(self, steps: list[Step], done: list[Step],
             journal: Optional[Journal]) -> None:
        for step in steps:
            LOG.info('%s: %s', self.name, step.name, instance_uuid=self.uuid)
            if journal:
                journal.started(step.name, step.needs_undo_after_crash)
            try:
                step.do()
            except KeyboardInterrupt:
                # An operator's Ctrl-C: undo, then let it end the program.
                self._end_failed(done + [step], journal)
                raise
            except Exception as e:
                if not done and isinstance(e, (exception.ResizeRefused,
                                               exception.ResizeFailed)):
                    if journal:
                        journal.close()
                    raise          # nothing was touched: a plain refusal
                LOG.error('%s: step %r failed: %s', self.name, step.name, e,
                          instance_uuid=self.uuid)
                # The failed step may have done part of its work (a power
                # off that stopped the guest, then raised): undo it too,
                # first.  Every undo checks what is really there.
                clean = self._end_failed(done + [step], journal)
                if self.forward:
                    state = ('it can only be completed: repeat it, or run '
                             '"resizedriver recover"')
                elif clean:
                    state = 'everything done so far was undone'
                else:
                    state = 'UNDO INCOMPLETE, see the log'
                raise exception.ResizeFailed(
                    f'{self.name} failed at step {step.name!r}: {e} '
                    f'({state})', step=step.name, rolled_back=clean) from e
            if journal:
                journal.done(step.name)
            done.append(step)
        if journal:
            journal.close()

    def _end_failed(self, done: list[Step],
                    journal: Optional[Journal]) -> bool:
        if journal:
            journal.save()      # what the steps learnt, before undos use it
        clean = self._undo(done)
        if journal and not self.forward:
            if clean:
                journal.close()
            else:
                journal.mark_undo_incomplete()   # recovery finishes it
        return clean

    def _undo(self, done: list[Step]) -> bool:
        clean = True
        for step in reversed(done):
            if step.undo is None:
                continue
            LOG.info('%s: undoing %s', self.name, step.name,
                     instance_uuid=self.uuid)
            try:
                step.undo()
            except Exception:
                clean = False
                LOG.exception('%s: undo of %r failed', self.name, step.name,
                              instance_uuid=self.uuid)
        return clean

    # -- recovery after a crash -------------------------------------------

    def _known(self, journal: Journal) -> list[Step]:
        """The journal's begun steps as this plan's.  A step this plan
        lacks is skipped only if the journal says it needs no undo after
        a crash; otherwise recovery refuses rather than guess."""
        by_name = {s.name: s for s in self.steps}
        unknown = [n for n in journal.needing_undo if n not in by_name]
        if unknown:
            raise exception.ResizeDriverError(
                f'cannot recover {self.name} of {self.uuid}: the journal '
                f'{journal.path} names steps this version does not know: '
                f'{", ".join(unknown)}')
        return [by_name[n] for n in journal.begun if n in by_name]

    def roll_back(self, journal: Journal) -> int:
        """Undo every step the journal shows begun, the interrupted one
        too: undos check what is there, so a step that stopped half way
        (or never really began) is undone safely.  Returns how many."""
        begun = self._known(journal)
        LOG.warning('%s: rolling back %d step(s) after an interruption at '
                    '%r', self.name, len(begun), journal.interrupted_at,
                    instance_uuid=self.uuid)
        if not self._undo(begun):
            journal.mark_undo_incomplete()
            raise exception.ResizeFailed(
                f'rolling back {self.name} of {self.uuid} failed part way; '
                f'the journal {journal.path} is kept for another try',
                step='recover', rolled_back=False)
        journal.close()
        return sum(1 for s in begun if s.undo is not None)

    def roll_forward(self, journal: Journal) -> int:
        """Run the steps the journal does not show done; each of them is
        idempotent, so the interrupted one simply runs again."""
        todo = [s for s in self.steps if s.name not in journal.finished]
        LOG.warning('%s: completing %d step(s) after an interruption at '
                    '%r', self.name, len(todo), journal.interrupted_at,
                    instance_uuid=self.uuid)
        journal.steps = [st for st in journal.steps if st[1] == DONE]
        self._run(todo, [], journal)
        return len(todo)
