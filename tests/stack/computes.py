"""What the stack's compute hosts show of a server beyond the API: the
guest's console files on either host (to stamp each line as it appears)
and the nova-compute logs' lines about it, with their timestamps.

The API's console output has no timestamps and is a request away; the
demo and the benchmark measure the guest's downtime from its console
files, read as the benchmarks read them (``benchmarks/probes.py``), and
find which plan ran in resizedriver's summary line of the compute log.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shlex
from typing import Optional, Sequence

from benchmarks import probes
from tests.stack import cloud as stack

#: where tools/stack records B's nova-compute (PID, start time): a
#: process in B's mount namespace, whose /proc root shows B's files
_B_PID = '/run/rdstack/nova-compute-b.pid'
#: the compute log's own timestamp, then the rest of the line
_STAMP = '%Y-%m-%d %H:%M:%S.%f'
_SUMMARY = 'Resize summary: '


def console_paths(uuid: str) -> list[str]:
    """Where the server's console log may be, on A (its directory and the
    ``_resize`` one a move leaves there) and on B (seen from A)."""
    path = stack.stack_env()['STACK_INSTANCES']
    with open(_B_PID) as f:
        b_root = f'/proc/{f.read().split()[0]}/root'
    return [f'{path}/{uuid}/console.log', f'{path}/{uuid}_resize/console.log',
            f'{b_root}{path}/{uuid}/console.log']


def watch(uuid: str) -> probes.ConsoleWatch:
    """A console watch of the server (enter it before the request)."""
    path = stack.stack_env()['STACK_INSTANCES']
    return probes.ConsoleWatch(console_paths(uuid),
                               probes.block_device(path))


def downtime(lines: Sequence[probes.Line]) -> Optional[float]:
    """Seconds from the guest's "shutdown" line (it saw the power button)
    to the "ready" of its next boot; None if it never went down.

    A move copies the console log with the disks, so the new host's file
    repeats the old lines when it appears: the shutdown is its first
    sighting, the next boot the highest boot number seen after it."""
    down = next((i for i, line in enumerate(lines)
                 if line.text.startswith('RDGUEST shutdown')), None)
    if down is None:
        return None
    boots = [(int(line.text.split('=', 1)[1]), i)
             for i, line in enumerate(lines[down:], down)
             if line.text.startswith('RDGUEST boot=')]
    if not boots:
        return None
    latest = max(n for n, _ in boots)
    first = min(i for n, i in boots if n == latest)
    ready = next((line for line in lines[first:]
                  if line.text.startswith('RDGUEST ready')), None)
    return None if ready is None else ready.at - lines[down].at


@dataclasses.dataclass(frozen=True)
class LogLine:
    at: float          # the line's own timestamp (seconds since the epoch)
    host: str          # rdstack-a or rdstack-b
    text: str          # the line after its timestamp


class ComputeLogs:
    """Both nova-compute logs from the moment this is made on: only lines
    written later are read."""

    def __init__(self) -> None:
        logs = stack.stack_env()['STACK_LOGS']
        self.paths = {host: f'{logs}/nova-compute-{node}-app.log'
                      for host, node in zip(stack.HOSTS, 'ab', strict=True)}
        self.offsets = {host: os.path.getsize(path)
                        for host, path in self.paths.items()}

    def lines(self, uuid: str) -> list[LogLine]:
        """The new lines naming the instance, both hosts', by time."""
        found = []
        for host, path in self.paths.items():
            with open(path, 'rb') as f:
                f.seek(self.offsets[host])
                for raw in f:
                    text = raw.decode(errors='replace').rstrip('\n')
                    if uuid not in text:
                        continue
                    try:
                        at = datetime.datetime.strptime(
                            text[:23], _STAMP).timestamp()
                    except ValueError:      # a traceback's continuation
                        continue
                    found.append(LogLine(at, host, text[24:]))
        return sorted(found, key=lambda line: line.at)

    def summary(self, uuid: str) -> Optional[dict[str, str]]:
        """resizedriver's last summary line about the instance, as
        key -> value (plan, downtime_s, reason, ...), None if none."""
        found = [line for line in self.lines(uuid) if _SUMMARY in line.text]
        if not found:
            return None
        pairs = found[-1].text.split(_SUMMARY, 1)[1]
        return dict(word.split('=', 1) for word in shlex.split(pairs)
                    if '=' in word)
