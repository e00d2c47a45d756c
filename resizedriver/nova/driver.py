"""``LibvirtResizeDriver``: Nova's libvirt driver with our resize path.

Everything but the resize contract is Nova's ``LibvirtDriver`` as is
(spawn, reboot, snapshot, live migration, ...).  The four resize methods
translate Nova's objects in (:mod:`resizedriver.nova.translate`), call the
engine's entry points of the same names with a ``NovaImplementation`` of
the call (:mod:`resizedriver.nova.implementation`: the Nova steps of
:mod:`resizedriver.nova.operations`, with the call's objects), and
translate the engine's exceptions out.  They keep
Nova's exact signatures and exception contract:

* every refusal is raised before the guest is powered off, as
  ``InstanceFaultRollback(ResizeError)``, so the instance goes back to
  ACTIVE;
* a failure after power off is rolled back by the plan; when the rollback
  was complete it is also reported as ``InstanceFaultRollback`` (the guest
  runs again on the source), else as ``ResizeError`` (the instance goes to
  ERROR for an operator to look at);
* ``finish_revert_migration`` is idempotent, and a repeated confirm or
  revert completes one a crash interrupted, with Nova's steps (the call
  has Nova's objects);
* an instance resizedriver does not own (disks that are not files in
  its instance directory: Ceph RBD, LVM, ...; attached volumes; no local
  root disk) takes Nova's own path, unchanged: the ``upstream`` plan
  (:mod:`resizedriver.nova.upstream`);
* Nova's hard reboot (power on), live migration, rescue and own resize
  path are refused before anything is touched while the disks read a
  layer Nova would take for an image of its cache
  (:mod:`resizedriver.foreignlayers`), until recovery has folded it;
* ``init_host`` recovers every operation a crash interrupted, before Nova
  looks at the instances (rolls back migrate and finish, completes
  confirm and revert: see :mod:`resizedriver.recovery`), with the
  adapter's plans and only the disk work (:mod:`resizedriver.nova.
  operations` says why); a fold under a running guest (a disk's data:
  long) is left to a background thread, so nova-compute is up meanwhile
  (``ResizeEngine.recover_at_start``);
* ``instance.progress`` follows the disk copy, one progress per call:
  two instances resize at once;
* a live resize (``resizedriver.operations.live``) runs from the same
  calls and keeps the guest running throughout: ``destroy()`` in the
  manager's ``revert_resize`` leaves it running, and every XML Nova
  makes (``_get_guest_xml``) carries the headroom the operator grants.
"""

from __future__ import annotations

from typing import Any, Optional

import futurist
import nova.conf
from nova import exception as nova_exception
from nova.compute import task_states
from nova.virt.libvirt import driver as libvirt_driver
from oslo_log import log as logging

from resizedriver import chooser
from resizedriver import conf as rd_conf
from resizedriver import exception
from resizedriver import foreignlayers
from resizedriver import headroom
from resizedriver import record as rd_record
from resizedriver.engine import ResizeEngine
from resizedriver.host import Host
from resizedriver.layout import InstanceLayout
from resizedriver.nova import compat
from resizedriver.nova import operations as nova_ops
from resizedriver.nova.implementation import NovaImplementation
from resizedriver.nova import rbdimages
from resizedriver.nova.rbdimages import NovaRbdImages
from resizedriver.operations import rbd, sourcetops
from resizedriver.nova import translate
from resizedriver.nova import upstream
from resizedriver.guest import Guest
from resizedriver.record import ResizeRecord

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF


def _layout(instance) -> InstanceLayout:
    return InstanceLayout(CONF.instances_path, instance.uuid)


def _refuse_if_topped(instance, foreign_layers: bool = False) -> None:
    """No Nova definition on a disk under a pre-copy top: an interrupted
    pre-copy is recovered first (``sourcetops.refuse_if_topped``).  With
    ``foreign_layers``, neither while its disks read a layer Nova would
    take for an image of its cache (``foreignlayers``): what reads the
    chain anew (a hard reboot, a live migration, a rescue) waits for
    recovery to fold it.  Not for every definition: a finish defines the
    guest on its pre-copied layer, folded once the guest runs."""
    inst = _layout(instance)
    try:
        sourcetops.refuse_if_topped(inst)
    except exception.RecoveryNeeded as e:
        raise nova_exception.NovaException(str(e)) from e
    why = foreign_layers and foreignlayers.reason(inst)
    if why:
        LOG.warning('Refused: %s', why, instance=instance)
        raise nova_exception.NovaException(why)


class LibvirtResizeDriver(libvirt_driver.LibvirtDriver):
    def __init__(self, virtapi: Any, read_only: bool = False) -> None:
        super().__init__(virtapi, read_only)
        rd_conf.register_opts(CONF)
        self._engine: Optional[ResizeEngine] = None
        #: the folds ``init_host`` left to the background, while they run
        self.folds_after_start: Optional[futurist.Future] = None

    @property
    def engine(self) -> ResizeEngine:
        """Built on first use: Nova's connection is open by then."""
        if self._engine is None:
            self._engine = ResizeEngine(
                CONF, host=Host(conn=self._host.get_connection()),
                rbd=NovaRbdImages())
        return self._engine

    def _get_guest_xml(self, context, instance, *args, **kwargs):
        """Nova's XML, with the headroom the operator grants (spawn, hard
        reboot, resize, revert: every definition Nova makes), so that a
        later resize can be live (:mod:`resizedriver.headroom`).  Never
        for a disk under a pre-copy top (:func:`_refuse_if_topped`).
        Nova's arguments go on as they came: they differ between
        releases (33 added ``old_guest``)."""
        _refuse_if_topped(instance)
        xml = super()._get_guest_xml(context, instance, *args, **kwargs)
        room = translate.headroom(instance, CONF)
        if room == headroom.Headroom():
            return xml
        LOG.debug('Headroom: up to %d vCPUs, %d MiB', room.max_vcpus,
                  room.max_memory_mib, instance=instance)
        return headroom.apply(xml, room, instance.flavor.vcpus,
                              instance.flavor.memory_mb)

    def _hard_reboot(self, context, instance, *args, **kwargs):
        """Nova's, refused up front while a pre-copy top or a layer that
        is not Nova's is in the chain (:func:`_refuse_if_topped`): Nova's
        hard reboot (and power on, and the resume at host boot) destroys
        the guest before it writes the new XML, which would then be
        refused with the guest down, and fetches the image it takes a
        layer's name for into ``_base``."""
        _refuse_if_topped(instance, foreign_layers=True)
        return super()._hard_reboot(context, instance, *args, **kwargs)

    def check_can_live_migrate_source(self, context, instance, *args,
                                      **kwargs):
        """Nova's, refused as :meth:`_hard_reboot` is: the destination
        would build the disk on the Glance image named as the layer
        (``_create_images_and_backing``), and the migrated guest would
        read it where the layer held its data."""
        _refuse_if_topped(instance, foreign_layers=True)
        return super().check_can_live_migrate_source(context, instance,
                                                     *args, **kwargs)

    def live_migration(self, context, instance, *args, **kwargs):
        """Nova's, refused as :meth:`check_can_live_migrate_source` is
        (checked again: a fold may have failed in between)."""
        _refuse_if_topped(instance, foreign_layers=True)
        return super().live_migration(context, instance, *args, **kwargs)

    def rescue(self, context, instance, *args, **kwargs):
        """Nova's, refused as :meth:`_hard_reboot` is (it destroys the
        guest and boots a definition of its own on the disks)."""
        _refuse_if_topped(instance, foreign_layers=True)
        return super().rescue(context, instance, *args, **kwargs)

    def unpause(self, instance):
        """Nova's, refused while a pre-copy top is in the instance
        directory: the guest may be paused for its pivot, and must not
        write to its disk until recovery has taken the top away."""
        _refuse_if_topped(instance)
        return super().unpause(instance)

    def resume(self, context, instance, *args, **kwargs):
        """Nova's (a suspended guest started again), refused as
        :meth:`unpause` is."""
        _refuse_if_topped(instance)
        return super().resume(context, instance, *args, **kwargs)

    def destroy(self, context, instance, network_info, block_device_info=None,
                destroy_disks=True, destroy_secrets=True):
        """Nova's, except for the revert of a live resize: the compute
        manager's ``revert_resize`` destroys the guest on the destination,
        which for a live resize is the very guest that runs on; our
        ``finish_revert_migration`` then reverts it (live, or with one
        reboot, as the record says).  Not with volumes attached (one may
        have been attached while RESIZED): the manager terminates their
        connections next, so the guest must go, and the revert then
        defines and starts it with Nova's XML, which connects them."""
        if instance.task_state == task_states.RESIZE_REVERTING and \
                self._live_resize_pending(instance.uuid) and \
                not translate.volume_connections(block_device_info):
            LOG.info('Revert of a live resize: the guest keeps running '
                     'until finish_revert_migration reverts it',
                     instance=instance)
            return
        if destroy_disks and CONF.libvirt.images_type == 'rbd' and \
                instance.task_state != task_states.RESIZE_REVERTING:
            self._drop_revert_points(instance)
        super().destroy(context, instance, network_info, block_device_info,
                        destroy_disks, destroy_secrets)

    def _drop_revert_points(self, instance) -> None:
        """The instance's images go (Nova's ``_cleanup_rbd``), and with
        them the ``rbd`` plan's revert points: Nova removes its own
        ``nova-resize`` snapshot first, but any other keeps the image in
        the pool for good.  A RESIZED instance is confirmed before it is
        deleted; one a failed or killed finish left is not.  (Not in a
        revert: Nova keeps the images then, and the revert needs the
        revert point.)"""
        for image in rbdimages.drop_snapshots_of(instance.uuid,
                                                 rbd.SNAPSHOT):
            LOG.info('Revert point %s@%s removed: the instance\'s images '
                     'are deleted', image, rbd.SNAPSHOT, instance=instance)

    def _live_resize_pending(self, uuid: str) -> bool:
        try:
            record = rd_record.load_pending(
                InstanceLayout(CONF.instances_path, uuid))
        except exception.NotFound:
            return False
        return record.plan == chooser.LIVE

    def init_host(self, host):
        super().init_host(host)
        # logs what it did with each journal; what restores state comes
        # before Nova initialises the instances, the folds under running
        # guests after, in the background
        _done, later = self.engine.recover_at_start()
        if later:
            self.folds_after_start = compat.spawn(
                self.engine.complete_folds, later)

    def _guest(self, instance) -> Optional[Guest]:
        try:
            return Guest(self._host.get_guest(instance)._domain)
        except nova_exception.InstanceNotFound:
            return None

    def _call(self, context, instance, network_info,
              block_device_info=None) -> nova_ops.NovaCall:
        return nova_ops.NovaCall(self, context, instance, network_info,
                                 block_device_info)

    def migrate_disk_and_power_off(self, context, instance, dest,
                                   flavor, network_info,
                                   block_device_info=None,
                                   timeout=0, retry_interval=0):
        destination = translate.destination(dest, CONF,
                                            self.get_host_ip_addr())
        guest = self._guest(instance)     # none: the engine refuses it
        if guest is not None:
            source_xml = guest.xml()
            why = upstream.reason(
                source_xml, _layout(instance), CONF.libvirt.images_type,
                block_device_info, not destination.same_hypervisor and
                translate.has_vtpm(instance),
                rbd_ours=guest.is_running())
            if why:
                return self._migrate_novas_way(
                    why, guest, source_xml, context, instance, dest, flavor,
                    network_info, block_device_info, timeout,
                    retry_interval)
        new_flavor = translate.flavor(flavor, block_device_info)
        impl = NovaImplementation(
            self._call(context, instance, network_info, block_device_info),
            timeout=timeout, retry_interval=retry_interval,
            nova_flavor=flavor)
        try:
            record = self.engine.migrate_disk_and_power_off(
                instance.uuid, new_flavor, destination, impl=impl)
            impl.progress.complete()
        except exception.Upstream as e:         # RBD, not ours (rule 1c)
            assert guest is not None
            return self._migrate_novas_way(
                str(e), guest, guest.xml(), context, instance, dest, flavor,
                network_info, block_device_info, timeout, retry_interval)
        except exception.ResizeRefused as e:
            raise nova_exception.InstanceFaultRollback(
                nova_exception.ResizeError(reason=str(e))) from e
        except exception.ResizeFailed as e:
            error = nova_exception.ResizeError(reason=str(e))
            if e.rolled_back:
                raise nova_exception.InstanceFaultRollback(error) from e
            raise error from e
        return record.to_json()

    def _migrate_novas_way(self, why: str, guest: Guest, source_xml: str,
                           context, instance, dest, flavor, network_info,
                           block_device_info, timeout,
                           retry_interval) -> str:
        """The upstream plan's migrate (``nova/upstream.py``): Nova's own
        method, then the record that confirm and revert follow."""
        try:
            # Nova's own path would first delete a <uuid>_resize the guest
            # still reads, and copy a disk whose backing it takes for an
            # image of its cache: our own path completes such a fold
            # first (the engine), this one cannot
            _refuse_if_topped(instance, foreign_layers=True)
        except nova_exception.NovaException as e:
            raise nova_exception.InstanceFaultRollback(
                nova_exception.ResizeError(reason=str(e))) from e
        leaked = upstream.leaked_resize_snapshot(self.image_backend,
                                                 instance)
        if leaked:
            LOG.warning('Refused: %s', leaked, instance=instance)
            raise nova_exception.InstanceFaultRollback(
                nova_exception.ResizeError(reason=leaked))
        LOG.info('Plan upstream: %s: Nova\'s own resize', why,
                 instance=instance)
        inst = _layout(instance)
        was_running = guest.is_running()
        upstream.drop_reverted_record(inst)
        disk_info = super().migrate_disk_and_power_off(
            context, instance, dest, flavor, network_info,
            block_device_info, timeout, retry_interval)
        upstream.write_record(
            inst, name=instance.name,
            destination=translate.destination(dest, CONF,
                                              self.get_host_ip_addr()),
            old_flavor=instance.flavor, new_flavor=flavor,
            source_xml=source_xml, was_running=was_running, reason=why)
        return disk_info

    def finish_migration(self, context, migration, instance, disk_info,
                         network_info, image_meta, resize_instance,
                         allocations, block_device_info=None, power_on=True,
                         share_info=None):
        if upstream.is_novas_disk_info(disk_info):
            LOG.info('Plan upstream: Nova\'s own finish', instance=instance)
            return super().finish_migration(
                context, migration, instance, disk_info, network_info,
                image_meta, resize_instance, allocations, block_device_info,
                power_on, **compat.share_info(super().finish_migration,
                                              share_info))
        record = ResizeRecord.from_json(disk_info)
        if record.uuid != instance.uuid:
            raise nova_exception.ResizeError(
                reason=f'disk info is for {record.uuid}, not {instance.uuid}')
        impl = NovaImplementation(
            self._call(context, instance, network_info, block_device_info),
            migration=migration, image_meta=image_meta,
            allocations=allocations, share_info=share_info)
        try:
            self.engine.finish_migration(record, power_on, impl=impl)
        except exception.ResizeDriverError as e:
            raise nova_exception.ResizeError(reason=str(e)) from e

    def confirm_migration(self, context, migration, instance, network_info):
        if upstream.is_pending(_layout(instance), self.engine.journals):
            LOG.info('Plan upstream: Nova\'s own confirm', instance=instance)
            return super().confirm_migration(context, migration, instance,
                                             network_info)
        impl = NovaImplementation(
            self._call(context, instance, network_info))
        try:
            self.engine.confirm_migration(instance.uuid, impl=impl)
        except exception.NotFound:
            # a confirm already done (the manager may repeat it)
            LOG.info('Nothing left to confirm', instance=instance)

    def finish_revert_migration(self, context, instance, network_info,
                                migration, block_device_info=None,
                                power_on=True, share_info=None):
        inst = _layout(instance)
        if upstream.is_pending(inst, self.engine.journals):
            LOG.info('Plan upstream: Nova\'s own revert', instance=instance)
            super().finish_revert_migration(
                context, instance, network_info, migration,
                block_device_info, power_on,
                **compat.share_info(super().finish_revert_migration,
                                    share_info))
            upstream.drop_reverted_record(inst)
            return
        impl = NovaImplementation(
            self._call(context, instance, network_info, block_device_info),
            share_info=share_info)
        try:
            self.engine.finish_revert_migration(instance.uuid, power_on,
                                                impl=impl)
        except exception.ResizeDriverError as e:
            raise nova_exception.ResizeError(reason=str(e)) from e
