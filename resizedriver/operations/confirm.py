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

from resizedriver import exception
from resizedriver import stepname
from resizedriver.operations import plans
from resizedriver.operations.forward import ForwardOperation
from resizedriver.plan import Step


class ConfirmMigration(ForwardOperation):
    OPERATION = 'confirm_migration'

    def steps(self) -> list[Step]:
        return plans.builders(self.record.plan).confirm(self)

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
