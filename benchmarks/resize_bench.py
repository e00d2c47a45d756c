"""Benchmark: resizedriver against upstream Nova 34's LibvirtDriver.

Both drivers are loaded by Nova's own ``load_compute_driver`` in one
process (``resizedriver.LibvirtResizeDriver`` and ``libvirt.LibvirtDriver``),
and each case resizes a freshly spawned, identical instance of the test
guest with each variant (``DRIVERS``: resizedriver live, with flavors that
grant headroom; resizedriver cold, ``live_resize = never``; upstream),
the calls made as nova-compute makes them
(``migrate_disk_and_power_off`` with the manager's shutdown timeout and
retry interval, ``finish_migration``, ``confirm_migration``), on the real
local libvirtd.  It measures; it never asserts on time.

Run it with ``benchmarks/run`` (as root), not directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

# First: Nova's concurrency mode, set as nova-compute sets it (novaenv).
# Nova 34's native threads refuse to start once eventlet is imported, as
# the Nova modules below would import it (futurist).
from tests.nova import novaenv  # isort: skip

import libvirt
from nova import objects
from nova.virt import driver as nova_driver

from benchmarks import phases, probes, report
from tests.lib import guestlog, hostenv

#: resizedriver's plans' steps, as they begin
STEPS = phases.StepLog().install()
MiB = 1024 ** 2
GiB = 1024 ** 3
CONF = novaenv.CONF
#: driver variant: the nova.conf compute_driver, and resizedriver's
#: [resizedriver] live_resize plus whether the flavors grant headroom,
#: and use_cow_images (False: raw disks, which resizedriver copies)
DRIVERS = {'live': ('resizedriver.LibvirtResizeDriver', 'auto', True, True),
           'ours': ('resizedriver.LibvirtResizeDriver', 'never', False,
                    True),
           'copy': ('resizedriver.LibvirtResizeDriver', 'never', False,
                    False),
           'upstream': ('libvirt.LibvirtDriver', 'never', False, True)}
#: flavor extra specs granting headroom (the "live" variant)
ROOM = {'resizedriver:max_vcpus': '4', 'resizedriver:max_memory_mb': '2048'}
KINDS = ('cpu', 'disk')      # CPU/RAM only; root disk grow by 1 GiB
PREFIX = 'rdbench-'
FILL_OFFSET = 1 * MiB        # sector 0 holds the guest's boot counter
FILL_CHUNK = 1 * GiB         # qemu-io writes at most 2 GiB - 512 at once
READY_TIMEOUT = 600          # s; TCG boots on a busy host can be slow
CHILD_TIMEOUT = 3600         # s; qemu-io writing GiBs


@dataclasses.dataclass
class Result:
    kind: str
    size: int                # bytes written into the root overlay
    driver: str
    downtime: float          # last console line before off -> "ready"
    migrate: float           # wall time of migrate_disk_and_power_off
    finish: float            # ... of finish_migration
    confirm: float           # ... of confirm_migration
    written_down: int        # device bytes written while the guest was down
    written_total: int       # ... from migrate to after confirm + sync
    background: float        # device write rate just before, bytes/s
    down_line: str           # the console line downtime starts at
    plan: str = ''           # resizedriver's plan ('' for upstream)
    #: where the cold downtime went (None: live, or upstream's)
    phases: phases.Phases | None = None


def parse_size(text: str) -> int:
    m = re.fullmatch(r'(\d+)([MG])i?B?', text.strip(), re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f'not a size like 256M or 4G: {text}')
    return int(m.group(1)) * (MiB if m.group(2).upper() == 'M' else GiB)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='benchmarks/run', description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--sizes', default='256M,1G,4G',
                   type=lambda s: [parse_size(x) for x in s.split(',')],
                   help='data written into the root overlay before each '
                        'resize (default 256M,1G,4G)')
    p.add_argument('--kinds', default=','.join(KINDS),
                   type=lambda s: s.split(','),
                   help='cpu: CPU/RAM only; disk: root disk +1 GiB')
    p.add_argument('--drivers', default='live,ours,upstream',
                   type=lambda s: s.split(','))
    p.add_argument('--results', default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), 'results'))
    args = p.parse_args(argv)
    for name, allowed in (('kinds', KINDS), ('drivers', DRIVERS)):
        bad = set(getattr(args, name)) - set(allowed)
        if bad:
            p.error(f'unknown {name}: {", ".join(sorted(bad))}')
    return args


class Server:
    """One spawned instance of the test guest."""

    def __init__(self, drv, flavor, n: int) -> None:
        self.drv = drv
        self.ctx = novaenv.admin_context()
        # Addresses of our own: the Nova tests use 169.254.77.x and
        # 52:54:00:77:... on the same bridge at the same time.
        ip = f'169.254.78.{n % 250 + 2}/24'
        self.nw = novaenv.network_info(f'52:54:00:78:01:{n % 250 + 2:02x}')
        self.image_meta = novaenv.image_meta(ip)
        self.instance = novaenv.instance(self.ctx, flavor, ip, self.nw)
        self.dir = os.path.join(CONF.instances_path, self.instance.uuid)
        self.console = os.path.join(self.dir, 'console.log')
        self.boots = 0

    def boot(self, start) -> None:
        start(self)
        self.boots += 1
        guestlog.wait_for_boot(self.console, self.boots, READY_TIMEOUT)

    def destroy(self) -> None:
        try:
            self.drv.destroy(self.ctx, self.instance, self.nw)
        finally:
            for d in (self.dir, self.dir + '_resize'):
                shutil.rmtree(d, ignore_errors=True)


def fill(server: Server, size: int) -> None:
    """Write ``size`` bytes of data into the root overlay, guest off.

    qemu-io from the host is much faster than the guest writing under TCG,
    and leaves the same allocated qcow2 clusters."""
    inst = server.instance
    server.drv.power_off(inst, CONF.shutdown_timeout,
                         CONF.compute.shutdown_retry_interval)
    writes = []
    for offset in range(0, size, FILL_CHUNK):
        length = min(FILL_CHUNK, size - offset)
        writes += ['-c', f'write -P 0x5a {FILL_OFFSET + offset} {length}']
    fmt = 'qcow2' if CONF.use_cow_images else 'raw'
    done = subprocess.run(['qemu-io', '-f', fmt, *writes,
                           os.path.join(server.dir, 'disk')],
                          capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT)
    # qemu-io reports a failed command on stdout and may still exit 0.
    if done.returncode or done.stdout.count('wrote ') != len(writes) // 2:
        raise RuntimeError(f'qemu-io could not fill the overlay: '
                           f'{done.stdout.strip()} {done.stderr.strip()}')
    os.sync()            # the fill's writeback is not the resize's
    server.boot(lambda s: s.drv.power_on(s.ctx, s.instance, s.nw))


def timed(call, *args) -> tuple[float, object]:
    start = time.monotonic()
    value = call(*args)
    return time.monotonic() - start, value


def wait_ready(watch: probes.ConsoleWatch, boot: int,
               after: float) -> probes.Line:
    """The first "RDGUEST ready" of the guest's ``boot``-th boot."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        lines = [line for line in watch.lines if line.at >= after]
        starts = [i for i, line in enumerate(lines)
                  if line.text.startswith(f'RDGUEST boot={boot}')]
        if starts:
            ready = next((line for line in lines[starts[0]:]
                          if line.text.startswith('RDGUEST ready')), None)
            if ready:
                return ready
        time.sleep(probes.POLL)
    raise RuntimeError(f'boot {boot} did not print "ready" within '
                       f'{READY_TIMEOUT}s')


def resize(server: Server, new, device: str, kind: str, size: int,
           name: str) -> Result:
    """The compute manager's resize_instance / finish_resize / confirm."""
    drv, inst, ctx = server.drv, server.instance, server.ctx
    mig = objects.Migration(
        context=ctx, instance_uuid=inst.uuid, source_compute=CONF.host,
        dest_compute=CONF.host, dest_host=CONF.my_ip,
        migration_type='resize', status='migrating',
        old_instance_type_id=inst.flavor.id, new_instance_type_id=new.id)
    mig.create()
    old = inst.flavor
    inst.old_flavor, inst.new_flavor = old, new
    inst.save()
    disks_change = any(old[k] != new[k]
                       for k in ('root_gb', 'swap', 'ephemeral_gb'))
    background_start = probes.bytes_written(device)
    time.sleep(2)
    background = (probes.bytes_written(device) - background_start) / 2
    consoles = [server.console,
                os.path.join(server.dir + '_resize', 'console.log')]
    domain = phases.DomainWatch(inst.uuid)
    with probes.ConsoleWatch(consoles, device) as watch, domain:
        t0, w0 = watch.sample()
        migrate, disk_info = timed(
            drv.migrate_disk_and_power_off, ctx, inst, mig.dest_host, new,
            server.nw, None, CONF.shutdown_timeout,
            CONF.compute.shutdown_retry_interval)
        t1 = time.monotonic()
        inst.flavor = new                   # manager: _set_instance_info
        inst.save()
        plan = _plan(server)
        live = plan == 'live'
        t2 = time.monotonic()
        finish, _ = timed(drv.finish_migration, ctx, mig, inst, disk_info,
                          server.nw, server.image_meta, disks_change, {},
                          None, True)
        t3 = time.monotonic()
        if live:
            wait_applied(watch, kind, t0)
        else:
            server.boots += 1
            ready = wait_ready(watch, server.boots, t0)
        confirm, _ = timed(drv.confirm_migration, ctx, mig, inst, server.nw)
        os.sync()       # what the resize left dirty must reach the disk too
        _, w_end = watch.sample()
    if live:
        # It never went down: no boot began after migrate (the guest's own
        # console says so: wait_applied checked), so nothing was written
        # while it was down either.
        return Result(kind, size, name, 0.0, migrate, finish, confirm, 0,
                      w_end - w0, background, '(none: resized live)')
    down = watch.last_between(t0, t1)
    down_at, down_written = (down.at, down.written) if down else (t0, w0)
    where = None if name == 'upstream' else phases.phases(
        down_at, domain, STEPS.call(t0, t1), STEPS.call(t2, t3))
    return Result(kind, size, name, ready.at - down_at, migrate, finish,
                  confirm, ready.written - down_written, w_end - w0,
                  background, down.text if down else '(none: from migrate)',
                  plan, where)


def _plan(server: Server) -> str:
    """The plan resizedriver's record names ('' for upstream's resize)."""
    path = os.path.join(server.dir + '_resize', 'resize.json')
    if not os.path.exists(path):
        return ''
    with open(path) as f:
        return json.load(f).get('plan', '')


def wait_applied(watch: probes.ConsoleWatch, kind: str,
                 after: float) -> probes.Line:
    """A live resize: the guest prints its new CPUs (or disk size) and no
    new boot; an error if it booted or printed nothing in time."""
    want = 'RDGUEST cpus=0-1' if kind == 'cpu' else 'RDGUEST disk vda='
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        lines = [line for line in watch.lines if line.at >= after]
        if any(line.text.startswith('RDGUEST boot=') for line in lines):
            raise RuntimeError('the guest rebooted in a live resize')
        applied = next((line for line in lines
                        if line.text.startswith(want)), None)
        if applied:
            return applied
        time.sleep(probes.POLL)
    raise RuntimeError(f'the guest did not print {want!r} within '
                       f'{READY_TIMEOUT}s')


def run_case(drv, name: str, kind: str, size: int, n: int,
             device: str) -> Result:
    root_gb = math.ceil((FILL_OFFSET + size) / GiB)
    _, live_resize, roomy, cow = DRIVERS[name]
    CONF.set_override('live_resize', live_resize, 'resizedriver')
    CONF.set_override('use_cow_images', cow)
    specs = ROOM if roomy else None
    small = novaenv.flavor('1', 1, 256, root_gb, specs)
    new = (novaenv.flavor('2', 2, 512, root_gb, specs) if kind == 'cpu'
           else novaenv.flavor('3', 1, 256, root_gb + 1, specs))
    server = Server(drv, small, n)
    try:
        server.boot(lambda s: s.drv.spawn(s.ctx, s.instance, s.image_meta,
                                          [], None, {}, network_info=s.nw))
        fill(server, size)
        return resize(server, new, device, kind, size, name)
    finally:
        server.destroy()


def remove_leftovers() -> None:
    """Domains and directories of earlier runs whose process is gone."""
    conn = libvirt.open('qemu:///system')
    try:
        for dom in conn.listAllDomains():
            m = re.fullmatch(PREFIX + r'(\d+)-[0-9a-f]+', dom.name())
            if m and not os.path.exists(f'/proc/{m.group(1)}'):
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    finally:
        conn.close()
    for d in os.listdir('/var/lib'):
        m = re.fullmatch(PREFIX + r'(\d+)', d)
        if m and not os.path.exists(f'/proc/{m.group(1)}'):
            shutil.rmtree(os.path.join('/var/lib', d), ignore_errors=True)


def setup(root: str) -> dict:
    hostenv.ensure_bridge()
    os.makedirs(root)
    novaenv.configure(root)
    CONF.set_override('host', PREFIX + 'compute')
    CONF.set_override('instance_name_template',
                      f'{PREFIX}{os.getpid()}-%08x')
    loaded: dict[tuple[str, bool], object] = {}
    for path, _, _, cow in DRIVERS.values():
        if (path, cow) not in loaded:
            # Exactly what nova-compute does with compute_driver = ...;
            # its image backend follows use_cow_images as it loads.
            CONF.set_override('use_cow_images', cow)
            loaded[path, cow] = nova_driver.load_compute_driver(
                novaenv.VirtAPI(), path)
            loaded[path, cow].init_host(host=CONF.host)
    drivers = {name: loaded[path, cow]
               for name, (path, _, _, cow) in DRIVERS.items()}
    novaenv.seed_images(CONF.instances_path)
    return drivers


def run_all(args, drivers: dict, device: str, results: list) -> None:
    """Every case, each driver right after the other on the same case."""
    for size in args.sizes:
        for kind in args.kinds:
            for name in args.drivers:
                print(f'rdbench: {kind} {report.size_text(size)} {name} ...',
                      file=sys.stderr, flush=True)
                results.append(run_case(drivers[name], name, kind, size,
                                        len(results), device))


def show(results: list, directory: str, device: str) -> None:
    if not results:
        return
    note = (f'virt_type={CONF.libvirt.virt_type}, {os.cpu_count()} host '
            f'CPUs; writes: /proc/diskstats of {device}')
    print(report.table(results, note))
    cases = [((report.KIND_TEXT[r.kind], report.size_text(r.size), r.plan),
              r.phases) for r in results]
    print('\n' + report.phase_table(
        cases, ('resize', 'data', 'plan'),
        'cold resizes: guest\'s power-off line -> start returned'))
    report.plot_phases([(' '.join(case), where) for case, where in cases],
                       os.path.join(directory, 'phases.png'))
    report.save(results, directory, note)
    print(f'rdbench: wrote {directory}/results.json and downtime.png',
          file=sys.stderr)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit('benchmarks/run drives the system libvirtd: run it as root')
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    remove_leftovers()
    root = f'/var/lib/{PREFIX}{os.getpid()}'
    drivers = {}
    try:
        drivers = setup(root)
        device = probes.block_device(CONF.instances_path)
        results: list[Result] = []
        try:
            run_all(args, drivers, device, results)
        finally:    # what was measured before a failure is still shown
            show(results, args.results, device)
    finally:
        for drv in {id(d): d for d in drivers.values()}.values():
            drv.cleanup_host(host=CONF.host)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == '__main__':
    # Nova's libvirt event threads never end (see tests/nova/conftest.py).
    try:
        status = main(sys.argv[1:])
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, int) and e.code:
            print(e.code, file=sys.stderr)
    except BaseException:
        import traceback
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
