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
from typing import Optional

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
GiB = 1024 ** 3
ROOT = '/var/lib/resizedriver-tests/nova-probe-' + parallel.worker()
ROOM = {headroom.SPEC_VCPUS: '4', headroom.SPEC_MEMORY: '1024'}
#: live's flavors grant headroom; overlay's then goes beyond it (cold)
ROOMY, ROOMY_BIG, BEYOND = SMALL + (ROOM,), BIG + (ROOM,), ('6', 2, 1152, 3)
#: copy's disk is a raw file of 6 GiB, nearly all holes (which a copy
#: hashes as zeros: 3.5 s on an idle machine here, more in CI)
RAW, RAW_BIG = ('4', 1, 256, 6), ('5', 2, 512, 6)

pytestmark = pytest.mark.releases


@pytest.fixture(scope='module')
def root() -> str:
    conftest.prepare(ROOT)
    return ROOT


@pytest.fixture(scope='module')
def host_b(root) -> hostb.HostB:
    return hostb.HostB.setup()


def _server(request, b, plan: str, flavor: tuple,
            conf: Optional[dict] = None) -> CrossServer:
    s = CrossServer(b, plan, flavor, root=ROOT,
                    name_prefix='rdtest-pr' + parallel.worker(),
                    backend=BACKEND, conf=conf)
    request.addfinalizer(s.remove)
    return s


@pytest.fixture
def to_b(request, host_b) -> CrossServer:
    """A running instance on A, to move to B by ``request.param``'s plan
    (copy's disks are raw files)."""
    if request.param == 'copy':
        return _server(request, host_b, 'copy', RAW,
                       {'use_cow_images': False})
    return _server(request, host_b, request.param, SMALL)


def _resize_and_confirm(s: CrossServer, flavor: tuple) -> None:
    """One resize of ``s`` by its plan, confirmed; every call probed."""
    migrated, finished = s.resize(flavor)
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


def test_same_host_resizes_never_block_nova_compute(request, host_b):
    """One guest: live, then overlay (beyond its headroom: cold).  In
    host B's lane although it stays on A: its nodes' ``init_host``
    recovers every journal in A's shared instances path, the cross-host
    tests' too."""
    s = _server(request, None, 'live', ROOMY)
    console = os.path.join(s.dir(), 'console.log')
    s.console_on_a(1)
    _resize_and_confirm(s, ROOMY_BIG)
    guestlog.wait_for(console, '2 CPUs, still in boot 1', lambda r: (
        r.boot == 1 and r.cpu_count == 2))
    s.plan = 'overlay'
    _resize_and_confirm(s, BEYOND)
    assert s.console_on_a(2).disks == {'vda': 3 * GiB}


@pytest.mark.parametrize('to_b', ['copy', 'precopy'], indirect=True)
def test_a_move_to_host_b_never_blocks_nova_compute(to_b):
    s = to_b
    s.console_on_a(1)
    _resize_and_confirm(s, RAW_BIG if s.plan == 'copy' else BIG)
    assert s.console_on_b(2).cpu_count == 2
