"""Each plan's steps, by the plan's name (``resizedriver.chooser``).

An operation object (``MigrateDiskAndPowerOff``, ``FinishMigration``,
``ConfirmMigration``) holds what the operation knows and the steps every
plan shares (write the record, power off, define, start, ...), which an
integration such as the Nova adapter may override; the plan decides which
steps run, in which order.  The ``copy`` plan's lists are the operation
modules' own (``copy_steps``); another plan is a module of its own.
The ``copy`` and ``overlay`` plans revert the same way
(``operations/revert.py``): back to the untouched ``<uuid>_resize``.

The registry imports the plan modules and the operations import the
registry; nothing it imports imports an operation back: the plan modules
take the operations as ``operations.protocols`` describe them
(``tests/unit/test_import_cycles.py`` holds the package to it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from resizedriver import chooser
from resizedriver import exception
from resizedriver import stepname
from resizedriver.operations import live, overlay, precopy, rbd
from resizedriver.operations.protocols import ConfirmOp, FinishOp, MigrateOp
from resizedriver.plan import Step



def _nothing(op: FinishOp) -> list[Step]:
    return []


@dataclasses.dataclass(frozen=True)
class Builders:
    """A plan's steps for each operation, which hands itself over as its
    protocol (``operations.protocols``) says."""
    migrate: Callable[[MigrateOp], list[Step]]
    finish: Callable[[FinishOp], list[Step]]
    confirm: Callable[[ConfirmOp], list[Step]]
    #: (``revert.FinishRevertMigration``, which no plan module names)
    revert: Callable[[Any], list[Step]]
    #: what the destination does once the resized guest runs, as a plan
    #: of its own that is only ever completed (``finish.AfterFinish``):
    #: a failure there must not take down a guest that runs
    after_finish: Callable[[FinishOp], list[Step]] = _nothing
    #: a confirm that fails still leaves the guest running on a valid
    #: chain (the overlay's fold): like ``after_finish``, it is then left
    #: to be completed later, and the call does not fail
    confirm_completed_later: bool = False
    #: the copies stay in the format they arrived in, whatever this
    #: host's ``use_cow_images`` (pre-copy's qcow2 chains: converting
    #: them would take downtime; Nova keeps a qcow2 disk qcow2 too)
    keeps_disk_formats: bool = False


def _copy_steps(op: Any) -> list[Step]:
    return op.copy_steps()


def _cold_revert(op: Any) -> list[Step]:
    return op.cold_steps()


def _cold_revert_then(op: Any, after_move_back: list[Step]) -> list[Step]:
    """The cold revert with ``after_move_back`` once the kept source is
    back (and before its domain is defined)."""
    steps = op.cold_steps()
    at = [s.name for s in steps].index(stepname.MOVE_BACK) + 1
    return steps[:at] + after_move_back + steps[at:]


def _precopy_revert(op: Any) -> list[Step]:
    return _cold_revert_then(op, [precopy.revert_fold_step(op.env,
                                                           op.record)])


def _rbd_revert(op: Any) -> list[Step]:
    return _cold_revert_then(op, rbd.revert_steps(op.env, op.record))


def _live_revert(op: Any) -> list[Step]:
    decision = op.live_decision()
    assert decision is not None          # the record is a live resize's
    return live.revert_steps(op.env, op.record, decision, op.define,
                             op.start if op.power_on else None)


BUILDERS = {
    chooser.COPY: Builders(_copy_steps, _copy_steps, _copy_steps,
                           _cold_revert),
    chooser.OVERLAY: Builders(overlay.migrate_steps, overlay.finish_steps,
                              overlay.confirm_steps, _cold_revert,
                              confirm_completed_later=True),
    chooser.PRECOPY: Builders(precopy.migrate_steps, precopy.finish_steps,
                              _copy_steps, _precopy_revert,
                              after_finish=precopy.after_finish_steps,
                              keeps_disk_formats=True),
    chooser.LIVE: Builders(live.migrate_steps, live.finish_steps,
                           live.confirm_steps, _live_revert),
    chooser.RBD_COLD: Builders(rbd.migrate_steps, rbd.finish_steps,
                               rbd.confirm_steps, _rbd_revert),
}


def builders(plan: str) -> Builders:
    if chooser.check_known(plan) == chooser.UPSTREAM:
        raise exception.ResizeRefused(
            'this resize is Nova\'s own (plan upstream): Nova confirms or '
            'reverts it')
    return BUILDERS[plan]
