"""Benchmark: instance disks in Ceph RBD (``[libvirt] images_type = rbd``),
resizedriver against upstream Nova 34's LibvirtDriver on the same cluster
(``tools/ceph``, which host A and host B share), on this host and from A
to host B.

Each case spawns an instance of the test guest on A with a 1 GiB root
image in the pool and resizes it to 2 vCPUs, 512 MiB and a 2 GiB root,
every node's half in a nova-compute process of its own on its host
(``tests/nova/compute_node.py``, as ``benchmarks/run cross-host`` does):
``migrate_disk_and_power_off`` and ``confirm_migration`` on A,
``finish_migration`` on the destination.  Each node is up (``init_host``
done) before the resize begins.  resizedriver runs whatever plan its
chooser picks, and each row names the plan that ran, read from the
resize's record on A (``resize.json``): with a flavor granting headroom
(``resizedriver:max_*``) on the same host the live plan, otherwise the
cold ``rbd`` plan.  Measured per run: the guest's downtime
from its console (its last line before it went down -> its first
"ready"; a live resize is 0 when the guest shows its new vCPUs and disk
and never printed a new boot), the time until the guest shows its new
shape, and each driver call's wall time; the median of ``--repeats``
runs.  For a cold resize by a plan of ours, where the time went from the
guest's power-off to the resized guest's start returning, a column per
phase (``benchmarks.phases``: the plan's steps as the nodes logged them,
the domain on A as libvirt and its QEMU process showed it going down).
Each run notes the machine's load average as it began.  It measures;
it never asserts on time.

Run it with ``benchmarks/run rbd`` (as root), not directly.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from benchmarks import phases, probes, report
from benchmarks.cross_host import Bench, Node, start_on_host_b
from benchmarks.rbd_report import (NEW, OLD, RbdResult, downed_steps,
                                   new_shape_at, plot, seconds, text)
from benchmarks.resize_bench import READY_TIMEOUT, ROOM
from resizedriver import exception
from resizedriver import record as rd_record
from resizedriver.layout import InstanceLayout
from tests.lib import ceph as test_ceph
from tests.lib import guestlog, parallel
from tests.nova import compute_node

#: topology (``--topologies``): its name in the table, the destination
TOPOLOGIES = {'same': ('same host', 'a'), 'cross': ('A -> B', 'b')}
#: (topology, driver, headroom): the cases, in the order they run
CASES = (('same', 'ours', True), ('same', 'ours', False),
         ('same', 'upstream', False), ('cross', 'ours', False),
         ('cross', 'upstream', False))
#: the lock of the tests that use host B and the shared instances path
#: (``tests/conftest.py``): a case runs only while none of them does
HOST_B_LOCK = 'hostb'


def flavors(headroom: bool) -> tuple[list, list]:
    """The old and the new flavor, as ``compute_node`` takes them."""
    specs = ROOM if headroom else {}
    return [*OLD, specs], [*NEW, specs]


def plan_ran(instances: str, uuid: str) -> str:
    """The plan resizedriver's record on this host names for the pending
    resize of ``uuid``; '' where there is none (Nova's own driver)."""
    try:
        return rd_record.load_pending(InstanceLayout(instances, uuid)).plan
    except exception.NotFound:
        return ''


def wait(watch: probes.ConsoleWatch, what: str, found) -> float:
    """``found(lines)``'s time, once it has one (bounded)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        at = found(watch.lines)
        if at is not None:
            return at
        time.sleep(probes.POLL)
    raise RuntimeError(f'the guest did not print {what} within '
                       f'{READY_TIMEOUT}s')


def run_case(bench: Bench, topology: str, driver: str,
             headroom: bool) -> RbdResult:
    name, dest = TOPOLOGIES[topology]
    old, new = flavors(headroom)
    ip, mac = parallel.guest_address()
    uuid = bench.call('a', driver, 'spawn', flavor=old, ip=ip,
                      mac=mac)['uuid']
    on = ['a']                          # where the guest is
    started: list[Node] = []
    try:
        here = os.path.join(compute_node.INSTANCES, uuid)
        console = os.path.join(here, 'console.log')
        guestlog.wait_for_boot(console, 1, READY_TIMEOUT)
        consoles = [console, os.path.join(here + '_resize', 'console.log'),
                    bench.b.path(console)]
        a, there = bench.node('a', driver), bench.node(dest, driver)
        started += [a, there]
        for node in started:            # the services are up
            node.ask('seed', steps=True)
        device = probes.block_device(compute_node.INSTANCES)
        load = os.getloadavg()[0]
        with probes.ConsoleWatch(consoles, device) as watch, \
                phases.DomainWatch(uuid) as domain:
            t0 = time.monotonic()
            out = a.call('resize_instance', uuid=uuid, flavor=new,
                         dest=dest, steps=True)
            t1 = time.monotonic()
            plan = plan_ran(compute_node.INSTANCES, uuid)
            fin = there.call('finish_resize', uuid=uuid, ip=ip,
                             migration=out['migration'], steps=True,
                             disk_info=out['disk_info'])
            on = [dest]
            down_at = t0
            if plan == 'live':
                shown = wait(watch, 'its new vCPUs and disk',
                             lambda lines: new_shape_at(lines, t0))
                down = 0.0
            else:
                shown = wait(watch, '"ready"', lambda _: getattr(
                    watch.first('RDGUEST ready', t0), 'at', None))
                last = watch.last_between(t0, t1)
                down_at = last.at if last else t0
                down = shown - down_at
        migrate = phases.Call.from_dict(out['steps'])
        finish = phases.Call.from_dict(fin['steps'])
        cold = plan not in ('', 'live')
        where = phases.phases(down_at, domain, migrate, finish) \
            if cold else None
        downed = downed_steps(migrate, finish) if cold else {}
        conf = bench.call('a', driver, 'confirm_resize', uuid=uuid,
                          migration=out['migration'])
        return RbdResult(name, driver, headroom, plan, down,
                         shown - t0, seconds(out), seconds(fin),
                         seconds(conf), load, where, downed)
    finally:
        for node in started:            # a call that never came: its
            if node.proc.poll() is None:    # input ends, so does it
                node.proc.communicate(timeout=60)
        for host in on + [n for n in ('a', dest) if n not in on]:
            try:
                bench.call(host, driver, 'destroy', uuid=uuid)
            except RuntimeError as e:
                print(f'rdbench: destroy on {host}: {e}', file=sys.stderr)


def show(results: list[RbdResult], directory: str, note: str) -> None:
    if not results:
        return
    print(text(results, note))
    report.save_named(results, directory, note, 'rbd')
    plot(results, os.path.join(directory, 'rbd.png'))
    print(f'rdbench: wrote {directory}/rbd.json and rbd.png',
          file=sys.stderr)


def load() -> str:
    """The machine's load average (1, 5 and 15 minutes): a machine shared
    with others is noisy, and the table says how noisy it was."""
    return '/'.join(f'{v:.2f}' for v in os.getloadavg())


def note(pool: str, started: str, load_before: str) -> str:
    """What the table's numbers are, and when and how loaded the machine
    was: from ``started`` (its load ``load_before``) to now."""
    return (f'{started}; medians of each row\'s runs; {OLD[1]} -> {NEW[1]} '
            f'vCPUs, {OLD[2]} -> {NEW[2]} MiB, a {OLD[3]} GiB root image in '
            f'pool {pool} grown to {NEW[3]} GiB; {os.cpu_count()} host CPUs, '
            f'load average {load_before} before, {load()} after')


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog='benchmarks/run rbd',
                                description=__doc__)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--topologies', default=','.join(TOPOLOGIES),
                   type=lambda s: s.split(','),
                   help='same: on this host; cross: A -> B (default both)')
    p.add_argument('--drivers', default='ours,upstream',
                   type=lambda s: s.split(','),
                   help='ours: resizedriver; upstream: Nova 34\'s own')
    args, b, root = start_on_host_b(p, argv, 'rbd')
    ceph = test_ceph.Ceph.setup()
    bench = Bench(root, b, ceph.libvirt_options())
    results: list[RbdResult] = []
    started = time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())
    load_before = load()
    try:
        for n in range(args.repeats):
            for case in CASES:
                if case[0] not in args.topologies or \
                        case[1] not in args.drivers:
                    continue
                print(f'rdbench: rbd {n + 1}/{args.repeats} {case} ...',
                      file=sys.stderr, flush=True)
                with parallel.exclusive(HOST_B_LOCK):
                    results.append(run_case(bench, *case))
    finally:
        show(results, args.results, note(ceph.pool, started, load_before))
        subprocess.run(['rm', '-rf', root], check=False)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
