"""What the benchmark watches while a resize runs: the guest's console and
the host disk's write counter, sampled together.

The serial console log has no timestamps, so a thread polls it and stamps
each new line with the time it showed up; the same poll reads the write
counter of the block device under the instances path, so "bytes written
between two console lines" is a difference of two samples of one poll loop.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time

SECTOR = 512          # /proc/diskstats counts 512-byte sectors, always
POLL = 0.01           # seconds: the resolution of every time measured


def block_device(path: str) -> str:
    """The /proc/diskstats name of the device (or partition) holding path."""
    st = os.stat(path)
    sysdir = f'/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}'
    if not os.path.exists(sysdir):
        raise RuntimeError(f'{path} is not on a block device (st_dev '
                           f'{os.major(st.st_dev)}:{os.minor(st.st_dev)}): '
                           'cannot count its writes')
    return os.path.basename(os.path.realpath(sysdir))


def bytes_written(device: str) -> int:
    """Bytes the kernel has written to ``device`` since boot."""
    with open('/proc/diskstats') as f:
        for line in f:
            fields = line.split()
            if fields[2] == device:
                return int(fields[9]) * SECTOR
    raise RuntimeError(f'{device} not in /proc/diskstats')


@dataclasses.dataclass(frozen=True)
class Line:
    at: float            # time.monotonic() of the poll that saw it
    written: int         # the device's bytes_written at that poll
    text: str


class ConsoleWatch:
    """Follow the console log files of one instance while it is resized.

    Both drivers rename ``<uuid>`` to ``<uuid>_resize`` and start the new
    guest with a new ``<uuid>/console.log``, so every given path is
    followed by inode: a file renamed away is read on under its new name,
    a new or truncated file from its start.  Lines already there when the
    watch starts are not reported.
    """

    def __init__(self, paths: list[str], device: str) -> None:
        self.paths = paths
        self.device = device
        self.lines: list[Line] = []
        self._offsets: dict[int, int] = {}     # inode -> bytes consumed
        self._partial: dict[int, bytes] = {}   # inode -> unterminated tail
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='rdbench-console')

    def __enter__(self) -> 'ConsoleWatch':
        self._poll(report=False)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> tuple[float, int]:
        return time.monotonic(), bytes_written(self.device)

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            self._poll(report=True)

    def _poll(self, report: bool) -> None:
        at, written = self.sample()
        for path in self.paths:
            try:
                with open(path, 'rb') as f:
                    ino = os.fstat(f.fileno()).st_ino
                    offset = self._offsets.get(ino, 0)
                    if os.fstat(f.fileno()).st_size < offset:   # truncated
                        offset, self._partial[ino] = 0, b''
                    f.seek(offset)
                    data = f.read()
            except FileNotFoundError:
                continue
            self._offsets[ino] = offset + len(data)
            *complete, rest = (self._partial.get(ino, b'') + data).split(b'\n')
            self._partial[ino] = rest
            if report:
                self.lines.extend(
                    Line(at, written, raw.decode(errors='replace').strip('\r'))
                    for raw in complete)

    def first(self, text: str, after: float) -> Line | None:
        """The first line starting with ``text`` seen after ``after``."""
        return next((line for line in self.lines
                     if line.at > after and line.text.startswith(text)), None)

    def last_between(self, start: float, end: float) -> Line | None:
        """The last line seen in [start, end]."""
        seen = [line for line in self.lines if start <= line.at <= end]
        return seen[-1] if seen else None
