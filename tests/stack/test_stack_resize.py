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


def assert_nic(cloud, server, host: str) -> None:
    """The server's one NIC where the server is: its port bound to
    ``host`` (Nova moved the binding with the server), its tap device on
    that host, the domain there on that tap with the port's MAC, and the
    guest seeing it (its console's MAC of eth0).  A's tap gone once the
    server left A; not B's once it left B: host B's /sys is A's
    (tools/host-b), so Nova's unplug_tap there, which looks for the
    device in /sys/class/net, finds none to delete (``cleanup`` does)."""
    port = cloud.port(server)
    node = 'A' if host == A else 'B'
    assert port.binding_host_id == host
    taps = stack.taps(port.id)
    assert node in taps and (node == 'A' or 'A' not in taps), taps
    assert stack.interfaces(server.instance_name, node) == [
        ('ethernet', stack.tap(port.id), port.mac_address)]
    assert cloud.console(server).macs == {'eth0': port.mac_address}


def _live_on_a(cloud, name: str):
    """A server resized live on A (flavors with headroom: 1 -> 2 vCPUs,
    256 -> 512 MiB, 1 -> 2 GiB), in VERIFY_RESIZE; its flavors and the
    guest's report before."""
    small = cloud.flavor(f'{name}-s', 1, 256, 1, stack.ROOM)
    big = cloud.flavor(f'{name}-b', 2, 512, 2, stack.ROOM)
    server = cloud.boot(name, small)
    before = cloud.console(server)
    assert_nic(cloud, server, A)
    with cloud.only(A):
        server = cloud.resize(server, big)
    return server, small, big, before


def test_live_resize_on_one_host_then_confirm(cloud):
    server, small, big, before = _live_on_a(cloud, 'live')
    after = cloud.guest(server, '2 CPUs, +256 MiB, a 2 GiB disk', lambda r: (
        r.cpu_count == 2 and r.mem_kb - before.mem_kb == 256 * KiB and
        r.disks == {'vda': 2 * stack.GiB}))
    assert after.boot == before.boot                 # it never stopped
    assert_nic(cloud, server, A)
    mig, = cloud.migrations(server)
    assert (mig.source_compute, mig.dest_compute, mig.status) == (
        A, A, 'finished')
    # while VERIFY_RESIZE the migration holds the old flavor's resources
    assert cloud.allocations(mig.uuid) == {cloud.node(A): resources(small)}
    assert cloud.allocations(server.id) == {cloud.node(A): resources(big)}
    server = cloud.confirm(server)
    assert server.flavor.name == big.name
    assert cloud.console(server).boot == before.boot
    assert_nic(cloud, server, A)
    assert_moved(cloud, server, big, A, 'confirmed')
    assert_succeeded(cloud, server, 'resize', 'confirmResize')


@pytest.fixture
def confirm_window_on_a():
    """A's nova-compute restarted with ``resize_confirm_window = 1``
    (the destination's option), then restarted without, as the other
    scenarios need it: they confirm or revert by hand."""
    stack.restart_compute('a', confirm_window=1)
    yield
    stack.restart_compute('a')


def test_live_resize_confirmed_by_the_confirm_window(cloud,
                                                     confirm_window_on_a):
    server, _small, big, before = _live_on_a(cloud, 'auto')
    # Nothing asks for the confirm: the destination's periodic task
    # _poll_unconfirmed_resizes does, once the migration is older than
    # the window.  Its spacing is oslo.service's default for a task
    # without one, 60 s, counted from the compute's start: the resize
    # above falls within the first, and a window of 1 s leaves it.
    server = cloud.wait_status(server, 'ACTIVE', timeout=150)
    assert server.flavor.name == big.name
    after = cloud.console(server)
    assert (after.boot, after.cpu_count) == (before.boot, 2)
    assert_moved(cloud, server, big, A, 'confirmed')
    assert_succeeded(cloud, server, 'resize', 'confirmResize')


def test_cold_resize_on_one_host_then_revert(cloud):
    small = cloud.flavor('cold-s', 1, 256, 1)
    big = cloud.flavor('cold-b', 2, 512, 2)
    server = cloud.boot('cold', small)
    before = cloud.console(server)
    assert_nic(cloud, server, A)
    with cloud.only(A):
        server = cloud.resize(server, big)
    resized = cloud.guest(server, 'the new flavor', lambda r: (
        r.ready and r.cpu_count == 2 and r.disks == {'vda': 2 * stack.GiB}))
    assert resized.boot == before.boot + 1           # a cold resize
    assert_nic(cloud, server, A)
    server = cloud.revert(server)
    # The disk as before the resize: its boot counter goes on from the
    # boot before the resize, whose clean shutdown was its last write
    # (the resized disk's counter would say one more).
    back = cloud.guest(server, 'the old flavor', lambda r: (
        r.ready and r.cpu_count == 1 and
        r.disks == {'vda': 1 * stack.GiB}))
    assert (back.boot, back.shutdown_mark) == (
        before.boot + 1, str(before.boot))
    assert_nic(cloud, server, A)
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
    assert_nic(cloud, server, A)
    with cloud.only(B):
        server = cloud.resize(server, big)
    assert server.compute_host == B
    moved = cloud.guest(server, 'the new flavor on B', lambda r: (
        r.ready and r.cpu_count == 2 and r.disks == {'vda': 2 * stack.GiB}))
    # a cold move: one clean shutdown on A, the next boot on B
    assert (moved.boot, moved.shutdown_mark) == (
        before.boot + 1, str(before.boot))
    assert_nic(cloud, server, B)       # and A's tap gone with A's guest
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
    assert_nic(cloud, server, B)
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
    assert_nic(cloud, server, A)
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
    assert_nic(cloud, server, B)
    assert_moved(cloud, server, flavor, B, 'confirmed')
    assert_succeeded(cloud, server, 'migrate', 'confirmResize')


def test_delete_while_verify_resize_leaves_both_hosts_clean(cloud):
    server, _small, _big, _before = _to_b(cloud, 'xdelete')
    mig, = cloud.migrations(server)
    port = cloud.port(server)
    # the guest and its directory on B, the old disks on A until then
    assert {f'B: domain {server.instance_name}',
            f'A: {stack.stack_env()["STACK_INSTANCES"]}/{server.id}_resize',
            } <= set(stack.leftovers(server.instance_name, server.id))
    cloud.delete(server)
    assert cloud.allocations(server.id) == {}
    assert cloud.allocations(mig.uuid) == {}
    assert stack.leftovers(server.instance_name, server.id) == []
    # the port unbound (Nova keeps a port it did not make), A's tap gone
    # (B's stays: see assert_nic)
    assert cloud.conn.network.get_port(port.id).binding_host_id == ''
    assert 'A' not in stack.taps(port.id)


def test_source_compute_killed_mid_resize_then_restarted(cloud):
    small = cloud.flavor('kill-s', 1, 256, 1)
    big = cloud.flavor('kill-b', 2, 512, 2)
    server = cloud.boot('kill', small, image=stack.DEAF_IMAGE)
    before = cloud.console(server)
    with cloud.only(B):
        cloud.conn.compute.resize_server(server, big.id)
        # The mid-resize point, deterministic: A's driver is in its power
        # off step, the pre-copy to B done (B has the directory); the
        # guest ignores the power button and Nova would wait 600 s for
        # its clean shutdown (the image's os_shutdown_timeout)
        stack.wait('the power button ignored', lambda: (
            'RDGUEST shutdown-ignored' in cloud.console_text(server)))
    assert cloud.conn.compute.get_server(server.id).task_state == \
        'resize_migrating'
    mig, = cloud.migrations(server)
    assert f'B: {stack.stack_env()["STACK_INSTANCES"]}/{server.id}' in \
        stack.leftovers(server.instance_name, server.id)
    held = (cloud.allocations(server.id), cloud.allocations(mig.uuid))
    stack.restart_compute('a')
    # init_host: our recovery rolls the migrate back (B's directory
    # removed, the guest's writes since the pre-copy's snapshot folded
    # back into its disk while it runs), then Nova's _init_instance
    # calls finish_revert_migration and clears the task state
    server = cloud.wait_status(server, 'ACTIVE')
    assert (server.compute_host, server.flavor.name, server.power_state) \
        == (A, small.name, 1)
    assert cloud.console(server) == before           # it never stopped
    assert sorted(stack.leftovers(server.instance_name, server.id)) == [
        f'A: {stack.stack_env()["STACK_INSTANCES"]}/{server.id}',
        f'A: domain {server.instance_name}']
    # Nova's own bookkeeping, as with its LibvirtDriver: _init_instance
    # resets the task state and nothing else, so the migration stays
    # "migrating" and placement keeps the resize's allocations (the
    # server's the new flavor's on B, the migration's the old flavor's
    # on A): exactly those of before the crash, none lost or added
    mig, = cloud.migrations(server)
    assert mig.status == 'migrating'
    assert held == ({cloud.node(B): resources(big)},
                    {cloud.node(A): resources(small)})
    assert (cloud.allocations(server.id), cloud.allocations(mig.uuid)) \
        == held
    # its data: the disk, the pre-copy's top folded back, boots again
    # (a hard reboot: Nova's, which the driver refuses on a disk that
    # still reads a top) and the boot counter goes on
    cloud.conn.compute.reboot_server(server, 'HARD')
    server = cloud.wait_status(server, 'ACTIVE')
    again = cloud.guest(server, 'the next boot', lambda r: (
        r.ready and r.boot == before.boot + 1))
    assert again.disks == before.disks
    # the crash in the instance actions: resize_instance on A never
    # ended, every other event of the resize did, successfully
    actions = cloud.actions(server)
    resize = {name: e['result'] for name, e in actions['resize'].items()}
    assert resize.pop('compute_resize_instance') is None
    assert resize and set(resize.values()) == {'Success'}, resize
    assert_succeeded(cloud, server, 'reboot')
    cloud.delete(server)
    assert cloud.allocations(server.id) == {}
    # what Nova leaves of the migration, removed as an operator would
    cloud.conn.placement.delete(f'/allocations/{mig.uuid}')
    assert cloud.allocations(mig.uuid) == {}
    assert stack.leftovers(server.instance_name, server.id) == []
