"""``instance.progress`` of a migrate, from the disk copy's progress."""

from __future__ import annotations

import threading
from typing import Any

PROGRESS_STEP = 5          # percent between two instance.save() calls


class InstanceProgress:
    """Turns per-file copy progress into ``instance.progress`` (0-100).

    One per migrate call, handed to that call's operation only: the
    driver serves several instances at once.  Files copied side by side
    (``parallel_copies``) report in turn, from their own threads.
    """

    def __init__(self, instance: Any) -> None:
        self.instance = instance
        self.total = 1
        self._done: dict[str, int] = {}
        self._saved = -PROGRESS_STEP
        self._lock = threading.Lock()

    def expect(self, total: int) -> None:
        """The bytes to copy, known once the disks were looked at."""
        self.total = max(total, 1)

    def __call__(self, name: str, done: int, total: int) -> None:
        with self._lock:
            self._done[name] = min(done, total)
            pct = min(100, 100 * sum(self._done.values()) // self.total)
            if pct - self._saved >= PROGRESS_STEP or \
                    (pct == 100 and self._saved != 100):
                self._save(pct)

    def complete(self) -> None:
        """The migrate is done: 100, also for a plan that copied nothing
        (the overlay plan)."""
        if self._saved != 100:
            self._save(100)

    def _save(self, pct: int) -> None:
        self._saved = pct
        self.instance.progress = pct
        self.instance.save()
