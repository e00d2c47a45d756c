"""What an operator sees of one resize: one line at its end.

A resize is spread over two calls (migrate on the source, finish on the
destination) and often two hosts; its facts are gathered where they
happen and travel in the resize record (``ResizeRecord.summary``):
migrate notes why the plan was chosen, when the guest was down (its
power-off done), the bytes it copied and the pre-copy rounds; finish notes
when the resized guest's start returned and logs :func:`line`, one
structured INFO line that monitoring can grep.  ``resizedriver status
--json`` shows the same fields for the resizes pending on a host.

Times are wall-clock seconds since the epoch, so that two hosts' halves
can be subtracted: across hosts the downtime is only as exact as the
hosts' clocks agree (NTP).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Optional


@dataclasses.dataclass
class Summary:
    #: the chooser's reason for the plan (``chooser.Choice.reason``)
    reason: str = ''
    #: migrate began (its validation)
    started_at: float = 0.0
    #: the source guest's power-off was done (None: never powered off,
    #: the live plan or a guest that was off)
    powered_off_at: Optional[float] = None
    #: the data of the files copied (allocated bytes: holes are not sent)
    bytes_copied: int = 0
    #: pre-copy rounds run while the guest ran (0: not the precopy plan)
    precopy_rounds: int = 0
    #: the resized guest's start returned (None: not started by the
    #: finish, or the finish has not run)
    started_again_at: Optional[float] = None
    #: the finish was done
    finished_at: Optional[float] = None

    def add_copied(self, path: str) -> None:
        """Count the data of local file ``path``, which was copied."""
        st = os.stat(path)
        self.bytes_copied += min(st.st_blocks * 512, st.st_size)

    @property
    def downtime(self) -> Optional[float]:
        """Power-off done to start returned; 0 when the guest never
        stopped (live); None while not known (or the guest was not
        started)."""
        if self.started_again_at is None:
            return None
        if self.powered_off_at is None:
            return 0.0
        return max(0.0, self.started_again_at - self.powered_off_at)

    @property
    def duration(self) -> Optional[float]:
        """Migrate's start to the finish's end."""
        if self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> 'Summary':
        """Unknown keys (a newer version's) are ignored: a summary is
        informative, never a reason to refuse a record."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def now() -> float:
    return time.time()


def fields(uuid: str, plan: str, topology: str,
           summary: Summary) -> dict[str, Any]:
    """The summary's fields, as the log line and ``status --json`` show
    them (seconds rounded to 0.1 s; None: not known yet)."""
    def secs(value: Optional[float]) -> Optional[float]:
        return None if value is None else round(value, 1)
    return {'instance': uuid, 'plan': plan, 'reason': summary.reason,
            'topology': topology, 'bytes_copied': summary.bytes_copied,
            'precopy_rounds': summary.precopy_rounds,
            'downtime_s': secs(summary.downtime),
            'duration_s': secs(summary.duration)}


def line(uuid: str, plan: str, topology: str, summary: Summary) -> str:
    """One line of ``key=value`` pairs, the reason last (it has spaces):
    ``Resize summary: instance=... plan=precopy topology=other-host
    bytes_copied=... precopy_rounds=2 downtime_s=3.1 duration_s=40.2
    reason="..."``."""
    f = fields(uuid, plan, topology, summary)
    reason = f.pop('reason')
    pairs = ' '.join(f'{k}={"-" if v is None else v}' for k, v in f.items())
    return f'Resize summary: {pairs} reason="{reason}"'
