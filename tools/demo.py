"""A real resize of a throwaway guest, narrated (run by tools/demo)."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from benchmarks import probes  # noqa: E402
from resizedriver.host import Host  # noqa: E402
from tests.lib import guestlog, hostenv, testguest  # noqa: E402

ROOT = '/var/lib/resizedriver-demo'
NAME = 'resizedriver-demo'


def show(title: str, report: guestlog.GuestReport) -> None:
    disks = ', '.join(f'{k} {v // 2**20} MiB'
                      for k, v in sorted(report.disks.items()))
    print(f'{title:<28} boot #{report.boot}: {report.cpu_count} vCPU(s) '
          f'[{report.cpus}], MemTotal {report.mem_kb // 1024} MiB, {disks}, '
          f'MAC {", ".join(report.macs.values())}')


def downtime(lines: list[probes.Line]) -> str:
    """From the guest's own console: its "shutdown" line (the ACPI power
    button seen) to the resized guest's first "ready"; and what the
    host's disk wrote meanwhile."""
    new_boot = next(i for i, line in enumerate(lines)
                    if line.text.startswith('RDGUEST boot=2'))
    ready = next(line for line in lines[new_boot:]
                 if line.text.startswith('RDGUEST ready'))
    down = next((line for line in reversed(lines[:new_boot])
                 if line.text.startswith('RDGUEST shutdown')), None)
    if down is None:
        return 'guest downtime: (the guest printed no "shutdown" line)'
    mib = (ready.written - down.written) / 2**20
    return (f'guest downtime: {ready.at - down.at:.1f} s (its "shutdown" '
            f'line -> the resized guest\'s "ready"); the disk under the '
            f'instances path wrote {mib:.1f} MiB meanwhile (the guest\'s '
            f'own shutdown and boot, and anything else on that disk, '
            f'included)')


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument('--keep', action='store_true',
                        help='leave the demo guest running afterwards')
    args = parser.parse_args()
    host = Host('qemu:///system')
    hostenv.ensure_bridge()
    stale = host.lookup(NAME)
    if stale is not None:
        testguest.remove(host, testguest.TestGuest('', stale.uuid, NAME,
                                                   '', ''))
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(f'{ROOT}/instances')
    conf = f'{ROOT}/resizedriver.conf'
    with open(conf, 'w') as f:
        # headroom: the domains resizedriver defines may grow live to this
        f.write(f'[DEFAULT]\ninstances_path = {ROOT}/instances\n'
                f'[resizedriver]\nshutdown_retry_interval = 2\n'
                f'headroom_max_vcpus = 4\nheadroom_max_memory_mb = 1024\n')
    virt = host.virt_type('kvm')
    print(f'libvirt domain type: {virt}'
          + ('' if virt == 'kvm' else ' (no usable KVM here: TCG)'))
    guest = testguest.create(host, f'{ROOT}/instances', name=NAME,
                             mac='52:54:00:77:00:02', ip='169.254.77.2/24',
                             bridge=hostenv.BRIDGE)
    host.lookup(guest.uuid).start()
    before = guestlog.wait_for_boot(guest.console_log(host), 1)
    show('before resize:', before)

    cli = [sys.executable, '-m', 'resizedriver.cmd.cli', '--config-file',
           conf]
    cmd = cli + ['resize', NAME, '--vcpus', '2', '--memory', '512',
                 '--root-size', '128M']
    print('$ resizedriver resize', ' '.join(cmd[5:][1:]))
    consoles = [guest.console_log(host),
                os.path.join(guest.dir + '_resize', 'console.log')]
    with probes.ConsoleWatch(consoles,
                             probes.block_device(f'{ROOT}/instances')) as w:
        subprocess.run(cmd, check=True)
        after = guestlog.wait_for_boot(guest.console_log(host), 2)
    show('after resize:', after)
    print(downtime(w.lines))
    print('ping over the bridge:',
          'ok' if hostenv.ping(guest.ip.split('/')[0]) else 'FAILED')
    subprocess.run(cli + ['status'], check=True)
    subprocess.run(cli + ['confirm', NAME], check=True)
    print('boot counter went', before.boot, '->', after.boot,
          '(kept on the root disk: no data lost)')

    # The resized domain was defined with headroom (the config above):
    # the next resize needs no reboot at all.
    cmd = cli + ['resize', NAME, '--vcpus', '3', '--memory', '768',
                 '--root-size', '192M']
    print('$ resizedriver resize', ' '.join(cmd[5:][1:]))
    subprocess.run(cmd, check=True)
    live = guestlog.wait_for(
        guest.console_log(host), '3 vCPUs and a 192 MiB disk',
        lambda r: r.cpu_count == 3 and r.disks.get('vda') == 192 * 2**20)
    show('after live resize:', live)
    print(f'guest downtime: 0 s (it never stopped: still boot '
          f'#{live.boot}, MemTotal +{(live.mem_kb - after.mem_kb) // 1024} '
          f'MiB hot-plugged)' if live.boot == after.boot else
          'guest downtime: it REBOOTED (boot counter moved)')
    subprocess.run(cli + ['confirm', NAME], check=True)
    if not args.keep:
        testguest.remove(host, guest)
        shutil.rmtree(ROOT, ignore_errors=True)
        print('demo guest removed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
