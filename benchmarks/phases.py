"""Where a cold resize's time goes from the guest powering itself off to
the resized guest's start returning: the phases the benchmarks print.

Every stamp is ``time.monotonic()``, one clock for every process of the
host (host B's namespaces included), so a compute node's steps compare
with this process's watchers:

* the plan's steps (:class:`StepLog`): the ``<plan>: <step>`` line
  resizedriver's plan logs as each step begins; a step ends where the
  next one begins, or its call returns;
* the domain (:class:`DomainWatch`, a thread looking every
  ``POLL`` s): when libvirt first reports it off, and when its QEMU
  process has exited;
* the guest's console (``probes.ConsoleWatch``): its last line before
  libvirt reported it off (the power-off the guest printed).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import threading
import time
from typing import Callable, Optional, Sequence

import libvirt

from resizedriver import qemuprocess, stepname

POLL = 0.005
#: finish's phases: the steps of each (the others: images and the rest)
CHECKS = (stepname.CHECK_COPIES, stepname.CHECK_STAGED,
          stepname.CHECK_PRECOPIED)
DEFINES = (stepname.PLUG_VIFS, stepname.DEFINE)
#: migrate's copies while the guest is down: the plan's own data
COPIES = (stepname.COPY_DISKS, stepname.COPY_TOPS)
#: the phase columns, in order (``Phases`` fields)
COLUMNS = ('tail s', 'reap s', 'libvirt s', 'off ret s', 'copy s',
           'migrate rest s', 'handover s', 'check s', 'images s',
           'define s', 'start s', 'off->started s', 'w/o reap+handover s')


@dataclasses.dataclass
class Call:
    """One driver call: when it began and ended, and its plan's steps
    (begin time, name), in order."""

    begin: float
    end: float
    steps: list[tuple[float, str]]

    @classmethod
    def from_dict(cls, d: dict) -> 'Call':
        """From its ``dataclasses.asdict`` (a compute node's answer)."""
        return cls(d['begin'], d['end'], [(at, n) for at, n in d['steps']])

    def spans(self) -> dict[str, float]:
        """Seconds per step name (the time before the first step is
        ``''``'s)."""
        out: dict[str, float] = {}
        marks = [(self.begin, '')] + self.steps
        ends = [at for at, _ in self.steps] + [self.end]
        for (at, name), until in zip(marks, ends, strict=True):
            out[name] = out.get(name, 0.0) + until - at
        return out

    def step_end(self, name: str) -> float:
        later = [at for i, (at, _) in enumerate(self.steps)
                 if i and self.steps[i - 1][1] == name]
        return later[0] if later else self.end


@dataclasses.dataclass
class Phases:
    """Seconds of each phase of one cold resize (see ``COLUMNS``)."""

    tail: float          # guest's power-off line -> QEMU exited (its
    #                      files closed: a zombie)
    reap: float          # -> init reaped it
    libvirt: float       # -> libvirt reads the domain shut off
    off_return: float    # -> the power off step returned
    copy: float          # migrate's copies of the data (copy, pre-copy)
    migrate_rest: float  # migrate's other steps after the power off
    handover: float      # migrate returned -> finish called
    check: float         # finish: checking the disks
    images: float        # finish: images and the rest before define
    define: float        # finish: VIFs and the definition
    start: float         # finish: start, until it returned
    total: float         # guest's power-off line -> start returned
    #: the total less init's reap (a machine's, no libvirt's or ours) and
    #: the handover (the compute manager's or the benchmark's)
    net: float

    def row(self) -> tuple[str, ...]:
        return tuple(f'{v:.2f}' for v in dataclasses.astuple(self))


def median(runs: Sequence[Phases]) -> Phases:
    """Each phase's median over ``runs`` (a machine shared with others
    is noisy: one run says little)."""
    return Phases(*(statistics.median(column) for column in
                    zip(*(dataclasses.astuple(r) for r in runs),
                        strict=True)))


def phases(down_at: float, domain: 'DomainWatch', migrate: Call,
           finish: Call) -> Optional[Phases]:
    """The phases, None if the watch missed the domain going down."""
    at = domain.at
    if len(at) < 3:
        return None
    copy = sum(migrate.spans().get(n, 0.0) for n in COPIES)
    spans = finish.spans()
    check = sum(spans.get(n, 0.0) for n in CHECKS)
    define = sum(spans.get(n, 0.0) for n in DEFINES)
    start = spans.get(stepname.START, 0.0)
    started = finish.step_end(stepname.START)
    off_end = migrate.step_end(stepname.POWER_OFF)
    reap = at['reaped'] - at['exited']
    handover = finish.begin - migrate.end
    return Phases(
        tail=at['exited'] - down_at,
        reap=reap, libvirt=at['off'] - at['reaped'],
        off_return=off_end - at['off'], copy=copy,
        migrate_rest=migrate.end - off_end - copy,
        handover=handover, check=check,
        images=started - finish.begin - check - define - start,
        define=define, start=start, total=started - down_at,
        net=started - down_at - reap - handover)


class StepLog(logging.Handler):
    """Collects the steps resizedriver's plans log as they begin."""

    LOGGER = 'resizedriver.plan'

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.steps: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == '%s: %s' and isinstance(record.args, tuple):
            self.steps.append((time.monotonic(), str(record.args[1])))

    def install(self) -> 'StepLog':
        logger = logging.getLogger(self.LOGGER)
        logger.addHandler(self)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        return self

    def call(self, begin: float, end: float) -> Call:
        """The steps logged in [begin, end]."""
        return Call(begin, end, [(at, n) for at, n in self.steps
                                 if begin <= at <= end])


class DomainWatch:
    """The domain ``uuid`` (of this host's libvirtd) going down, stamped:
    its QEMU process exits (a zombie has closed every file), the process
    is reaped (by its parent, init), libvirt reads the domain shut off."""

    def __init__(self, uuid: str) -> None:
        self.uuid = uuid
        self.at: dict[str, float] = {}
        self._stop = threading.Event()
        self._conn = libvirt.open('qemu:///system')
        self.process = qemuprocess.pid_of(
            self._conn.lookupByUUIDString(uuid).name(), uuid)
        # One thread a look: libvirt's answer waits for its lock.
        self._threads = [threading.Thread(target=self._run, args=(look,),
                                          daemon=True, name='rdbench-dom')
                         for look in (self._process, self._libvirt)]

    def __enter__(self) -> 'DomainWatch':
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._conn.close()

    def _state(self) -> int:
        try:
            return self._conn.lookupByUUIDString(self.uuid).state()[0]
        except libvirt.libvirtError:
            return libvirt.VIR_DOMAIN_SHUTOFF

    def _process(self) -> dict[str, bool]:
        if self.process is None:
            return {'exited': True, 'reaped': True}
        exited = qemuprocess.is_gone(self.process)
        return {'exited': exited,
                'reaped': exited and not os.path.exists(
                    f'/proc/{self.process.pid}')}

    def _libvirt(self) -> dict[str, bool]:
        """libvirt answers only once it has the domain's lock, which its
        stop holds while it waits for the process to be reaped."""
        return {'off': self._state() == libvirt.VIR_DOMAIN_SHUTOFF}

    def _run(self, look: Callable[[], dict[str, bool]]) -> None:
        while not self._stop.wait(POLL):
            seen = look()
            now = time.monotonic()     # when the answer came
            for what, true in seen.items():
                if true:
                    self.at.setdefault(what, now)
            if all(seen.values()):
                return
