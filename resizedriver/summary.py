"""What an operator sees of one resize: one line at its end.

A resize is spread over two calls (migrate on the source, finish on the
destination) and often two hosts; its facts are gathered where they
happen and travel in the resize record (``ResizeRecord.summary``):
migrate notes why the plan was chosen, when the guest was down (its
power-off done), the bytes it copied and the pre-copy rounds; finish notes
when the resized guest's start returned and logs :func:`line`, one
structured INFO line that monitoring can grep.  ``resizedriver status
--json`` shows the same fields for the resizes pending on a host.  The
confirm and the revert, each one call on one host, end with a line of
their own (:func:`operation_line`): what they removed or restored.

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
        self.bytes_copied += _allocated(path)

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


def _allocated(path: str) -> int:
    """The data of file ``path``: its allocated bytes, holes not
    counted (nor the rounding up of its last block)."""
    st = os.stat(path)
    return min(st.st_blocks * 512, st.st_size)


def allocated_tree(top: str) -> int:
    """The data of the files under directory ``top`` (0: there is none),
    what deleting it frees."""
    return sum(_allocated(os.path.join(d, n))
               for d, _dirs, names in os.walk(top) for n in names)


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
    return _line('Resize', f, 'reason', reason)


def operation_line(title: str, uuid: str, plan: str, topology: str,
                   started_at: float, steps: list[str],
                   **counts: Any) -> str:
    """The line a confirm or a revert (``title``) ends with: which
    resize, ``counts`` (what it removed or restored), its duration since
    ``started_at`` and the plan's ``steps``, quoted last:
    ``Confirm summary: instance=... plan=overlay topology=same-host
    outcome=done freed_bytes=... duration_s=0.4 steps="..., delete
    _resize"``."""
    f = {'instance': uuid, 'plan': plan, 'topology': topology, **counts,
         'duration_s': round(max(0.0, now() - started_at), 1)}
    return _line(title, f, 'steps', ', '.join(steps))


def _line(title: str, f: dict[str, Any], last: str, text: str) -> str:
    """``<title> summary: k=v ... last="text"``, a value not known yet
    shown as ``-`` and ``text`` (it has spaces) quoted last."""
    pairs = ' '.join(f'{k}={"-" if v is None else v}' for k, v in f.items())
    return f'{title} summary: {pairs} {last}="{text}"'
