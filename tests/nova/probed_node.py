"""A compute node (:mod:`tests.nova.compute_node`) started as nova-compute
starts, with a probe that ticks every half second while it works.

``python -m tests.nova.probed_node BACKEND ROOT NODE [OPTIONS]``: before
anything else is imported, Nova's own ``monkey_patch.patch(backend=
BACKEND)``, the first line of ``nova/cmd/compute.py``: ``eventlet`` is
Nova 31-33's (the whole process monkey-patched: one OS thread runs every
green thread), ``threading`` Nova 34's (native threads).  While the
request runs, a thread of that kind (green under eventlet) sleeps 0.5 s
in a loop; the answer's ``probe`` says how late its ticks came.  A call
that blocks the hub stops the probe as it stops nova-compute's RPC,
service heartbeat and every other instance's operation.  A native
watchdog says what blocked: the main OS thread's stack (where the hub
and every green thread run) once a tick is a second late.
"""

import sys

if __name__ == '__main__':
    from nova import monkey_patch
    # Nova 31 has no patch(): importing the module patched, as
    # nova/cmd/__init__.py does (eventlet, its one mode)
    if hasattr(monkey_patch, 'patch'):
        monkey_patch.patch(backend=sys.argv[1])

import threading  # noqa: E402 (monkey-patched under eventlet: green)
import time  # noqa: E402
import traceback  # noqa: E402
from typing import Any  # noqa: E402

from tests.nova import compute_node  # noqa: E402

TICK = 0.5
#: a tick this much later than due has the watchdog take the stack
LATE = 1.0
#: innermost frames of the stack kept
FRAMES = 14


def _eventlet() -> bool:
    """This process is monkey-patched (Nova 31 has no ``is_patched``:
    eventlet's own record says)."""
    from nova import monkey_patch
    if hasattr(monkey_patch, 'is_patched'):
        return bool(monkey_patch.is_patched())
    from eventlet import patcher
    return bool(patcher.is_monkey_patched('thread'))


def _native() -> tuple[Any, Any]:
    """The threading and time modules as the OS has them."""
    if not _eventlet():
        return threading, time
    from eventlet import patcher
    return patcher.original('threading'), patcher.original('time')


class Probe:
    """Ticks from a thread of the running backend; started at once."""

    def __init__(self) -> None:
        native_threading, self._native_time = _native()
        self._main = native_threading.get_ident()
        self.started = self.last = time.monotonic()
        self.ticks = 0
        self.max_gap = 0.0
        #: gaps over LATE + TICK: start (s into the call), length, stack
        self.late: list[dict[str, Any]] = []
        self._stacks: dict[float, str] = {}
        self._done = False
        threading.Thread(target=self._tick, daemon=True).start()
        native_threading.Thread(target=self._watch, daemon=True).start()

    def _tick(self) -> None:
        while not self._done:
            time.sleep(TICK)
            self._ticked(time.monotonic())
            self.ticks += 1

    def _ticked(self, now: float) -> None:
        gap, last = now - self.last, self.last
        self.last = now
        self.max_gap = max(self.max_gap, gap)
        if gap > TICK + LATE:
            self.late.append({'at': round(last - self.started, 2),
                              'seconds': round(gap, 2),
                              'stack': self._stacks.pop(last, '?')})

    def _watch(self) -> None:
        """Native: runs while the hub is blocked (a blocking call that
        holds the GIL would stop it too, and show as '?')."""
        while not self._done:
            self._native_time.sleep(0.1)
            last = self.last
            if time.monotonic() - last > TICK + LATE and \
                    last not in self._stacks:
                frame = sys._current_frames().get(self._main)
                self._stacks[last] = ''.join(
                    traceback.format_stack(frame)[-FRAMES:])

    def stop(self) -> dict[str, Any]:
        """The report: the last stretch counts as a gap too."""
        self._done = True
        self._ticked(time.monotonic())
        return {'backend': 'eventlet' if _eventlet() else 'threading',
                'ticks': self.ticks, 'max_gap': round(self.max_gap, 2),
                'late': self.late}


def serve(drv: Any, req: dict[str, Any]) -> dict[str, Any]:
    """``compute_node.run`` with the probe ticking beside it."""
    probe = Probe()
    answer = compute_node.run(drv, req)
    answer['probe'] = probe.stop()
    return answer


if __name__ == '__main__':
    compute_node.main(serve, sys.argv[2:])
