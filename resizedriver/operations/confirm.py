"""confirm_migration: on the source, drop what a revert would have needed.

Plan:
  check copies verified    the source goes only once the copies were read
                           back on the destination and matched it
  undefine source domain   only when the dest is another hypervisor; on a
                           shared libvirtd the one definition is the new one
  delete _resize           the kept source copy and the resize record

Once begun a confirm can only be completed (half the kept copy may be
gone), so after a crash recovery runs again what the journal lacks as done.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from resizedriver import exception
from resizedriver import stepname
from resizedriver.env import HostEnv
from resizedriver.operations import plans
from resizedriver.plan import Plan, Step
from resizedriver.record import ResizeRecord


class ConfirmMigration:
    def __init__(self, env: HostEnv, record: ResizeRecord) -> None:
        self.env = env
        self.record = record

    def journal_context(self) -> dict[str, Any]:
        return {'record': self.record.to_dict()}

    @classmethod
    def from_journal(cls, env: HostEnv,
                     context: dict[str, Any]) -> 'ConfirmMigration':
        return cls(env, ResizeRecord.from_dict(context['record']))

    def recovery_plan(self) -> Plan:
        return self.plan()

    def plan(self) -> Plan:
        """The steps of the plan the resize record names."""
        return Plan('confirm_migration', self.record.uuid,
                    plans.builders(self.record.plan).confirm(self),
                    forward=True)

    def copy_steps(self) -> list[Step]:
        """The ``copy`` plan (the table at the top of this module)."""
        steps = [Step(stepname.CHECK_VERIFIED, self.check_verified)]
        if not self.record.same_hypervisor:
            steps.append(Step(stepname.UNDEFINE_SOURCE, self.undefine))
        steps.append(Step(stepname.DELETE_RESIZE_DIR, self.delete_resize_dir))
        return steps

    def undefine(self) -> None:
        self.env.host.remove(self.record.uuid)

    def check_verified(self) -> None:
        if not self.record.copies_verified:
            raise exception.ResizeRefused(
                f'refusing to delete {self.record.source.resize_dir}: the '
                f'destination copies were never verified against it; '
                f'revert instead')

    def delete_resize_dir(self) -> None:
        if os.path.isdir(self.record.source.resize_dir):
            shutil.rmtree(self.record.source.resize_dir)
