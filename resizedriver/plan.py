"""Operations as plans of named, undoable steps.

An operation (migrate, finish, confirm, revert) is not one long function: it
builds a ``Plan`` from the instance and the flavors, and the plan runs its
steps in order.  When a step fails, the steps already done are undone in
reverse order, so every failure puts the instance back as it was.  A fast
path (same-host without copy, pre-copy, hot-plug) is another plan, not a
branch inside a step.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from oslo_log import log as logging

from resizedriver import exception

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    do: Callable[[], None]
    undo: Optional[Callable[[], None]] = None


class Plan:
    def __init__(self, name: str, uuid: str, steps: list[Step]) -> None:
        self.name = name
        self.uuid = uuid
        self.steps = steps

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    def replace(self, name: str, *steps: Step) -> 'Plan':
        """Swap the step ``name`` (if planned) for ``steps``.

        This is how an integration (the Nova adapter) substitutes its own
        implementation of a step without copying the whole plan.
        """
        at = self.step_names.index(name) if name in self.step_names else None
        if at is not None:
            self.steps[at:at + 1] = list(steps)
        return self

    def insert_after(self, name: str, *steps: Step) -> 'Plan':
        at = self.step_names.index(name) + 1
        self.steps[at:at] = list(steps)
        return self

    def run(self) -> None:
        done: list[Step] = []
        for step in self.steps:
            LOG.info('%s: %s', self.name, step.name, instance_uuid=self.uuid)
            try:
                step.do()
            except KeyboardInterrupt:
                # An operator's Ctrl-C: undo, then let it end the program.
                self._undo(done)
                raise
            except Exception as e:
                if not done and isinstance(e, exception.ResizeRefused):
                    raise          # nothing was touched: a plain refusal
                LOG.error('%s: step %r failed: %s', self.name, step.name, e,
                          instance_uuid=self.uuid)
                clean = self._undo(done)
                state = ('everything done so far was undone' if clean else
                         'UNDO INCOMPLETE, see the log')
                raise exception.ResizeFailed(
                    f'{self.name} failed at step {step.name!r}: {e} '
                    f'({state})', step=step.name, rolled_back=clean) from e
            done.append(step)

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
