"""The ``rbd`` plan's fault rows on a real Ceph: nova-compute killed
right after each step of its migrate, finish, confirm and revert (before
the journal says the step is done), ``init_host`` recovers, then Nova's
own next call as Nova makes it.

The steps are the plan's own, as it runs them: a cell kills its
operation after its first step, then its second, and so on, until the
operation runs to its end, and asserts that every step it ran had its
row.  A step added to the plan gets a row without a change here.  After
each row the guest runs the flavor it should (its console), the image
has its size and no snapshot (the cluster), no ``_resize``, record or
journal is left, and the next resize goes through (the next row's, and
the cell's last one, which runs to its end).

Nova's next call after each (``nova/compute/manager.py``):
* migrate: ``init_host`` finds the instance RESIZE_MIGRATING: it plugs
  its VIFs and calls ``finish_revert_migration``;
* finish: nothing at start (RESIZE_FINISH); the revert as the compute
  manager makes it (``revert_resize``, ``finish_revert_resize``), which
  Nova's API allows once the operator has put the migration right (it
  is left 'post-migrating', the instance not RESIZED);
* confirm: nothing at start; the guest runs the new flavor; a repeated
  confirm is harmless (the confirm rows follow the migrate rows, on
  their server);
* revert: nothing at start (RESIZE_REVERTING); the operator's
  reset-state and hard reboot (what Nova's log advises after a failed
  ``finish_revert_migration``).

Host B's half (one server moved again and again: host B's lane is CI's
longest, these rows may take 90 s of it): its finish killed after its
last step, the guest started (B's recovery stops and undefines it and
rolls the image back), then A's revert killed after the step only a move
has (B's copy dropped) and A's confirm after its own (A's domain
undefined).  The other steps of a move run the code their same-host rows
prove (B's finish after its checks, grow, disk.info, console log and
define; the rest of A's revert and confirm); A's migrate to B is not
killed here.
"""

from __future__ import annotations

import contextlib
import glob
import os
from typing import Callable

import pytest
from nova import objects
from nova.compute import power_state
from nova.virt.libvirt import driver as libvirt_driver

from resizedriver import journal
from resizedriver import stepname
from resizedriver.host import Host
from tests.lib import ceph as test_ceph
from tests.lib import guestlog
from tests.nova import compute_node, novaenv
from tests.nova.test_nova_cross_host import host_b  # noqa: F401
from tests.nova.test_nova_rbd import (  # noqa: F401
    GiB, REVERT_POINT, _spawned_on_a, assert_root, ceph,
    destroyed_everywhere, rbd_backend)
from tests.nova.test_nova_resize import (SMALL, Crash,
                                         assert_no_resize_left, flavor,
                                         migration_for, resize, revert)


MIGRATE = 'migrate_disk_and_power_off'
FINISH = 'finish_migration'
CONFIRM = 'confirm_migration'
REVERT = 'finish_revert_migration'
#: B's finish step with the most for B's recovery to undo (the guest
#: stopped and undefined, the image rolled back)
B_FINISH = [stepname.START]


def grown(spec: tuple) -> tuple:
    """The next flavor up: one GiB more disk, the other vCPU count and
    memory (a cold resize may lower those)."""
    _, vcpus, memory_mb, gib = spec
    return (str(100 + gib + 1), 3 - vcpus, 768 - memory_mb, gib + 1)


def killed_after(operation: str, index: int
                 ) -> contextlib.AbstractContextManager[list[str]]:
    """nova-compute killed (``Crash``) right after the ``index``-th step
    (from 0) of ``operation``'s plan ran, before its journal says so;
    yields the names of its steps that ran (all of them if the plan has
    fewer)."""
    def crash_after(name: str, ran: list[str]) -> None:
        if len(ran) == index + 1:
            raise Crash(name)
    return compute_node.steps_of(operation, crash_after)


def restarted(server, monkeypatch) -> None:
    """nova-compute starts again: our init_host recovers the journals
    (Nova's own part already ran for this process)."""
    monkeypatch.setattr(libvirt_driver.LibvirtDriver, 'init_host',
                        lambda self, host: None)
    server.driver.init_host(host=novaenv.CONF.host)
    monkeypatch.undo()
    assert server.driver.engine.journals.find(server.instance.uuid) == []


class Rows:
    """One server's rows for one operation of the plan: what it runs
    (``spec``) and the boot its disk has counted."""

    def __init__(self, server, cluster: test_ceph.Ceph,
                 monkeypatch) -> None:
        self.server = server
        self.ceph = cluster
        self.monkeypatch = monkeypatch
        self.spec = SMALL
        self.boot = server.wait_boot(1).boot

    @property
    def running(self) -> bool:
        drv, inst = self.server.driver, self.server.instance
        return drv.instance_exists(inst) and \
            drv.get_info(inst).state == power_state.RUNNING

    def check(self, spec: tuple, boot: int) -> None:
        """The guest runs ``spec`` at ``boot`` (its console), the image
        has its size and no snapshot, nothing of a resize is left."""
        report = self.server.wait_boot(boot)
        assert (report.cpu_count, report.disks) == (
            spec[1], {'vda': spec[3] * GiB})
        assert_root(self.ceph, self.server.instance.uuid, spec[3], [])
        assert_no_resize_left(self.server)
        assert self.running
        self.spec, self.boot = spec, boot

    def run(self, operation: str, attempt: Callable[[], None],
            after_crash: Callable[[], None]) -> list[str]:
        """``attempt`` killed after each step of ``operation`` in turn,
        each followed by recovery and ``after_crash`` (Nova's next call
        and the row's checks), until it runs to its end; the steps
        killed after."""
        killed: list[str] = []
        while True:
            try:
                with killed_after(operation, len(killed)) as ran:
                    attempt()
            except Crash as crash:
                killed.append(str(crash))
                restarted(self.server, self.monkeypatch)
                after_crash()
                continue
            break
        # every step of the plan as it ran had its row
        assert killed == ran, (killed, ran)
        return killed


@pytest.fixture
def rows(rbd_backend, make_server, monkeypatch) -> Rows:  # noqa: F811
    return Rows(make_server(flavor(SMALL)), rbd_backend, monkeypatch)


def test_rbd_migrate_then_confirm_killed_after_each_step(rows):
    """Migrate: rolled back at start; Nova's finish_revert_migration
    starts the guest in its flavor (it never stopped if killed before
    the power off).  Then the resize goes through, and its confirm is
    the first of the confirm rows (one server for both, as a server
    costs a boot)."""
    s = rows.server
    new = grown(rows.spec)

    def after_crash() -> None:
        assert_root(rows.ceph, s.instance.uuid, 1, [])
        still_up = rows.running
        s.instance.task_state = None
        s.driver.plug_vifs(s.instance, s.nw)
        s.driver.finish_revert_migration(
            s.ctx, s.instance, s.nw, migration_for(s, flavor(new)), None,
            True)
        rows.check(SMALL, rows.boot + (0 if still_up else 1))

    went_through = []
    killed = rows.run(MIGRATE, lambda: went_through.append(
        resize(s, flavor(new))), after_crash)
    assert stepname.TAKE_REVERT_POINT in killed
    rows.spec, rows.boot = new, rows.boot + 1
    _confirm_rows(rows, went_through[0])


def _confirm_rows(rows: Rows, pending: objects.Migration) -> None:
    """The confirm of the resize ``pending`` (to ``rows.spec``) killed
    after each step: completed at start, the new flavor runs on, no
    snapshot left; a repeated confirm does nothing; each row's next
    resize is the next row's to confirm."""
    s = rows.server
    mig = [pending]

    def after_crash() -> None:
        s.driver.confirm_migration(s.ctx, mig[0], s.instance, s.nw)
        rows.check(rows.spec, rows.boot)
        new = grown(rows.spec)
        mig[0] = resize(s, flavor(new))
        rows.spec, rows.boot = new, rows.boot + 1

    killed = rows.run(CONFIRM, lambda: s.driver.confirm_migration(
        s.ctx, mig[0], s.instance, s.nw), after_crash)
    assert stepname.REMOVE_REVERT_POINT in killed
    rows.check(rows.spec, rows.boot)
    assert s.ping()


def test_rbd_finish_killed_after_each_step(rows):
    """Rolled back at start (the image too: its old size, the revert
    point kept for the revert); the revert then starts the old flavor
    from the revert point."""
    s = rows.server
    new = grown(rows.spec)

    def after_crash() -> None:
        assert_root(rows.ceph, s.instance.uuid, 1, [REVERT_POINT])
        revert(s, migration_for(s, flavor(new)))
        rows.check(SMALL, rows.boot + 1)

    killed = rows.run(FINISH, lambda: resize(s, flavor(new)), after_crash)
    assert stepname.START in killed
    # the resize that went through boots the new flavor; confirmed
    assert_root(rows.ceph, s.instance.uuid, new[3], [REVERT_POINT])
    s.driver.confirm_migration(s.ctx, migration_for(s, flavor(new)),
                               s.instance, s.nw)
    rows.check(new, rows.boot + 1)
    assert s.ping()


def test_rbd_revert_killed_after_each_step(rows):
    """Completed at start (the image rolled back, the revert point
    removed); the operator's hard reboot starts the old flavor (once
    more if the revert had started it already)."""
    s = rows.server
    new = grown(rows.spec)

    def attempt() -> None:
        revert(s, resize(s, flavor(new)))

    def after_crash() -> None:
        assert_root(rows.ceph, s.instance.uuid, 1, [])
        boot = rows.boot + 1
        if rows.running:
            s.wait_boot(boot)
            boot += 1
        s.instance.task_state, s.instance.vm_state = None, 'active'
        s.instance.save()
        s.driver.reboot(s.ctx, s.instance, s.nw, 'HARD', s.bdi())
        rows.check(SMALL, boot)

    killed = rows.run(REVERT, attempt, after_crash)
    assert stepname.ROLL_BACK_TO_REVERT_POINT in killed
    rows.check(SMALL, rows.boot + 1)
    assert s.ping()


# -- host B -------------------------------------------------------------------

def _booted(instance_dir: str, boot: int) -> guestlog.GuestReport:
    return guestlog.wait_for_boot(os.path.join(instance_dir, 'console.log'),
                                  boot)


def test_rbd_move_killed_on_b_then_on_a(host_b, ceph):  # noqa: F811
    """A move to B whose finish B's nova-compute dies in (``B_FINISH``):
    B's next start rolls it back, Nova's revert (B's destroy, A's
    finish_revert_resize) starts the old flavor on A.  Then A's revert
    of a move killed, completed at A's start, hard rebooted; last, A's
    confirm killed, completed at A's start, the guest running on B.
    After each: the guest's console where it runs, the image's size, no
    snapshot, no domain, directory or journal left on the other host."""
    a, b, uuid, ip, _mac = _spawned_on_a(host_b, ceph)
    here = os.path.join(compute_node.INSTANCES, uuid)
    there = host_b.path(here)
    journals_a = os.path.join(compute_node.INSTANCES, journal.JOURNAL_DIR,
                              f'{uuid}.*')
    boot = [1]

    def on_a(spec: tuple) -> None:
        """The guest runs ``spec`` on A, B has nothing of it."""
        boot[0] += 1
        report = _booted(here, boot[0])
        assert (report.cpu_count, report.disks) == (
            spec[1], {'vda': spec[3] * GiB})
        assert_root(ceph, uuid, spec[3], [])
        assert Host('qemu:///system').lookup(uuid).is_running()
        assert host_b.host().lookup(uuid) is None
        assert not os.path.exists(there)
        assert not os.path.exists(here + '_resize')
        assert glob.glob(journals_a) == []
        assert glob.glob(host_b.path(journals_a)) == []

    def to_b() -> dict:
        return a('resize_instance', uuid=uuid, flavor=grown(SMALL))

    try:
        _booted(here, 1)
        for step in B_FINISH:
            out = to_b()
            assert b.killed_after(
                FINISH, step, 'finish_resize', uuid=uuid, ip=ip,
                migration=out['migration'],
                disk_info=out['disk_info']) is None, f'no step {step}'
            # B's nova-compute again: init_host rolls its finish back
            # (the image to the revert point), then Nova's revert
            b('revert_resize', uuid=uuid, migration=out['migration'],
              destroy_disks=False)
            assert_root(ceph, uuid, 1, [REVERT_POINT])
            a('finish_revert_resize', uuid=uuid, migration=out['migration'])
            on_a(SMALL)
        # A's revert killed once B's copy is dropped: completed at A's
        # start; the operator's hard reboot starts the old flavor
        out = to_b()
        b('finish_resize', uuid=uuid, ip=ip, migration=out['migration'],
          disk_info=out['disk_info'])
        b('revert_resize', uuid=uuid, migration=out['migration'],
          destroy_disks=False)
        assert a.killed_after(REVERT, stepname.DROP_DEST_COPY,
                              'finish_revert_resize', uuid=uuid,
                              migration=out['migration']) is None
        a('reboot', uuid=uuid)
        on_a(SMALL)
        # A's confirm killed once A's domain is gone: completed at A's
        # start, a repeated confirm does nothing
        out = to_b()
        b('finish_resize', uuid=uuid, ip=ip, migration=out['migration'],
          disk_info=out['disk_info'])
        assert a.killed_after(CONFIRM, stepname.UNDEFINE_SOURCE,
                              'confirm_resize', uuid=uuid,
                              migration=out['migration']) is None
        a('confirm_resize', uuid=uuid, migration=out['migration'])
        report = _booted(there, boot[0] + 1)
        assert (report.cpu_count, report.disks) == (2, {'vda': 2 * GiB})
        assert_root(ceph, uuid, 2, [])
        assert host_b.host().lookup(uuid).is_running()
        assert Host('qemu:///system').lookup(uuid) is None
        assert not os.path.exists(here)
        assert not os.path.exists(here + '_resize')
        assert glob.glob(journals_a) == []
        assert host_b.ping(ip.split('/')[0]), 'guest does not answer on B'
    finally:
        destroyed_everywhere(host_b, a, b, uuid)


def test_rbd_deleted_after_its_finish_was_killed_leaves_no_image(
        rbd_backend, make_server, monkeypatch):  # noqa: F811
    """The finish killed, rolled back at start: the revert point stays
    for a revert, and the instance is not RESIZED.  Deleted instead,
    Nova confirms nothing first (it does only for RESIZED), and its RBD
    cleanup removes its own ``nova-resize`` snapshot but no other:
    ours would keep the image in the pool for ever (Nova retries, warns
    and leaves it).  The delete leaves no image and no snapshot."""
    s = make_server(flavor(SMALL))
    s.wait_boot(1)
    with pytest.raises(Crash), killed_after(FINISH, 0):
        resize(s, flavor(grown(SMALL)))
    restarted(s, monkeypatch)
    assert_root(rbd_backend, s.instance.uuid, 1, [REVERT_POINT])
    # Nova's delete (what it does with a leftover: one try, not twelve)
    monkeypatch.setattr(novaenv.CONF.libvirt, 'rbd_destroy_volume_retries',
                        1)
    s.driver.destroy(s.ctx, s.instance, s.nw, s.bdi())
    monkeypatch.undo()
    assert rbd_backend.images(s.instance.uuid) == []
    # (Nova's delete_instance_files removes the instance directory and
    # leaves the ``_resize`` beside it, ours as upstream's)
    assert not os.path.exists(s.dir)
