"""Resizes the way an operator's go: through Nova's API, conductor,
scheduler and placement to the nova-compute services ``tools/stack``
runs, with resizedriver as their driver.

Only the API is used: the guest's console for what it sees (its boot
counter says whether it rebooted, and which disk it booted from), the
server's status, the migration records, the instance actions and
placement's allocations after each step.
"""

from __future__ import annotations

import pytest

from tests.stack import cloud as stack

KiB = 1024
A, B = stack.HOSTS


@pytest.fixture(scope='module')
def conn():
    return stack.connect()


@pytest.fixture
def cloud(conn):
    c = stack.Cloud(conn)
    yield c
    c.cleanup()


def resources(flavor) -> dict:
    """What placement holds for a server of ``flavor``."""
    return {'VCPU': flavor.vcpus, 'MEMORY_MB': flavor.ram,
            'DISK_GB': flavor.disk + flavor.ephemeral}


def assert_moved(cloud, server, flavor, host: str, status: str) -> None:
    """After a confirm or revert: the migration record's ``status``, the
    server's allocations ``flavor``'s on ``host`` and nothing left for
    the migration."""
    mig, = cloud.migrations(server)
    assert mig.status == status
    assert cloud.allocations(server.id) == {
        cloud.node(host): resources(flavor)}
    assert cloud.allocations(mig.uuid) == {}


def assert_succeeded(cloud, server, *actions: str) -> None:
    """Each of ``actions`` recorded, every event of it a success."""
    found = cloud.actions(server)
    for action in actions:
        results = {name: e['result'] for name, e in found[action].items()}
        assert results and set(results.values()) == {'Success'}, results


def test_live_resize_on_one_host_then_confirm(cloud):
    small = cloud.flavor('live-s', 1, 256, 1, stack.ROOM)
    big = cloud.flavor('live-b', 2, 512, 2, stack.ROOM)
    server = cloud.boot('live', small)
    before = cloud.console(server)
    with cloud.only(A):
        server = cloud.resize(server, big)
    after = cloud.guest(server, '2 CPUs, +256 MiB, a 2 GiB disk', lambda r: (
        r.cpu_count == 2 and r.mem_kb - before.mem_kb == 256 * KiB and
        r.disks == {'vda': 2 * stack.GiB}))
    assert after.boot == before.boot                 # it never stopped
    mig, = cloud.migrations(server)
    assert (mig.source_compute, mig.dest_compute, mig.status) == (
        A, A, 'finished')
    # while VERIFY_RESIZE the migration holds the old flavor's resources
    assert cloud.allocations(mig.uuid) == {cloud.node(A): resources(small)}
    assert cloud.allocations(server.id) == {cloud.node(A): resources(big)}
    server = cloud.confirm(server)
    assert server.flavor.name == big.name
    assert cloud.console(server).boot == before.boot
    assert_moved(cloud, server, big, A, 'confirmed')
    assert_succeeded(cloud, server, 'resize', 'confirmResize')


def test_cold_resize_on_one_host_then_revert(cloud):
    small = cloud.flavor('cold-s', 1, 256, 1)
    big = cloud.flavor('cold-b', 2, 512, 2)
    server = cloud.boot('cold', small)
    before = cloud.console(server)
    with cloud.only(A):
        server = cloud.resize(server, big)
    resized = cloud.guest(server, 'the new flavor', lambda r: (
        r.ready and r.cpu_count == 2 and r.disks == {'vda': 2 * stack.GiB}))
    assert resized.boot == before.boot + 1           # a cold resize
    server = cloud.revert(server)
    # The disk as before the resize: its boot counter goes on from the
    # boot before the resize, whose clean shutdown was its last write
    # (the resized disk's counter would say one more).
    back = cloud.guest(server, 'the old flavor', lambda r: (
        r.ready and r.cpu_count == 1 and
        r.disks == {'vda': 1 * stack.GiB}))
    assert (back.boot, back.shutdown_mark) == (
        before.boot + 1, str(before.boot))
    assert server.flavor.name == small.name
    assert_moved(cloud, server, small, A, 'reverted')
    assert_succeeded(cloud, server, 'resize', 'revertResize')


def test_refused_shrink_keeps_the_server_running(cloud):
    # Nova's API refuses a smaller root disk itself; a smaller ephemeral
    # disk reaches the driver
    two = cloud.flavor('shrink-2', 1, 256, 1, ephemeral=2)
    one = cloud.flavor('shrink-1', 1, 256, 1, ephemeral=1)
    server = cloud.boot('shrink', two)
    before = cloud.console(server)
    with cloud.only(A):
        cloud.conn.compute.resize_server(server, one.id)
        mig = stack.wait('the migration to fail', lambda: [
            m for m in cloud.migrations(server) if m.status == 'error'])[0]
    server = cloud.wait_status(server, 'ACTIVE')
    assert server.power_state == 1
    assert server.flavor.name == two.name
    event, = [e for e in cloud.actions(server)['resize'].values()
              if e['result'] == 'Error']
    # the one line saying why (the event's details, microversion 2.84)
    assert 'cannot shrink the ephemeral disks from their 2 GiB to 1 GiB' \
        in event['details'], event
    assert cloud.console(server).boot == before.boot  # never stopped
    assert cloud.allocations(server.id) == {cloud.node(A): resources(two)}
    assert cloud.allocations(mig.uuid) == {}


def _to_b(cloud, name: str):
    """A server booted on A, resized by the scheduler to B (A drained)
    with [resizedriver] pre_copy on (its default): VERIFY_RESIZE on B,
    the guest up there with the new flavor."""
    small = cloud.flavor(f'{name}-s', 1, 256, 1)
    big = cloud.flavor(f'{name}-b', 2, 512, 2)
    server = cloud.boot(name, small)
    before = cloud.console(server)
    with cloud.only(B):
        server = cloud.resize(server, big)
    assert server.compute_host == B
    moved = cloud.guest(server, 'the new flavor on B', lambda r: (
        r.ready and r.cpu_count == 2 and r.disks == {'vda': 2 * stack.GiB}))
    # a cold move: one clean shutdown on A, the next boot on B
    assert (moved.boot, moved.shutdown_mark) == (
        before.boot + 1, str(before.boot))
    mig, = cloud.migrations(server)
    assert (mig.source_compute, mig.dest_compute, mig.status) == (
        A, B, 'finished')
    assert cloud.allocations(mig.uuid) == {cloud.node(A): resources(small)}
    assert cloud.allocations(server.id) == {cloud.node(B): resources(big)}
    return server, small, big, before


def test_resize_to_another_host_then_confirm(cloud):
    server, _small, big, before = _to_b(cloud, 'xconfirm')
    server = cloud.confirm(server)
    assert server.compute_host == B
    assert cloud.console(server).boot == before.boot + 1
    assert_moved(cloud, server, big, B, 'confirmed')
    assert_succeeded(cloud, server, 'resize', 'confirmResize')


def test_resize_to_another_host_then_revert(cloud):
    server, small, _big, before = _to_b(cloud, 'xrevert')
    server = cloud.revert(server)
    assert server.compute_host == A
    # A's disk as it was: the boot after the one before the resize, and
    # that boot's clean shutdown its last write (what B's guest wrote is
    # not there)
    back = cloud.guest(server, 'the old flavor on A', lambda r: (
        r.ready and r.cpu_count == 1 and
        r.disks == {'vda': 1 * stack.GiB}))
    assert (back.boot, back.shutdown_mark) == (
        before.boot + 1, str(before.boot))
    assert_moved(cloud, server, small, A, 'reverted')
    assert_succeeded(cloud, server, 'resize', 'revertResize')


def test_cold_migrate_to_a_named_host_then_confirm(cloud):
    flavor = cloud.flavor('migrate', 1, 256, 1)
    server = cloud.boot('migrate', flavor)
    before = cloud.console(server)
    cloud.conn.compute.migrate_server(server, host=B)
    server = cloud.wait_status(server, 'VERIFY_RESIZE')
    assert server.compute_host == B
    moved = cloud.guest(server, 'the guest on B', lambda r: r.ready)
    assert (moved.boot, moved.shutdown_mark, moved.disks) == (
        before.boot + 1, str(before.boot), before.disks)
    mig, = cloud.migrations(server)
    assert (mig.migration_type, mig.source_compute, mig.dest_compute) == (
        'migration', A, B)
    server = cloud.confirm(server)
    assert_moved(cloud, server, flavor, B, 'confirmed')
    assert_succeeded(cloud, server, 'migrate', 'confirmResize')


def test_delete_while_verify_resize_leaves_both_hosts_clean(cloud):
    server, _small, _big, _before = _to_b(cloud, 'xdelete')
    mig, = cloud.migrations(server)
    # the guest and its directory on B, the old disks on A until then
    assert {f'B: domain {server.instance_name}',
            f'A: {stack.stack_env()["STACK_INSTANCES"]}/{server.id}_resize',
            } <= set(stack.leftovers(server.instance_name, server.id))
    cloud.delete(server)
    assert cloud.allocations(server.id) == {}
    assert cloud.allocations(mig.uuid) == {}
    assert stack.leftovers(server.instance_name, server.id) == []
