"""The real tests side by side: what each pytest-xdist worker owns alone.

The functional and Nova tiers run with ``pytest -n N --dist loadgroup``
on one libvirtd, one test bridge and one host B.  What two workers (or two
test sessions, a developer's and a scratch clone's) must never share:

* a guest's address: every guest gets its IP and MAC from one counter
  kept under ``RUN_DIR`` (a file lock makes it one across processes);
* a resource some tests need alone (host B: its instances filesystem is
  filled on purpose, and ``recover`` there acts on every journal):
  ``exclusive(name)`` is a file lock held for the test; within a run the
  tests that take one are also scheduled on a single worker
  (``xdist_group``), so there it never waits;
* names and paths: domain names and scenario directories come from the
  test's own name, the Nova tier's from the worker (``worker()``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from typing import Iterator

#: locks and the address counter; /run: gone with a reboot, as the
#: guests they guard
RUN_DIR = '/run/resizedriver-tests'
#: guests' host parts on the test bridge's /24 (.1 is the host's)
_FIRST, _COUNT = 10, 240


def run() -> str:
    """``$RESIZEDRIVER_TEST_RUN``: a name for a test session that runs
    beside another one (two developers' clones, say), '' if none."""
    return os.environ.get('RESIZEDRIVER_TEST_RUN', '')


def worker() -> str:
    """This pytest-xdist worker's name (``gw0``...; ``main`` without
    xdist), after :func:`run`."""
    return run() + os.environ.get('PYTEST_XDIST_WORKER', 'main')


def test_name(prefix: str, test: str) -> str:
    """A domain (and scenario directory) name for ``test``: unique in a
    run, and beside another run (:func:`run`); libvirt-safe."""
    return f'{prefix}-{run()}{test}'[:60].replace('[', '-').strip(']')


@contextlib.contextmanager
def _locked(name: str, mode: str = 'a+') -> Iterator:
    os.makedirs(RUN_DIR, exist_ok=True)
    with open(os.path.join(RUN_DIR, name), mode) as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def exclusive(resource: str) -> Iterator[None]:
    """Hold ``resource`` alone (blocks while another process holds it)."""
    with _locked(f'{resource}.lock'):
        yield


def guest_address() -> tuple[str, str]:
    """A guest's ``(ip/24, mac)`` on the test bridge that no other guest
    of any worker has now: the next of ``_COUNT`` in turn (far more than
    ever run at once)."""
    with _locked('addresses') as f:
        f.seek(0)
        text = f.read().strip()
        n = (int(text) + 1) % _COUNT if text.isdigit() else 0
        f.seek(0)
        f.truncate()
        f.write(str(n))
        f.flush()
    host = _FIRST + n
    return f'169.254.77.{host}/24', f'52:54:00:77:00:{host:02x}'
