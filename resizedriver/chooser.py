"""Which plan a resize runs: one rule table, consulted in one place.

Migrate's validation asks :func:`choose` once, from the instance's disks,
the old and the new flavor and the :class:`~resizedriver.model.Topology`
it decided; the answer is kept in the resize record (``plan``) and in the
migrate journal, so finish, confirm, revert and recovery follow the plan
that ran instead of deciding again.  A new plan is one module plus one
rule here.

Rules, first match wins:

====  ==========  =====================  ==================================
rule  topology    instance / flavors     plan
====  ==========  =====================  ==================================
1     any         any                    ``copy``: power off, move the
                                         source to ``<uuid>_resize``, copy
                                         its disks to the destination
                                         (``operations/migrate.py``,
                                         ``finish.py``, ``confirm.py``,
                                         ``revert.py``)
====  ==========  =====================  ==================================
"""

from __future__ import annotations

import dataclasses

from resizedriver import exception
from resizedriver.model import DiskFile, Flavor, Topology

COPY = 'copy'
#: every plan this version can run (and so finish, confirm, revert and
#: recover); a record naming another was written by a newer version.
PLANS = (COPY,)


@dataclasses.dataclass(frozen=True)
class Choice:
    plan: str
    #: why, for the log: an operator should see which rule picked it
    reason: str


def choose(topology: Topology, disks: list[DiskFile], old: Flavor,
           new: Flavor) -> Choice:
    """The plan for this resize, by the rule table above."""
    return Choice(COPY, f'{topology.value}: the cold copy plan is the only '
                        f'one this version has')


def check_known(plan: str) -> str:
    """``plan`` if this version can run it, else a clear refusal."""
    if plan not in PLANS:
        raise exception.ResizeRefused(
            f'the resize was made by the {plan!r} plan, which this version '
            f'of resizedriver does not know (it knows '
            f'{", ".join(PLANS)}): finish it with the version that began it')
    return plan
