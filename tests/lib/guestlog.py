"""What the test guest printed: parse its serial console log.

The guest's /init (tools/guest-init) prints ``RDGUEST key=value`` lines.
virtlogd appends across boots and never truncates, so the current boot is
the text after the last ``RDGUEST boot=`` line, and within it the last
value of each line wins (the guest reprints what changes).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from typing import Optional

_LINE = re.compile(r'RDGUEST (\S+?)(?: (\S+?))?=(\S*)')


@dataclasses.dataclass
class GuestReport:
    boot: int
    cpus: str = ''
    mem_kb: int = 0
    disks: dict = dataclasses.field(default_factory=dict)
    macs: dict = dataclasses.field(default_factory=dict)
    ip: str = ''
    #: the boot whose clean shutdown was the disk's last write ('none')
    shutdown_mark: str = ''
    ready: bool = False

    @property
    def cpu_count(self) -> int:
        count = 0
        for part in self.cpus.split(','):
            if '-' in part:
                lo, hi = part.split('-')
                count += int(hi) - int(lo) + 1
            elif part:
                count += 1
        return count


def parse(text: str) -> Optional[GuestReport]:
    """The report of the last boot in ``text``, None before any boot."""
    start = text.rfind('RDGUEST boot=')
    if start < 0:
        return None
    report = None
    for line in text[start:].splitlines():
        line = line.strip('\r')
        if line.startswith('RDGUEST ready'):
            report.ready = True
            continue
        m = _LINE.search(line)
        if not m:
            continue
        key, sub, value = m.groups()
        if key == 'boot':
            report = GuestReport(boot=int(value))
        elif key == 'cpus':
            report.cpus = value
        elif key == 'mem_kb':
            report.mem_kb = int(value)
        elif key == 'disk' and sub:
            report.disks[sub] = int(value)
        elif key == 'mac' and sub:
            report.macs[sub] = value
        elif key == 'ip':
            report.ip = value
        elif key == 'shutdown-mark':
            report.shutdown_mark = value
    return report


def read(path: str) -> Optional[GuestReport]:
    if not os.path.exists(path):
        return None
    with open(path, errors='replace') as f:
        return parse(f.read())


def wait_for_boot(path: str, boot: int, timeout: float = 120) -> GuestReport:
    """Wait until the guest's ``boot``-th boot is up (``ready``)."""
    deadline = time.monotonic() + timeout
    report = None
    while time.monotonic() < deadline:
        report = read(path)
        if report and report.boot == boot and report.ready:
            return report
        time.sleep(0.5)
    raise AssertionError(f'guest did not reach boot {boot} within '
                         f'{timeout}s; last report from {path}: {report}')


def wait_for(path: str, what: str, done, timeout: float = 60) -> GuestReport:
    """Wait until the current boot's report satisfies ``done`` (the guest
    reprints what changes, e.g. after a hot-plug)."""
    deadline = time.monotonic() + timeout
    report = None
    while time.monotonic() < deadline:
        report = read(path)
        if report and report.ready and done(report):
            return report
        time.sleep(0.5)
    raise AssertionError(f'guest did not report {what} within {timeout}s; '
                         f'last report from {path}: {report}')
