"""The user's view of resizes through the stack (run by tools/demo).

Everything goes through the API with openstacksdk, as the ``openstack``
commands printed before each step would; what the guest saw comes from
its console, the downtime from its console lines' times, and the plan
that ran from resizedriver's summary line in the compute log.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
os.environ.setdefault('RESIZEDRIVER_TEST_RUN', 'demo-')

from tests.lib import guestlog  # noqa: E402
from tests.stack import cloud as stack  # noqa: E402
from tests.stack import computes  # noqa: E402

A, B = stack.HOSTS


def run(title: str, command: str, call: Callable[[], object]):
    """Print the step and its ``openstack`` command, do it through the
    API, say how long it took."""
    print(f'\n== {title}\n$ openstack {command}')
    began = time.monotonic()
    result = call()
    print(f'   ({time.monotonic() - began:.1f} s)')
    return result


def show(title: str, report: guestlog.GuestReport, host: str) -> None:
    disks = ', '.join(f'{k} {v / stack.GiB:g} GiB'
                      for k, v in sorted(report.disks.items()))
    print(f'   guest {title:<14} on {host}: boot #{report.boot}, '
          f'{report.cpu_count} vCPU(s), MemTotal {report.mem_kb // 1024} '
          f'MiB, {disks}')


def explain(logs: computes.ComputeLogs, watch, uuid: str) -> None:
    """The downtime the guest saw and the plan resizedriver says ran."""
    down = computes.downtime(watch.lines)
    print('   guest downtime (its "shutdown" line -> its next "ready"): ' +
          ('none, it never stopped' if down is None else f'{down:.1f} s'))
    summary = logs.summary(uuid)
    if summary is None:
        print('   no resizedriver summary line (not resizedriver\'s driver?)')
        return
    print(f'   resizedriver: plan={summary["plan"]} '
          f'topology={summary["topology"]} '
          f'downtime_s={summary["downtime_s"]} (power-off done -> start '
          f'returned: the guest\'s shutdown and boot are not in it) '
          f'bytes_copied={summary["bytes_copied"]}\n'
          f'   why: {summary["reason"]}')


def demo(cloud: stack.Cloud) -> None:
    room = ' '.join(f'--property {k}={v}' for k, v in stack.ROOM.items())
    small, big = run(
        'two flavors; their extra specs give the guest room to grow live',
        f'flavor create --vcpus 1 --ram 256 --disk 1 {room} demo-small\n'
        f'$ openstack flavor create --vcpus 2 --ram 512 --disk 2 {room} '
        'demo-big',
        lambda: (cloud.flavor('small', 1, 256, 1, stack.ROOM),
                 cloud.flavor('big', 2, 512, 2, stack.ROOM)))
    server = run('a server on host A',
                 f'server create --image {stack.IMAGE} --flavor demo-small '
                 f'--network none --host {A} --wait demo',
                 lambda: cloud.boot('demo', small))
    before = cloud.console(server)
    show('first boot', before, A)

    with cloud.only(A):
        print(f'\n(host B disabled: the scheduler keeps it on A; '
              f'openstack compute service set --disable {B} nova-compute)')
        logs, watch = computes.ComputeLogs(), computes.watch(server.id)
        with watch:
            server = run('resize on the same host',
                         'server resize --flavor demo-big --wait demo',
                         lambda: cloud.resize(server, big))
            live = cloud.guest(server, 'the new flavor live', lambda r: (
                r.cpu_count == 2 and r.disks == {'vda': 2 * stack.GiB} and
                r.mem_kb > before.mem_kb))
    show('after resize', live, server.compute_host)
    explain(logs, watch, server.id)
    server = run('confirm', 'server resize confirm demo',
                 lambda: cloud.confirm(server))

    logs, watch = computes.ComputeLogs(), computes.watch(server.id)
    with watch:
        server = run('move to host B (cold migrate; the disks copied '
                     'while the guest runs)',
                     f'server migrate --host {B} --wait demo',
                     lambda: migrate(cloud, server))
        moved = cloud.guest(server, 'up on B', lambda r: r.ready)
    show('on B', moved, server.compute_host)
    explain(logs, watch, server.id)

    with computes.watch(server.id) as watch:
        began = time.monotonic()
        server = run('revert: back to A, its disks as they were',
                     'server resize revert demo',
                     lambda: cloud.revert(server))
        back = cloud.guest(server, 'up on A again', lambda r: r.ready)
    show('after revert', back, server.compute_host)
    # B's guest is destroyed, not shut down: no "shutdown" line to start
    # from, so from the request to A's guest's "ready"
    boot = max(i for i, line in enumerate(watch.lines)
               if line.text.startswith('RDGUEST boot='))
    ready = next(line for line in watch.lines[boot:]
                 if line.text.startswith('RDGUEST ready'))
    print(f'   the guest was up on A {ready.at - began:.1f} s after the '
          f'revert request')
    print(f'   boot counter {before.boot} -> {moved.boot} (on B) -> '
          f'{back.boot}: A\'s disk went on from the boot before the move, '
          f'its last write that boot\'s clean shutdown (mark '
          f'{back.shutdown_mark})')
    run('delete', 'server delete --wait demo',
        lambda: cloud.delete(server))


def migrate(cloud: stack.Cloud, server):
    cloud.conn.compute.migrate_server(server, host=B)
    return cloud.wait_status(server, 'VERIFY_RESIZE')


def main() -> int:
    cloud = stack.Cloud(stack.connect())
    print(f'clouds.yaml: {os.environ["OS_CLIENT_CONFIG_FILE"]} '
          f'(export OS_CLOUD=rdstack OS_CLIENT_CONFIG_FILE=... to use the '
          f'openstack client)')
    try:
        demo(cloud)
    finally:
        cloud.cleanup()
    return 0


if __name__ == '__main__':
    sys.exit(main())
