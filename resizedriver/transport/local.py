"""This host: commands run directly, files are copied keeping holes."""

from __future__ import annotations

from typing import Optional

from resizedriver import sparse
from resizedriver.sparse import ProgressFn
from resizedriver.transport import base
from resizedriver.transport.proc import Deadlines


class LocalTransport(base.Transport):
    host = None

    def __init__(self, deadlines: Deadlines = Deadlines()) -> None:
        self.deadlines = deadlines

    def _command(self, argv: list[str]) -> list[str]:
        return argv

    def _send(self, src: str, part: str,
              progress: Optional[ProgressFn]) -> None:
        # In-process: no child to bound; the file is fsynced by copy_local.
        sparse.copy_local(src, part, progress)
