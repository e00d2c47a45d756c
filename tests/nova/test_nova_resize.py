"""resizedriver inside Nova (31, 33, 34): loading, and resizes of a real
instance.

The tests play the compute manager's part (prep_resize / resize_instance /
finish_resize / confirm or revert) with real Nova objects, in the order and
with the arguments nova/compute/manager.py uses, and assert on what the
guest prints and on the instance being left consistent.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import subprocess
import threading
import time

import pytest
from nova import exception as nova_exception
from nova import objects
from nova.compute import manager
from nova.compute import task_states
from nova.virt import driver as nova_driver
from nova.virt.libvirt import driver as libvirt_driver

from resizedriver import blockjob
from resizedriver import chooser
from resizedriver import journal
from resizedriver import vif
from resizedriver.host import Host
from resizedriver.nova import operations as nova_ops
from resizedriver.nova import translate
from resizedriver.nova import upstream
from tests.nova import novaenv

GiB = 1024 ** 3
SMALL = ('1', 1, 256, 1)
BIG = ('2', 2, 512, 2)
BIGGER = ('3', 2, 640, 3)
#: how long a test holds a fold that init_host must not wait for, s
HELD = 60


def flavor(spec):
    return novaenv.flavor(*spec)


def migration_for(server, new) -> 'objects.Migration':
    """As the resource tracker makes it: ``dest_host`` is the dest
    driver's ``get_host_ip_addr()``, which the manager hands migrate."""
    mig = objects.Migration(
        context=server.ctx, instance_uuid=server.instance.uuid,
        source_compute=novaenv.CONF.host, dest_compute=novaenv.CONF.host,
        dest_host=server.driver.get_host_ip_addr(), migration_type='resize',
        status='migrating', old_instance_type_id=server.instance.flavor.id,
        new_instance_type_id=new.id)
    mig.create()
    return mig


def resize(server, new) -> 'objects.Migration':
    """resize_instance on the source, then finish_resize on the dest."""
    drv, inst = server.driver, server.instance
    mig = migration_for(server, new)
    inst.old_flavor, inst.new_flavor = inst.flavor, new
    inst.save()
    disk_info = drv.migrate_disk_and_power_off(
        server.ctx, inst, mig.dest_host, new, server.nw, server.bdi(), 60,
        2)
    manager.ComputeManager._set_instance_info(inst, new)
    inst.save()
    update_swap_bdm(server, confirm=True)
    # the manager's finish_resize (Nova's RBD backend snapshots the root
    # disk in this state)
    inst.task_state = task_states.RESIZE_FINISH
    inst.save()
    drv.finish_migration(server.ctx, mig, inst, disk_info, server.nw,
                         server.image_meta, True, {}, server.bdi(), True)
    inst.task_state = None
    inst.save()
    return mig


def update_swap_bdm(server, confirm: bool) -> None:
    """The manager's: the swap mapping follows the flavor at finish_resize
    (``confirm``) and back at finish_revert_resize."""
    if server.local_bdms:
        manager.ComputeManager._update_bdm_for_swap_to_finish_resize(
            None, server.ctx, server.instance, confirm=confirm)


def revert(server, mig) -> None:
    """The API's revert (task state RESIZE_REVERTING), then revert_resize
    on the dest, then finish_revert_resize on the source."""
    drv, inst = server.driver, server.instance
    inst.task_state = task_states.RESIZE_REVERTING
    inst.save()
    # Same host: instance storage is shared, so the dest keeps the disks.
    drv.destroy(server.ctx, inst, server.nw, server.bdi(),
                destroy_disks=False)
    update_swap_bdm(server, confirm=False)
    manager.ComputeManager._set_instance_info(inst, inst.old_flavor)
    inst.save()
    drv.finish_revert_migration(server.ctx, inst, server.nw, mig,
                                server.bdi(), True)
    inst.task_state = None
    inst.save()


def assert_novas_layout(server):
    """The root disk is Nova's again: ``disk -> _base/<sha>``."""
    info = json.loads(subprocess.run(
        ['qemu-img', 'info', '-U', '--output=json', '-f', 'qcow2',
         os.path.join(server.dir, 'disk')],
        check=True, capture_output=True, text=True).stdout)
    assert os.path.dirname(info['backing-filename']) == os.path.join(
        os.path.dirname(server.dir), '_base')


def assert_no_resize_left(server):
    assert not os.path.exists(server.dir + '_resize')
    assert not os.path.exists(os.path.join(server.dir, 'resize.json'))
    assert not os.path.exists(server.dir + '.staging')


def summary_lines(caplog, title: str) -> list[str]:
    """The ``<title> summary:`` lines logged (``caplog`` at INFO)."""
    return [r.getMessage() for r in caplog.records
            if r.getMessage().startswith(f'{title} summary:')]


def plan_of(server) -> str:
    with open(os.path.join(server.dir + '_resize', 'resize.json')) as f:
        return json.load(f)['plan']


@pytest.mark.releases
def test_the_nova_conf_line_loads_our_driver(driver):
    # The session's driver was loaded by Nova's own load_compute_driver
    # from compute_driver = resizedriver.LibvirtResizeDriver.  Our resize
    # methods take every call this Nova's manager makes: its parameters,
    # in its order, with its defaults (and 34's share_info, optional, on
    # the releases before).
    assert novaenv.CONF.compute_driver == 'resizedriver.LibvirtResizeDriver'
    loaded = driver
    assert type(loaded).__module__ == 'resizedriver.nova.driver'
    assert type(loaded).__name__ == 'LibvirtResizeDriver'
    assert isinstance(loaded, libvirt_driver.LibvirtDriver)
    assert isinstance(loaded, nova_driver.ComputeDriver)
    for name in ('migrate_disk_and_power_off', 'finish_migration',
                 'confirm_migration', 'finish_revert_migration'):
        ours = getattr(type(loaded), name)
        assert ours is not getattr(libvirt_driver.LibvirtDriver, name)
        novas = list(inspect.signature(
            getattr(nova_driver.ComputeDriver, name)).parameters.values())
        mine = list(inspect.signature(ours).parameters.values())
        assert mine[:len(novas)] == novas, name
        assert all(p.default is None for p in mine[len(novas):]), name


def test_resize_up_then_confirm(make_server, caplog):
    server = make_server(flavor(SMALL))
    before = server.wait_boot(1)
    assert (before.cpu_count, before.disks) == (1, {'vda': 1 * GiB})
    assert server.ping()

    caplog.set_level(logging.INFO, logger='resizedriver')
    mig = resize(server, flavor(BIG))
    # the operator's one line at the end of the resize
    [summary] = summary_lines(caplog, 'Resize')
    assert summary.startswith(
        f'Resize summary: instance={server.instance.uuid} plan=overlay '
        f'topology=same-host bytes_copied=0 precopy_rounds=0 downtime_s=')
    assert 'downtime_s=-' not in summary and 'duration_s=-' not in summary
    assert server.instance.progress == 100
    after = server.wait_boot(2)
    assert after.cpu_count == 2
    assert after.mem_kb - before.mem_kb > 200 * 1024
    assert after.disks == {'vda': 2 * GiB}
    assert after.macs == {'eth0': server.mac}
    assert server.ping()
    assert os.path.isdir(server.dir + '_resize')
    # Same host, qcow2: the overlay plan (nothing copied while down)
    assert plan_of(server) == 'overlay'

    server.driver.confirm_migration(server.ctx, mig, server.instance,
                                    server.nw)
    assert_no_resize_left(server)
    assert_novas_layout(server)
    # ... and the confirm's line, what it removed
    [confirmed] = summary_lines(caplog, 'Confirm')
    assert confirmed.startswith(
        f'Confirm summary: instance={server.instance.uuid} plan=overlay '
        f'topology=same-host outcome=done freed_bytes=')
    assert 'freed_bytes=0 ' not in confirmed
    assert confirmed.endswith('delete _resize"')
    with open(os.path.join(server.dir, 'disk.info')) as f:
        assert json.load(f)[os.path.join(server.dir, 'disk')] == 'qcow2'
    # A repeated confirm (the manager may retry) is harmless.
    server.driver.confirm_migration(server.ctx, mig, server.instance,
                                    server.nw)
    assert server.driver.get_info(server.instance).state == 1   # RUNNING
    assert server.ping()


@pytest.mark.releases
def test_resize_up_then_revert(make_server, caplog):
    server = make_server(flavor(SMALL))
    before = server.wait_boot(1)

    mig = resize(server, flavor(BIG))
    assert server.wait_boot(2).cpu_count == 2

    caplog.set_level(logging.INFO, logger='resizedriver')
    revert(server, mig)
    [reverted] = summary_lines(caplog, 'Revert')
    assert reverted.startswith(
        f'Revert summary: instance={server.instance.uuid} plan=overlay '
        f'topology=same-host restored_bytes=')
    assert 'move _resize back' in reverted
    back = server.wait_boot(2)   # the source copy still counted 1 boot
    assert (back.cpu_count, back.mem_kb, back.disks) == \
        (before.cpu_count, before.mem_kb, before.disks)
    assert back.macs == {'eth0': server.mac}
    assert server.ping()
    assert_no_resize_left(server)
    # Nova's init_host calls it again for instances stuck mid-resize.
    server.driver.finish_revert_migration(server.ctx, server.instance,
                                          server.nw, mig, None, True)
    assert server.driver.get_info(server.instance).state == 1


@pytest.fixture
def inbound_addr():
    """Sets ``[libvirt] migration_inbound_addr`` for one test (the
    session's other tests share the process)."""
    yield lambda value: novaenv.CONF.set_override(
        'migration_inbound_addr', value, 'libvirt')
    novaenv.CONF.clear_override('migration_inbound_addr', 'libvirt')


def test_a_migration_address_of_this_host_is_this_host(make_server,
                                                       inbound_addr):
    """Nova hands migrate the destination's ``get_host_ip_addr()``:
    ``[libvirt] migration_inbound_addr``, a dedicated network's address
    or a ``%s`` form of the hostname.  Taken for another host, a resize
    on this one went over ssh to itself (refused here: no sshd there),
    lost the overlay and live plans, and its confirm would have stopped
    and undefined the resized guest, taken for the source's."""
    server = make_server(flavor(SMALL))
    server.wait_boot(1)
    inbound_addr('127.0.0.2')               # another address of lo
    mig = resize(server, flavor(BIG))
    assert mig.dest_host == '127.0.0.2'
    assert plan_of(server) == 'overlay'
    assert server.wait_boot(2).cpu_count == 2
    server.driver.confirm_migration(server.ctx, mig, server.instance,
                                    server.nw)
    assert_no_resize_left(server)
    assert server.driver.get_info(server.instance).state == 1   # RUNNING
    assert server.ping()

    inbound_addr('%s.rd-migration')        # resolves nowhere
    mig = resize(server, flavor(BIGGER))
    assert mig.dest_host == server.driver._host.get_hostname() + \
        '.rd-migration'
    assert plan_of(server) == 'overlay'
    assert server.wait_boot(3).disks == {'vda': 3 * GiB}
    revert(server, mig)
    back = server.wait_boot(3)      # the kept copy had counted 2 boots
    assert (back.cpu_count, back.disks) == (2, {'vda': 2 * GiB})
    assert_no_resize_left(server)
    assert server.ping()


def test_a_confirm_whose_fold_fails_keeps_the_instance_running(
        make_server, monkeypatch):
    """The overlay's fold fails at confirm (a pull QEMU aborts, or that
    outlasts its deadline): Nova's confirm_resize errors the instance out
    when confirm_migration raises, so it must not.  The guest runs on
    through <uuid>_resize, which says so, and Nova may neither hard
    reboot nor live migrate it (it would take <uuid>_resize/disk for an
    image of its cache); nova-compute's next start folds it and deletes
    it, the guest running all along, and Nova's hard reboot works.  That
    fold (a disk's data) runs after init_host, in the background: run
    inside it, nova-compute reported down for as long."""
    server = make_server(flavor(SMALL))
    server.wait_boot(1)
    drv, inst = server.driver, server.instance
    mig = resize(server, flavor(BIG))
    assert plan_of(server) == 'overlay'
    after = server.wait_boot(2)
    domain_id = drv._host.get_guest(inst).id

    def aborted(guest, dev, base, timeout, progress=None):
        raise blockjob.FoldFailed(f'{dev}: the pull did not finish within '
                                  f'{timeout:.0f} s; it was aborted')
    monkeypatch.setattr(blockjob, 'pull', aborted)
    drv.confirm_migration(server.ctx, mig, inst, server.nw)    # no raise
    monkeypatch.undo()
    assert drv.get_info(inst).state == 1                       # RUNNING
    assert server.ping()
    marker = os.path.join(server.dir + '_resize',
                          'STILL-READ-BY-THE-RUNNING-GUEST')
    with open(marker) as f:
        assert inst.uuid in f.read()
    # Nova would take the overlays' backing (<uuid>_resize/disk) for an
    # image of its cache: no hard reboot (nor power on) and no live
    # migration from here until the fold is done, the guest untouched
    for refused in (
            lambda: drv.reboot(server.ctx, inst, server.nw, 'HARD'),
            lambda: drv.check_can_live_migrate_source(server.ctx, inst,
                                                      None)):
        with pytest.raises(nova_exception.NovaException,
                           match=f'resizedriver recover {inst.uuid}'):
            refused()
    # nor a resize Nova's own way (it would delete <uuid>_resize first)
    monkeypatch.setattr(upstream, 'reason',
                        lambda *a, **kw: 'forced by a test')
    with pytest.raises(nova_exception.InstanceFaultRollback) as caught:
        drv.migrate_disk_and_power_off(server.ctx, inst, novaenv.CONF.my_ip,
                                       flavor(BIGGER), server.nw, None, 60,
                                       2)
    monkeypatch.undo()
    assert 'resizedriver recover' in str(caught.value.inner_exception)
    assert drv._host.get_guest(inst).id == domain_id
    assert server.ping()

    held, pull = threading.Event(), blockjob.pull

    def held_pull(*args, **kwargs) -> None:
        held.wait(HELD)
        pull(*args, **kwargs)
    monkeypatch.setattr(blockjob, 'pull', held_pull)
    monkeypatch.setattr(libvirt_driver.LibvirtDriver, 'init_host',
                        lambda self, host: None)
    began = time.monotonic()
    drv.init_host(host=novaenv.CONF.host)
    assert time.monotonic() - began < HELD / 2      # not the fold's time
    assert [j.operation for j in drv.engine.journals.find()] == \
        ['confirm_migration']
    held.set()
    drv.folds_after_start.result(timeout=300)
    monkeypatch.undo()
    assert_no_resize_left(server)
    assert drv.engine.journals.find() == []
    assert_novas_layout(server)
    assert drv._host.get_guest(inst).id == domain_id   # never restarted
    assert server.ping()
    assert server.wait_boot(2).cpu_count == after.cpu_count
    drv.reboot(server.ctx, inst, server.nw, 'HARD')    # Nova's own now
    again = server.wait_boot(3)
    assert (again.cpu_count, again.disks) == (after.cpu_count, after.disks)
    assert server.ping()


def test_shrink_is_refused_before_power_off(make_server):
    server = make_server(flavor(BIG))
    server.wait_boot(1)
    small = flavor(SMALL)
    with pytest.raises(nova_exception.InstanceFaultRollback) as caught:
        server.driver.migrate_disk_and_power_off(
            server.ctx, server.instance, novaenv.CONF.my_ip, small,
            server.nw, None, 60, 2)
    assert isinstance(caught.value.inner_exception,
                      nova_exception.ResizeError)
    assert 'cannot shrink' in str(caught.value.inner_exception)
    # Nothing happened: still running, never rebooted, no _resize.
    assert server.driver.get_info(server.instance).state == 1
    assert server.wait_boot(1).cpu_count == 2
    assert_no_resize_left(server)
    assert server.ping()

    # A pre-copy top in its directory (an interrupted pre-copy's): Nova
    # neither hard reboots the guest (which destroys it first) nor
    # defines one on the disk under the top.
    top = os.path.join(server.dir, 'disk.top')
    open(top, 'w').close()
    try:
        with pytest.raises(nova_exception.NovaException,
                           match='disk.top holds writes'):
            server.driver.reboot(server.ctx, server.instance, server.nw,
                                 'HARD')
        with pytest.raises(nova_exception.NovaException,
                           match='resizedriver recover'):
            server.driver._get_guest_xml(
                server.ctx, server.instance, server.nw, {}, server.image_meta)
        with pytest.raises(nova_exception.NovaException,
                           match='disk.top holds writes'):
            server.driver.unpause(server.instance)
    finally:
        os.unlink(top)
    assert server.driver.get_info(server.instance).state == 1
    assert server.wait_boot(1).boot == 1


class _PastChecks(Exception):
    """Nova's own migrate_disk_and_power_off got past its checks."""


class _UpstreamChecks:
    """Just enough of a LibvirtDriver for Nova's own
    ``migrate_disk_and_power_off`` to run its checks: the first thing it
    does after them (asking whether the path is shared) stops it."""

    _is_booted_from_volume = staticmethod(
        libvirt_driver.LibvirtDriver._is_booted_from_volume)

    def _is_path_shared_with(self, dest, path):
        raise _PastChecks()


def _upstream_refuses(ctx, instance, new, block_device_info) -> bool:
    try:
        libvirt_driver.LibvirtDriver.migrate_disk_and_power_off(
            _UpstreamChecks(), ctx, instance, 'dest', new, [],
            block_device_info)
    except nova_exception.InstanceFaultRollback:
        return True
    except _PastChecks:
        return False
    raise AssertionError('upstream neither refused nor went on')


def _bdm(ctx, **fields) -> 'objects.BlockDeviceMapping':
    """A block device mapping as Nova's database hands it over."""
    return objects.BlockDeviceMapping(ctx, **{
        'no_device': False, 'disk_bus': 'virtio', 'device_type': 'disk',
        'guest_format': None, 'encrypted': False,
        'encryption_secret_uuid': None, 'encryption_format': None,
        'encryption_options': None, 'delete_on_termination': True,
        'image_id': None, 'snapshot_id': None, 'volume_id': None,
        'volume_type': None, 'attachment_id': None,
        'connection_info': None, 'tag': None, **fields})


def test_shrinks_are_refused_as_novas_own_driver_refuses_them(driver):
    """Nova refuses from the flavors (new root or ephemeral below the
    instance's flavor; a root volume exempt; the ephemeral size from the
    block device info its compute manager builds): ours decides each case
    as Nova's own code, run on the same objects, does."""
    ctx = novaenv.admin_context()

    def flavor_of(root_gb, ephemeral_gb):
        flv = novaenv.flavor('41', 1, 256, root_gb)
        flv.ephemeral_gb = ephemeral_gb
        return flv

    local = _bdm(ctx, source_type='blank', destination_type='local',
                 volume_size=2, boot_index=-1, device_name='/dev/vdb')
    root_volume = _bdm(ctx, source_type='volume', destination_type='volume',
                       volume_id='0b7d3a8e-1111-4c9e-9f00-0000000000aa',
                       volume_size=1, boot_index=0, device_name='/dev/vda',
                       connection_info='{"driver_volume_type": "iscsi"}')
    inst = objects.Instance(uuid='0b7d3a8e-1111-4c9e-9f00-0000000000bb',
                            root_device_name='/dev/vda')
    decided = {}
    for mapped, bdms in (('no bdms', []), ('ephemeral', [local]),
                         ('root volume', [root_volume]),
                         ('both', [root_volume, local])):
        bdi = nova_driver.get_block_device_info(
            inst, objects.BlockDeviceMappingList(objects=bdms))
        for old in ((2, 1), (2, 0), (0, 0)):
            inst.flavor = flavor_of(*old)
            for new in ((1, 1), (0, 1), (2, 0), (2, 1), (2, 2), (3, 0)):
                ours = translate.disk_down(inst, flavor_of(*new), bdi)
                case = (mapped, old, new)
                assert bool(ours) == _upstream_refuses(
                    ctx, inst, flavor_of(*new), bdi), (case, ours)
                decided[case] = ours
    assert 'root disk' in decided['no bdms', (2, 1), (1, 1)]
    assert 'root disk' in decided['no bdms', (2, 0), (0, 1)]
    assert 'ephemeral' in decided['no bdms', (2, 1), (2, 0)]
    assert decided['root volume', (2, 1), (1, 1)] == ''
    assert 'ephemeral' in decided['both', (2, 1), (2, 0)]
    # the 2 GB mapped ephemeral: Nova's sum of it is 0 (the driver's
    # ephemerals carry no source type), so the flavor's 1 GB counts
    assert decided['ephemeral', (2, 1), (2, 1)] == ''


class Crash(BaseException):
    """nova-compute dying: nothing in the driver may catch it."""


def test_a_resize_killed_mid_way_is_recovered_at_start(make_server,
                                                      monkeypatch):
    server = make_server(flavor(SMALL))
    before = server.wait_boot(1)
    drv, inst = server.driver, server.instance
    mig = migrate_killed_after(server, monkeypatch,
                               'move instance dir to _resize')
    monkeypatch.undo()
    assert os.path.isdir(server.dir + '_resize')
    assert not os.path.exists(server.dir)
    assert drv.get_info(inst).state != 1            # powered off

    # nova-compute starts again: the manager calls init_host (Nova's own
    # part already ran for this process), then, for an instance left
    # RESIZE_MIGRATING, plug_vifs and finish_revert_migration.
    monkeypatch.setattr(libvirt_driver.LibvirtDriver, 'init_host',
                        lambda self, host: None)
    drv.init_host(host=novaenv.CONF.host)
    monkeypatch.undo()
    # The disks are back; the guest stays off for Nova to start: its VIFs
    # were unplugged, and plugging them is Nova's.
    assert_no_resize_left(server)
    assert os.path.isdir(server.dir)
    assert drv.engine.journals.find() == []
    assert drv.get_info(inst).state != 1
    inst.flavor = inst.old_flavor
    inst.save()
    drv.plug_vifs(inst, server.nw)
    drv.finish_revert_migration(server.ctx, inst, server.nw, mig, None, True)
    back = server.wait_boot(2)          # counted from the source's disk
    assert (back.cpu_count, back.disks) == (before.cpu_count, before.disks)
    assert server.ping()

    # and the same resize then goes through
    resize(server, flavor(BIG))
    assert server.wait_boot(3).cpu_count == 2


def test_an_instance_with_a_guest_agent_channel_resizes(make_server):
    """Nova's XML has the agent's unix socket outside the instance dir:
    under Nova that XML is Nova's own, not a foreign definition."""
    server = make_server(flavor(SMALL), hw_qemu_guest_agent='yes')
    server.wait_boot(1)
    xml = server.driver._host.get_guest(server.instance).get_xml_desc()
    assert 'org.qemu.guest_agent.0' in xml

    mig = resize(server, flavor(BIG))
    assert server.wait_boot(2).cpu_count == 2
    xml = server.driver._host.get_guest(server.instance).get_xml_desc()
    assert 'org.qemu.guest_agent.0' in xml
    server.driver.confirm_migration(server.ctx, mig, server.instance,
                                    server.nw)
    assert_no_resize_left(server)
    assert server.ping()


def test_two_instances_resizing_at_once_keep_their_own_progress(
        make_server, monkeypatch):
    """B's whole migrate runs while A's waits to copy its disks: each
    instance's progress is its own copy's."""
    a, b = make_server(flavor(SMALL)), make_server(flavor(SMALL))
    a.wait_boot(1)
    b.wait_boot(1)
    saved = {a.instance.uuid: [], b.instance.uuid: []}
    for server in (a, b):
        server.instance.old_flavor = server.instance.flavor
        server.instance.new_flavor = flavor(BIG)
        server.instance.save = (lambda inst: lambda **_kw: saved[
            inst.uuid].append(inst.progress))(server.instance)
    # About copies: the copy plan (same host would choose the overlay).
    monkeypatch.setattr(nova_ops.NovaMigrate, 'offered_plans',
                        (chooser.COPY,))
    real_copy = nova_ops.NovaMigrate.copy_disks

    def copy_disks(op):
        if op.inst.uuid == a.instance.uuid:
            b.driver.migrate_disk_and_power_off(
                b.ctx, b.instance, novaenv.CONF.my_ip, flavor(BIG), b.nw,
                None, 60, 2)
        real_copy(op)
    monkeypatch.setattr(nova_ops.NovaMigrate, 'copy_disks', copy_disks)
    a.driver.migrate_disk_and_power_off(
        a.ctx, a.instance, novaenv.CONF.my_ip, flavor(BIG), a.nw, None, 60, 2)

    for server in (a, b):
        progress = saved[server.instance.uuid]
        assert server.instance.progress == 100
        assert progress == sorted(progress) and progress[-1] == 100, progress
        server.driver.destroy(server.ctx, server.instance, server.nw, None,
                              destroy_disks=False)
        server.driver.finish_revert_migration(
            server.ctx, server.instance, server.nw, None, None, True)
        assert server.wait_boot(2).cpu_count == 1


def test_a_vtpm_instance_moves_to_another_host_nova_s_way(make_server,
                                                          monkeypatch):
    """Nova's own migrate moves the swtpm state, ours do not: the upstream
    plan, Nova's own method with this very call (stopped there: no swtpm
    on this machine to start a guest with a TPM, nor a host to go to).
    Before, it was refused."""
    server = make_server(flavor(SMALL))
    server.wait_boot(1)
    server.instance.flavor.extra_specs = {'hw:tpm_version': '2.0',
                                          'hw:tpm_model': 'tpm-crb'}
    novas = []

    def nova_s_own(self, context, instance, dest, *args):
        novas.append((instance.uuid, dest))
        raise nova_exception.InstanceFaultRollback(
            nova_exception.ResizeError(reason='Nova\'s own migrate'))
    monkeypatch.setattr(libvirt_driver.LibvirtDriver,
                        'migrate_disk_and_power_off', nova_s_own)
    try:
        with pytest.raises(nova_exception.InstanceFaultRollback) as caught:
            server.driver.migrate_disk_and_power_off(
                server.ctx, server.instance, '192.0.2.1', flavor(BIG),
                server.nw, None, 60, 2)
    finally:
        server.instance.flavor.extra_specs = {}   # for Nova's destroy
    assert 'Nova\'s own migrate' in str(caught.value.inner_exception)
    assert novas == [(server.instance.uuid, '192.0.2.1')]
    assert server.driver.get_info(server.instance).state == 1


def forbid_engine_guest_steps(monkeypatch):
    """Under Nova neither the CLI's bridge creation nor a define of the
    saved source XML (the engine's Host.define) may run."""
    def forbidden(*args, **kwargs):
        raise AssertionError('an engine guest step ran under Nova')
    monkeypatch.setattr(vif, 'plug', forbidden)
    monkeypatch.setattr(Host, 'define', forbidden)


def migrate_killed_after(server, monkeypatch, step: str):
    """The manager's resize_instance to BIG, nova-compute killed right
    after ``step`` of the migrate; returns the migration."""
    inst = server.instance
    mig = migration_for(server, flavor(BIG))
    inst.old_flavor, inst.new_flavor = inst.flavor, flavor(BIG)
    inst.save()
    kill_after(monkeypatch, step)
    with pytest.raises(Crash):
        server.driver.migrate_disk_and_power_off(
            server.ctx, inst, mig.dest_host, flavor(BIG), server.nw, None,
            60, 2)
    return mig


def kill_after(monkeypatch, step: str):
    """The process "dies" right after ``step`` ran, before the journal
    records it done; returns the real ``Journal.done``."""
    real_done = journal.Journal.done

    def die_after(self, name):
        if name == step:
            raise Crash(name)
        real_done(self, name)
    monkeypatch.setattr(journal.Journal, 'done', die_after)
    return real_done


def revert_killed_after_moving_back(server, monkeypatch):
    """A resized server, its revert killed once the kept copy is back."""
    mig = resize(server, flavor(BIG))
    assert server.wait_boot(2).cpu_count == 2
    real_done = kill_after(monkeypatch, 'move _resize back')
    with pytest.raises(Crash):
        revert(server, mig)
    monkeypatch.setattr(journal.Journal, 'done', real_done)
    [pending] = server.driver.engine.journals.find(server.instance.uuid)
    assert pending.context['impl'] == 'nova'
    return mig


def test_a_revert_killed_mid_way_is_finished_by_nova_at_start(
        make_server, monkeypatch):
    server = make_server(flavor(SMALL))
    before = server.wait_boot(1)
    drv, inst = server.driver, server.instance
    mig = revert_killed_after_moving_back(server, monkeypatch)

    forbid_engine_guest_steps(monkeypatch)
    monkeypatch.setattr(libvirt_driver.LibvirtDriver, 'init_host',
                        lambda self, host: None)
    drv.init_host(host=novaenv.CONF.host)
    # The disk work is done; the guest is Nova's to define and start.
    assert drv.engine.journals.find() == []
    assert_no_resize_left(server)
    assert not drv.instance_exists(inst) or drv.get_info(inst).state != 1

    drv.plug_vifs(inst, server.nw)
    drv.finish_revert_migration(server.ctx, inst, server.nw, mig, None, True)
    back = server.wait_boot(2)
    assert (back.cpu_count, back.disks) == (before.cpu_count, before.disks)
    assert server.ping()


def test_a_repeated_revert_completes_with_novas_steps(make_server,
                                                      monkeypatch):
    server = make_server(flavor(SMALL))
    before = server.wait_boot(1)
    drv, inst = server.driver, server.instance
    mig = revert_killed_after_moving_back(server, monkeypatch)

    forbid_engine_guest_steps(monkeypatch)
    drv.finish_revert_migration(server.ctx, inst, server.nw, mig, None, True)
    assert drv.engine.journals.find() == []
    assert_no_resize_left(server)
    back = server.wait_boot(2)
    assert (back.cpu_count, back.disks) == (before.cpu_count, before.disks)
    assert server.ping()
