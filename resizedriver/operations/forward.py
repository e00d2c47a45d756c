"""Operations that only go forward, rebuilt from the resize record alone.

Confirm (on the source) and what follows a finish (on the destination)
need nothing but the record to be planned again after a crash, and once
begun they can only be completed: their plans are forward plans whose
steps the record's plan decides (``operations.plans``).
"""

from __future__ import annotations

from typing import Any

from resizedriver.env import HostEnv
from resizedriver.plan import Plan, Step
from resizedriver.record import ResizeRecord


class ForwardOperation:
    #: the plan's name, in logs and journals
    OPERATION: str

    def __init__(self, env: HostEnv, record: ResizeRecord) -> None:
        self.env = env
        self.record = record

    def journal_context(self) -> dict[str, Any]:
        return {'record': self.record.to_dict()}

    @classmethod
    def from_journal(cls, env: HostEnv, context: dict[str, Any]) -> Any:
        return cls(env, ResizeRecord.from_dict(context['record']))

    def recovery_plan(self) -> Plan:
        return self.plan()

    def plan(self) -> Plan:
        """The steps of the plan the resize record names."""
        return Plan(self.OPERATION, self.record.uuid, self.steps(),
                    forward=True)

    def steps(self) -> list[Step]:
        """This operation's steps in the record's plan."""
        raise NotImplementedError
