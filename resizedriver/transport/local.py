"""This host: commands run directly, files are copied keeping holes."""

from __future__ import annotations

from typing import Optional

from resizedriver import sparse
from resizedriver.sparse import ProgressFn
from resizedriver.transport import base


class LocalTransport(base.Transport):
    host = None

    def _command(self, argv: list[str]) -> list[str]:
        return argv

    def copy_file(self, src: str, dst: str,
                  progress: Optional[ProgressFn] = None) -> None:
        sparse.copy_local(src, dst, progress)
