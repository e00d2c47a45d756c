"""Benchmark: where a cold resize's downtime goes under the operator
command (``resizedriver resize``), with no Nova around it.

The test guest, laid out as Nova would (``tests.lib.testguest``), is
resized by the command run in this process (so its plans' steps are
seen: ``phases.StepLog``): the ``overlay`` plan (same host and path) and
the ``copy`` plan (same host, another instances path: the disks are
copied while the guest is down).  Measured per case as under Nova
(``phases``): from the guest's power-off line to the resized guest's
start returning, phase by phase.  It measures; it never asserts.

Run it with ``benchmarks/run cli`` (as root), not directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time

from benchmarks import phases, probes, report
from benchmarks.resize_bench import READY_TIMEOUT, wait_ready
from resizedriver.cmd import cli
from resizedriver.host import Host
from tests.lib import guestlog, hostenv, parallel, testguest

#: the case: more resize arguments ('copy': to another instances path)
CASES = ('overlay', 'copy')
#: the orchestrator's own steps, which hold each half's plan
HALVES = ('migrate_disk_and_power_off', 'finish_migration')
STEPS = phases.StepLog().install()


def _config(root: str) -> str:
    path = os.path.join(root, 'resizedriver.conf')
    with open(path, 'w') as f:
        f.write(f"""[DEFAULT]
instances_path = {root}/instances
use_cow_images = true
[libvirt]
virt_type = kvm
[resizedriver]
shutdown_timeout = 60
shutdown_retry_interval = 2
lock_path = {root}/locks
live_resize = never
""")
    return path


def _halves(begin: float, end: float) -> tuple[phases.Call, phases.Call]:
    """The migrate and finish halves of one resize, by the orchestrator's
    steps (which are left out of each half's steps)."""
    call = STEPS.call(begin, end)
    marks = {name: at for at, name in call.steps if name in HALVES}
    steps = [(at, n) for at, n in call.steps if n not in HALVES]
    split = marks[HALVES[1]]
    return (phases.Call(marks[HALVES[0]], split,
                        [s for s in steps if s[0] < split]),
            phases.Call(split, end, [s for s in steps if s[0] >= split]))


def _command(*argv: str) -> None:
    """``resizedriver ARGV``, in this process, configured (``main``)
    before."""
    cli.run(cli.build_parser().parse_args(list(argv)))


def run_case(host: Host, root: str,
             case: str) -> tuple[str, phases.Phases | None]:
    """One resize of a fresh guest; its plan and phases."""
    ip, mac = parallel.guest_address()
    name = f'rdbench-cli-{os.getpid()}-{case}'
    guest = testguest.create(host, os.path.join(root, 'instances'),
                             name=name, mac=mac, ip=ip,
                             bridge=hostenv.BRIDGE)
    try:
        host.lookup(guest.uuid).start()
        console = guest.console_log(host)
        guestlog.wait_for_boot(console, 1, READY_TIMEOUT)
        dest = os.path.join(root, 'dest-instances')
        more = ['--dest-instances-path', dest] if case == 'copy' else []
        consoles = [console, os.path.join(guest.dir + '_resize',
                                          'console.log'),
                    os.path.join(dest, guest.uuid, 'console.log')]
        device = probes.block_device(root)
        domain = phases.DomainWatch(guest.uuid)
        with probes.ConsoleWatch(consoles, device) as watch, domain:
            t0 = time.monotonic()
            _command('resize', name, '--vcpus', '2', '--memory', '512',
                     *more)
            t1 = time.monotonic()
            wait_ready(watch, 2, t0)
        migrate, finish = _halves(t0, t1)
        down = watch.last_between(t0, migrate.end)
        where = phases.phases(down.at if down else t0, domain, migrate,
                              finish)
        _command('confirm', name)
        return case, where
    finally:
        testguest.remove(host, guest)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog='benchmarks/run cli',
                                description=__doc__)
    p.add_argument('--cases', default=','.join(CASES),
                   type=lambda s: s.split(','))
    p.add_argument('--results', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), 'results'))
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit('benchmarks/run cli drives the system libvirtd: run it as '
                 'root')
    hostenv.ensure_bridge()
    host = Host('qemu:///system')
    root = f'/var/lib/rdbench-cli-{os.getpid()}'
    for d in ('instances', 'dest-instances'):
        os.makedirs(os.path.join(root, d))
    rows = []
    try:
        if cli.main(['--config-file', _config(root), 'status']):
            return 1
        for case in args.cases:
            print(f'rdbench: cli {case} ...', file=sys.stderr, flush=True)
            rows.append(run_case(host, root, case))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(report.phase_table(
        [((plan,), where) for plan, where in rows], ('plan',),
        f'resizedriver resize, same host; {os.cpu_count()} host CPUs'))
    report.plot_phases(rows, os.path.join(args.results, 'cli-phases.png'))
    with open(os.path.join(args.results, 'cli-phases.json'), 'w') as f:
        json.dump([{'plan': plan, 'phases': dataclasses.asdict(where)}
                   for plan, where in rows if where is not None], f,
                  indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
