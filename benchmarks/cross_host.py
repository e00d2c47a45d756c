"""Benchmark: a resize from this host (A) to host B, resizedriver against
upstream Nova 34's LibvirtDriver, through the same testbed.

Host B is ``tools/host-b``'s: its own libvirtd, machine-id and instances
filesystem at the same path as A's (upstream needs that), reached over one
veth pair, so every byte between the hosts is counted at its A end.  Each
node's half runs in a nova-compute process of its own on its host
(``tests/nova/compute_node.py``: the driver loaded from the nova.conf
line, ``init_host`` done before the call arrives), as the compute manager
calls them: ``migrate_disk_and_power_off`` on A, ``finish_migration`` on
B, ``confirm_migration`` on A.  The guest keeps writing (``--rate``
KiB/s) through the move, on top of the data written into its root overlay
beforehand (``--sizes``).  Measured per case: guest downtime from its own
console (last line on A before it went down -> first "ready" on B), wall
time of each driver call, bytes on the wire, and the data the instance
had allocated when the move began.  It measures; it never asserts.

Run it with ``benchmarks/run cross-host`` (as root), not directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks import phases, probes, report
from benchmarks.resize_bench import (FILL_CHUNK, FILL_OFFSET, GiB, MiB,
                                     READY_TIMEOUT, parse_size)
from tests.lib import guestlog, hostb
from tests.lib.testguest import REPO
from tests.nova import compute_node

DRIVERS = {'ours': 'resizedriver.LibvirtResizeDriver',
           'copy': 'resizedriver.LibvirtResizeDriver',
           'upstream': 'libvirt.LibvirtDriver'}
#: [resizedriver] options of a variant beyond the ssh ones ('copy': the
#: copy plan, pre-copy off)
OPTIONS: dict[str, dict[str, Any]] = {'ours': {},
                                      'copy': {'pre_copy': False}}
#: ssh and scp for upstream Nova, which runs them as they are: with B's
#: key and known host (what ~/.ssh/config would say on a compute host)
SSH_WRAPPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            'bin')


@dataclasses.dataclass
class CrossResult:
    size: int                # bytes written into the root overlay
    driver: str
    plan: str                # resizedriver's plan ('' for upstream)
    downtime: float
    migrate: float
    finish: float
    confirm: float
    wire: int                # bytes across the veth, both ways
    allocated: int           # the instance's allocated data at the start
    rate: int                # KiB/s the guest wrote throughout
    #: where the downtime went (None: upstream's)
    phases: phases.Phases | None = None


class Node:
    """A nova-compute process on A or B, started before its call comes."""

    def __init__(self, root: str, name: str, driver: str,
                 b: hostb.HostB,
                 libvirt: dict[str, str] | None = None) -> None:
        options: dict[str, Any] = {'compute_driver': DRIVERS[driver],
                                   'libvirt': libvirt or {}}
        if driver in OPTIONS:
            options['resizedriver'] = {
                'ssh_user': 'root', 'ssh_identity_file': b.key,
                'ssh_options': b.client_options(), **OPTIONS[driver]}
        argv = [sys.executable, '-m', 'tests.nova.compute_node', root, name,
                json.dumps(options)]
        if name == 'b':
            argv = [hostb.SCRIPT, 'run'] + argv
        env = dict(os.environ, PYTHONPATH=REPO, RD_BENCH_KEY=b.key,
                   RD_BENCH_KNOWN_HOSTS=b.known_hosts,
                   PATH=SSH_WRAPPERS + os.pathsep + os.environ['PATH'])
        self.name = name
        # a file, not a pipe: its log would fill a pipe no one reads
        # while ask() waits for an answer
        self.err = tempfile.TemporaryFile('w+')
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=self.err, text=True,
                                     cwd=REPO, env=env)

    def _failed(self, call: str) -> RuntimeError:
        self.err.seek(0)
        return RuntimeError(f'{call} on {self.name} failed:\n'
                            f'{self.err.read()[-4000:]}')

    def ask(self, call: str, **req) -> dict:
        """One call, the process staying for the next: the answer comes
        once the service is up (``init_host`` done) and the call ran."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(dict(req, call=call)) + '\n')
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=60)
            raise self._failed(call)
        return json.loads(line)

    def call(self, call: str, **req) -> dict:
        """The last call: the process ends after it."""
        req['call'] = call
        out, _ = self.proc.communicate(json.dumps(req), timeout=3600)
        if self.proc.returncode:
            raise self._failed(call)
        return json.loads(out.strip().splitlines()[-1])


class Bench:
    """``libvirt``: every node's nova.conf [libvirt] options beyond the
    defaults (the RBD benchmark's ``images_type = rbd``)."""

    def __init__(self, root: str, b: hostb.HostB,
                 libvirt: dict[str, str] | None = None) -> None:
        self.root = root
        self.b = b
        self.libvirt = libvirt

    def node(self, name: str, driver: str) -> Node:
        return Node(self.root, name, driver, self.b, self.libvirt)

    def call(self, name: str, driver: str, call: str, **req) -> dict:
        return self.node(name, driver).call(call, **req)


def _inst_dir(uuid: str, suffix: str = '') -> str:
    return os.path.join(compute_node.INSTANCES, uuid + suffix)


def _allocated(uuid: str) -> int:
    inst = _inst_dir(uuid)
    return sum(os.lstat(os.path.join(inst, f)).st_blocks * 512
               for f in os.listdir(inst) if f != 'console.log')


def _fill(uuid: str, size: int) -> None:
    """``size`` bytes into the root overlay (guest off), as the same-host
    benchmark does (qemu-io)."""
    writes = []
    for offset in range(0, size, FILL_CHUNK):
        length = min(FILL_CHUNK, size - offset)
        writes += ['-c', f'write -P 0x5a {FILL_OFFSET + offset} {length}']
    subprocess.run(['qemu-io', '-f', 'qcow2', *writes,
                    os.path.join(_inst_dir(uuid), 'disk')],
                   check=True, capture_output=True, timeout=3600)
    os.sync()


def _ready_after(watch: probes.ConsoleWatch, after: float) -> probes.Line:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        line = watch.first('RDGUEST ready', after)
        if line is not None:
            return line
        time.sleep(probes.POLL)
    raise RuntimeError('the guest did not print "ready" on B')


def _plan(disk_info: str) -> str:
    try:
        info = json.loads(disk_info)
    except ValueError:
        return ''
    # upstream's disk info is a list of its own
    return str(info.get('plan', '')) if isinstance(info, dict) else ''


def run_case(bench: Bench, driver: str, size: int, rate: int,
             n: int) -> CrossResult:
    root_gb = math.ceil((FILL_OFFSET + size) / GiB) + 1
    ip, mac = f'169.254.77.{180 + n % 20}/24', f'52:54:00:77:03:{n:02x}'
    cmdline = f'rdwrite={rate}' if rate else ''
    uuid = bench.call('a', driver, 'spawn', flavor=('1', 1, 256, root_gb),
                      ip=ip, mac=mac, cmdline=cmdline)['uuid']
    try:
        console_a = os.path.join(_inst_dir(uuid), 'console.log')
        guestlog.wait_for_boot(console_a, 1, READY_TIMEOUT)
        bench.call('a', driver, 'power_off', uuid=uuid)
        _fill(uuid, size)
        bench.call('a', driver, 'power_on', uuid=uuid)
        guestlog.wait_for_boot(console_a, 2, READY_TIMEOUT)
        bench.call('b', driver, 'seed')
        allocated = _allocated(uuid)
        consoles = [console_a,
                    os.path.join(_inst_dir(uuid, '_resize'), 'console.log'),
                    bench.b.path(console_a)]
        device = probes.block_device(compute_node.INSTANCES)
        a, b = bench.node('a', driver), bench.node('b', driver)
        domain = phases.DomainWatch(uuid)
        with probes.ConsoleWatch(consoles, device) as watch, domain:
            wire0 = bench.b.wire_bytes()
            t0 = time.monotonic()
            out = a.call('resize_instance', uuid=uuid, steps=True,
                         flavor=('2', 2, 512, root_gb))
            t1 = time.monotonic()
            fin = b.call('finish_resize', uuid=uuid, ip=ip, cmdline=cmdline,
                         migration=out['migration'], steps=True,
                         disk_info=out['disk_info'])
            ready = _ready_after(watch, t0)
            conf = bench.call('a', driver, 'confirm_resize', uuid=uuid,
                              migration=out['migration'])
            wire = bench.b.wire_bytes() - wire0
        down = watch.last_between(t0, t1)
        down_at = down.at if down else t0
        where = None if driver == 'upstream' else phases.phases(
            down_at, domain, phases.Call.from_dict(out['steps']),
            phases.Call.from_dict(fin['steps']))
        return CrossResult(size, driver, _plan(out['disk_info']),
                           ready.at - down_at, out['seconds'],
                           fin['seconds'], conf['seconds'], wire, allocated,
                           rate, where)
    finally:
        _remove(bench, driver, uuid)


def _remove(bench: Bench, driver: str, uuid: str) -> None:
    """The instance on whichever host has it (Nova's destroy of one it
    does not have only cleans up)."""
    for name in ('a', 'b'):
        try:
            bench.call(name, driver, 'destroy', uuid=uuid)
        except RuntimeError as e:
            print(f'rdbench: destroy on {name}: {e}', file=sys.stderr)


COLUMNS = ('data', 'driver', 'plan', 'downtime s', 'migrate s', 'finish s',
           'confirm s', 'wire MiB', 'allocated MiB', 'wire/allocated')


def _row(r: CrossResult) -> tuple[str, ...]:
    return (report.size_text(r.size), report.CROSS_DRIVER_TEXT[r.driver],
            r.plan or '-', f'{r.downtime:.1f}', f'{r.migrate:.1f}',
            f'{r.finish:.1f}', f'{r.confirm:.1f}', f'{r.wire / MiB:.0f}',
            f'{r.allocated / MiB:.0f}', f'{r.wire / max(r.allocated, 1):.2f}')


def show(results: list[CrossResult], directory: str, note: str) -> None:
    if not results:
        return
    print(report.format_table(COLUMNS, [_row(r) for r in results], note))
    cases = [((report.size_text(r.size), r.plan), r.phases)
             for r in results]
    print('\n' + report.phase_table(
        cases, ('data', 'plan'),
        'A -> B: guest\'s power-off line on A -> start returned on B'))
    report.plot_phases([(' '.join(case), where) for case, where in cases],
                       os.path.join(directory, 'cross-host-phases.png'))
    report.save_named(results, directory, note, 'cross-host')
    report.plot_cross(results, report.CROSS_DRIVER_TEXT,
                      os.path.join(directory, 'cross-host.png'))
    print(f'rdbench: wrote {directory}/cross-host.json and '
          f'cross-host.png', file=sys.stderr)


def start_on_host_b(p: argparse.ArgumentParser, argv: list[str],
                    name: str) -> tuple[argparse.Namespace, hostb.HostB, str]:
    """Parse ``argv`` (with ``--results``), as root only, host B set up;
    and a fresh work directory ``/var/lib/rdbench-<name>-<pid>``."""
    p.add_argument('--results', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), 'results'))
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit(f'{p.prog} sets up host B and drives its daemons: run it '
                 f'as root')
    b = hostb.HostB.setup()
    root = f'/var/lib/rdbench-{name}-{os.getpid()}'
    os.makedirs(root)
    return args, b, root


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog='benchmarks/run cross-host',
                                description=__doc__)
    p.add_argument('--sizes', default='256M,1G,4G',
                   type=lambda s: [parse_size(x) for x in s.split(',')])
    p.add_argument('--rate', type=int, default=512,
                   help='KiB/s the guest writes during the move (0: none)')
    p.add_argument('--drivers', default='ours,upstream',
                   type=lambda s: s.split(','))
    args, b, root = start_on_host_b(p, argv, 'cross')
    results: list[CrossResult] = []
    bench = Bench(root, b)
    try:
        for size in args.sizes:
            for driver in args.drivers:
                print(f'rdbench: cross-host {report.size_text(size)} '
                      f'{driver} ...', file=sys.stderr, flush=True)
                results.append(run_case(bench, driver, size, args.rate,
                                        len(results)))
    finally:
        show(results, args.results,
             f'A -> B over a veth (tools/host-b), the guest writing '
             f'{args.rate} KiB/s throughout; {os.cpu_count()} host CPUs')
        subprocess.run(['rm', '-rf', root], check=False)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
