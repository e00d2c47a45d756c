"""Nothing resizedriver does stops nova-compute (issue 21).

Nova 31-33's nova-compute runs monkey-patched by eventlet: one OS thread
runs every green thread (RPC, the service heartbeat, other instances'
operations), and a call that blocks it -- a libvirt call not through
Nova's tpool proxy, a wait that does not yield, a thread join, a pipe
read -- stops them all for as long as it blocks; the scheduler then sees
the host as down.  Nova 34 runs native threads.  Each test resizes a tiny
guest once by one plan and confirms, every manager call in a nova-compute
process started as the installed Nova starts nova-compute
(:mod:`tests.nova.probed_node`), and fails if the probe there (a thread
of that backend ticking every 0.5 s) missed its tick by more than 2 s in
any call of ours.
"""

from __future__ import annotations

import os
from importlib import metadata

import pytest

from resizedriver import headroom
from tests.lib import guestlog, hostb, parallel
from tests.nova import conftest
from tests.nova.test_nova_cross_host import BIG, SMALL, CrossServer

#: nova-compute's backend: eventlet up to Nova 33, native threads on 34
BACKEND = ('threading' if int(metadata.version('nova').split('.')[0]) >= 34
           else 'eventlet')
#: the longest any tick may be late by (ticks are due every 0.5 s)
MAX_GAP = 2.0
ROOT = '/var/lib/resizedriver-tests/nova-probe-' + parallel.worker()
ROOM = {headroom.SPEC_VCPUS: '4', headroom.SPEC_MEMORY: '1024'}
#: each plan's flavors, before and after: live's grant headroom; copy's
#: disk is a raw file of 6 GiB, nearly all holes (which a copy hashes
#: as zeros: 3.5 s on an idle machine here, more in CI)
FLAVORS = {'live': (SMALL + (ROOM,), BIG + (ROOM,)),
           'overlay': (SMALL, BIG),
           'copy': (('4', 1, 256, 6), ('5', 2, 512, 6)),
           'precopy': (SMALL, BIG)}
#: each plan's nova.conf: copy's disks are raw files
CONF = {'copy': {'use_cow_images': False}}

pytestmark = pytest.mark.releases


@pytest.fixture(scope='module')
def root() -> str:
    conftest.prepare(ROOT)
    return ROOT


@pytest.fixture(scope='module')
def host_b(root) -> hostb.HostB:
    return hostb.HostB.setup()


def _server(request, b) -> CrossServer:
    s = CrossServer(b, request.param, FLAVORS[request.param][0],
                    root=ROOT, name_prefix='rdtest-pr' + parallel.worker(),
                    backend=BACKEND, conf=CONF.get(request.param))
    request.addfinalizer(s.remove)
    return s


@pytest.fixture
def same_host(request, root) -> CrossServer:
    """A running instance on A, resized on A by ``request.param``'s plan:
    ``live`` (its flavors grant headroom) or ``overlay``."""
    return _server(request, None)


@pytest.fixture
def to_b(request, host_b) -> CrossServer:
    """A running instance on A, moved to B by ``request.param``'s plan."""
    return _server(request, host_b)


def _resize_and_confirm(s: CrossServer) -> None:
    """One resize of ``s`` by its plan, confirmed; every call probed."""
    s.console_on_a(1)
    migrated, finished = s.resize(FLAVORS[s.plan][1])
    confirmed = s.a_node('confirm_resize', uuid=s.uuid,
                         migration=migrated['migration'])
    answers = {'migrate': migrated, 'finish': finished,
               'confirm': confirmed}
    print(f'{s.plan} under {BACKEND}: longest gaps (s) ' + ', '.join(
        f'{call} {a["probe"]["max_gap"]} ({a["probe"]["ticks"]} ticks '
        f'in {a["seconds"]:.1f} s)' for call, a in answers.items()))
    gaps = {call: answer['probe'] for call, answer in answers.items()}
    for call, probe in gaps.items():
        assert probe['backend'] == BACKEND
        late = '\n'.join(f'{gap["seconds"]} s from {gap["at"]} s in, in:\n'
                         f'{gap["stack"]}' for gap in probe['late'])
        assert probe['max_gap'] <= MAX_GAP, (
            f'{s.plan}: {call} stopped the {BACKEND} probe for '
            f'{probe["max_gap"]} s:\n{late}')


@pytest.mark.parametrize('same_host', ['live', 'overlay'], indirect=True)
def test_a_same_host_resize_never_blocks_nova_compute(same_host):
    s = same_host
    _resize_and_confirm(s)
    console = os.path.join(s.dir(), 'console.log')
    boot = 1 if s.plan == 'live' else 2
    guestlog.wait_for(console, f'2 CPUs in boot {boot}', lambda r: (
        r.boot == boot and r.cpu_count == 2))


@pytest.mark.parametrize('to_b', ['copy', 'precopy'], indirect=True)
def test_a_move_to_host_b_never_blocks_nova_compute(to_b):
    s = to_b
    _resize_and_confirm(s)
    assert s.console_on_b(2).cpu_count == 2
