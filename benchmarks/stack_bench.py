"""Benchmark: resizes through Nova's API on the stack (``tools/stack``),
resizedriver against Nova 34's own LibvirtDriver as both computes' driver,
in one run.

Per case and driver a fresh server on host A is resized (on A with a
flavor that has headroom extra specs, on A without, to B) and confirmed.
Measured: the time from the resize request to VERIFY_RESIZE and from the
confirm request to ACTIVE (the API polled every ``POLL`` s), the guest's
downtime from its console files (its "shutdown" line -> the next boot's
"ready", ``tests/stack/computes.py``), and where that downtime went, from
the timestamps of lines both drivers' computes log (``MARKS``).  It
measures; it never asserts.

Run it with ``benchmarks/run stack`` (as root, the stack set up), not
directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from typing import Optional

from benchmarks import report
from tests.lib import hostb
from tests.stack import cloud as stack
from tests.stack import computes

A, B = stack.HOSTS
POLL = 0.1
OURS = 'resizedriver.LibvirtResizeDriver'
#: variant -> the computes' driver and more [resizedriver] ssh_options
#: ('ours-mux': one ssh connection to a host, shared by every command and
#: copy for 30 s after the last; its socket under the stack's state)
DRIVERS = {'ours': (OURS, ''),
           'ours-mux': (OURS, 'ControlMaster=auto,ControlPersist=30,'
                        'ControlPath=/var/lib/rdstack/ssh-%C'),
           'upstream': ('libvirt.LibvirtDriver', '')}
DRIVER_TEXT = {'ours': 'resizedriver', 'ours-mux': 'resizedriver, mux',
               'upstream': 'Nova 34'}
#: case -> (target host, headroom extra specs on both flavors)
CASES = {'A+headroom': (A, True), 'A': (A, False), 'A->B': (B, False)}
#: the downtime's phases: each ends at the first line (after the previous
#: phase's end) of the host named that holds one of the texts; 'src' is
#: the source host (A), 'dst' the destination's.  The guest's own
#: "shutdown" line begins the first, its "ready" ends the last.
MARKS = (
    # the power button seen -> QEMU gone (both drivers destroy after it)
    ('shutdown', 'src', ('Instance destroyed successfully',)),
    # -> migrate_disk_and_power_off returned (the manager's next line)
    ('source disks', 'src', ('Neutron is not new enough',
                             'migrate_instance_start')),
    # -> the destination's finish_migration began: resize_instance's
    # cast to finish_resize, and the manager's work before the driver
    ('RPC, finish_resize', 'dst', ('finish_migration: ',
                                   'Starting finish_migration')),
    # -> the domain's XML built: images and disks on the destination
    ('dest disks', 'dst', ('Start _get_guest_xml',)),
    # -> libvirt says the guest runs
    ('define, start', 'dst', ('VM Started (Lifecycle Event)',
                              'VM Resumed (Lifecycle Event)')),
)
PHASES = tuple(name for name, _, _ in MARKS) + ('boot',)


@dataclasses.dataclass
class Result:
    case: str
    driver: str
    plan: str                   # resizedriver's ('' for upstream)
    to_verify: float            # resize request -> VERIFY_RESIZE
    to_active: float            # confirm request -> ACTIVE
    downtime: Optional[float]   # None: the guest never stopped
    before_off: Optional[float]  # resize request -> the guest's shutdown
    phases: dict[str, float]


def wait_exact(cloud: stack.Cloud, server, status: str) -> float:
    """``time.monotonic()`` when the API first shows ``status`` (polled
    every ``POLL`` s)."""
    def probe():
        now = cloud.conn.compute.get_server(server.id)
        assert now.status != 'ERROR', f'{server.id} ERROR: {now.fault}'
        return now.status == status and now.task_state is None
    stack.wait(f'{server.id} {status}', probe, 600, POLL)
    return time.monotonic()


def phases_of(lines: list[computes.LogLine], watch, dst: str,
              wall: float) -> dict[str, float]:
    """Seconds of each phase (``MARKS``) from the compute logs' lines;
    ``wall`` converts the watch's monotonic times to the logs' clock."""
    console = watch.lines
    down = next((line for line in console
                 if line.text.startswith('RDGUEST shutdown')), None)
    if down is None:
        return {}
    at = down.at + wall
    out: dict[str, float] = {}
    for name, where, texts in MARKS:
        host = A if where == 'src' else dst
        mark = next((line for line in lines
                     if line.at >= at and line.host == host and
                     any(t in line.text for t in texts)), None)
        if mark is None:
            return out
        out[name] = mark.at - at
        at = mark.at
    total = computes.downtime(console)
    if total is not None:
        out['boot'] = down.at + wall + total - at
    return out


def run_case(cloud: stack.Cloud, driver: str, case: str,
             tag: str) -> Result:
    """One resize of a fresh server (names ``tag``), confirmed."""
    host, room = CASES[case]
    extra = stack.ROOM if room else None
    small = cloud.flavor(f'{tag}-s', 1, 256, 1, extra)
    big = cloud.flavor(f'{tag}-b', 2, 512, 2, extra)
    server = cloud.boot(tag, small)
    logs = computes.ComputeLogs()
    wall = time.time() - time.monotonic()
    with cloud.only(host), computes.watch(server.id) as watch:
        began = time.monotonic()
        cloud.conn.compute.resize_server(server, big.id)
        verify = wait_exact(cloud, server, 'VERIFY_RESIZE') - began
        cloud.guest(server, 'the new flavor', lambda r: (
            r.ready and r.cpu_count == 2 and
            r.disks == {'vda': 2 * stack.GiB}))
    confirmed = time.monotonic()
    cloud.conn.compute.confirm_server_resize(server)
    active = wait_exact(cloud, server, 'ACTIVE') - confirmed
    summary = logs.summary(server.id) or {}
    down = computes.downtime(watch.lines)
    shutdown = next((line.at for line in watch.lines
                     if line.text.startswith('RDGUEST shutdown')), None)
    result = Result(
        case, driver, summary.get('plan', ''), verify, active, down,
        None if shutdown is None else shutdown - began,
        phases_of(logs.lines(server.id), watch, host, wall)
        if down is not None else {})
    cloud.delete(server)
    return result


def restart(driver: str) -> None:
    """The stack's computes with ``driver`` (a stop and a start: start
    writes nova.conf).  Upstream's own ssh and scp to B find B's key and
    known host through ``benchmarks/bin``'s wrappers, as a compute
    host's ~/.ssh/config would say."""
    top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tool = os.path.join(top, 'tools', 'stack')
    b = hostb.HostB.setup()
    compute_driver, ssh_options = DRIVERS[driver]
    env = dict(os.environ, RDSTACK_COMPUTE_DRIVER=compute_driver,
               RDSTACK_SSH_OPTIONS=ssh_options,
               RD_BENCH_KEY=b.key, RD_BENCH_KNOWN_HOSTS=b.known_hosts,
               PATH=os.path.join(top, 'benchmarks', 'bin') + ':' +
               os.environ['PATH'])
    subprocess.run([tool, 'stop'], check=True)
    close_mux(b)
    subprocess.run([tool, 'start'], check=True, env=env)


def close_mux(b: hostb.HostB) -> None:
    """End the shared ssh connection to B an 'ours-mux' run left (its
    master outlives nova-compute by ControlPersist), if there is one."""
    path = DRIVERS['ours-mux'][1].rsplit('ControlPath=', 1)[1]
    subprocess.run(['ssh', '-o', f'ControlPath={path}', '-O', 'exit',
                    '-l', 'root', b.addr], capture_output=True)


COLUMNS = ('resize', 'driver', 'plan', '->VERIFY s', 'confirm s',
           'downtime s', 'w/o boot s', 'before off s') + tuple(
               f'{p} s' for p in PHASES)


def _row(r: Result) -> tuple[str, ...]:
    def num(value: Optional[float]) -> str:
        return '-' if value is None else f'{value:.1f}'
    return (r.case, DRIVER_TEXT[r.driver], r.plan or '-', num(r.to_verify),
            num(r.to_active), num(r.downtime),
            num(None if r.downtime is None or 'boot' not in r.phases
                else r.downtime - r.phases['boot']),
            num(r.before_off),
            *(num(r.phases.get(p)) for p in PHASES))


def show(results: list[Result], directory: str, note: str) -> None:
    print(report.format_table(COLUMNS, [_row(r) for r in results], note))
    report.save_named(results, directory, note, 'stack')
    report.plot_stacked(
        [(f'{r.case}: {DRIVER_TEXT[r.driver]}',
          [r.phases.get(p, 0.0) for p in PHASES])
         for r in results if r.phases], PHASES,
        "s from the guest's \"shutdown\" line to its \"ready\"",
        'resize through the API: where the downtime goes',
        os.path.join(directory, 'stack-phases.png'), ncol=3)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog='benchmarks/run stack')
    p.add_argument('--drivers', default='ours,ours-mux,upstream',
                   help='of: ' + ', '.join(DRIVERS))
    p.add_argument('--cases', default=','.join(CASES),
                   help='of: ' + ', '.join(CASES))
    p.add_argument('--repeat', type=int, default=1)
    args = p.parse_args(argv)
    results: list[Result] = []
    try:
        for driver in args.drivers.split(','):
            restart(driver)
            measure(driver, args.cases.split(','), args.repeat, results)
    finally:
        close_mux(hostb.HostB.setup())
        note = (f'Nova 34 through its API on tools/stack (two computes, A '
                f'and host B), {os.cpu_count()} CPUs, TCG guests; one '
                f'server of 1 vCPU/256 MiB/1 GiB resized to 2/512 MiB/'
                f'2 GiB, then confirmed.  Phases from the compute logs (ms '
                f'stamps) and the guest\'s console; "-": not reached or '
                f'none.')
        if results:
            show(results, os.path.join('benchmarks', 'results'), note)
    return 0


def measure(driver: str, cases: list[str], repeat: int,
            results: list[Result]) -> None:
    """Each case ``repeat`` times with the computes' ``driver``, into
    ``results`` as they come (a failure keeps those before it)."""
    cloud = stack.Cloud(stack.connect())
    try:
        for n in range(repeat):
            for i, case in enumerate(cases):
                results.append(run_case(cloud, driver, case,
                                        f'{driver}{n}{i}'))
                print(report.format_table(COLUMNS, [_row(results[-1])], ''),
                      flush=True)
    finally:
        cloud.cleanup()


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
