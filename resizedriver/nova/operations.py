"""The engine's plans with Nova's own implementations of some steps.

Disk work (validation, copies, rebase, conversion, growth, the kept source
copy) stays the engine's.  What Nova owns stays Nova's: power off through
the driver, VIF plugging through os-vif, volume (dis)connection, missing
images (swap, config drive, backing files) through the image backend, and
the guest XML through ``_get_guest_xml`` so NUMA, PCI, vTPM, mdevs and
friends come out right for the new flavor.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import nova.conf
from nova.virt.libvirt import blockinfo
from nova.virt.libvirt import driver as libvirt_driver
from oslo_log import log as logging

from resizedriver import exception
from resizedriver import record as rd_record
from resizedriver.guest import Guest
from resizedriver.layout import InstanceLayout
from resizedriver.nova import translate
from resizedriver.operations import revert as rd_revert
from resizedriver.operations.confirm import ConfirmMigration
from resizedriver.operations.finish import FinishMigration
from resizedriver.operations.migrate import MigrateDiskAndPowerOff
from resizedriver.plan import Plan, Step
from resizedriver.record import ResizeRecord

LOG = logging.getLogger(__name__)


class NovaCall:
    """The Nova driver and the objects of one compute-manager call."""

    def __init__(self, driver: 'libvirt_driver.LibvirtDriver', context: Any,
                 instance: Any, network_info: Any,
                 block_device_info: Any = None) -> None:
        self.driver = driver
        self.context = context
        self.instance = instance
        self.network_info = network_info
        self.block_device_info = block_device_info

    def unplug_vifs(self) -> None:
        self.driver.unplug_vifs(self.instance, self.network_info)

    def plug_vifs(self) -> None:
        self.driver.plug_vifs(self.instance, self.network_info)

    def disconnect_volumes(self) -> None:
        for info in translate.volume_connections(self.block_device_info):
            self.driver._disconnect_volume(self.context, info, self.instance)

    def connect_volumes(self) -> None:
        for info in translate.volume_connections(self.block_device_info):
            self.driver._connect_volume(self.context, info, self.instance)

    def disk_mapping(self, image_meta: Any) -> dict:
        return blockinfo.get_disk_info(
            nova.conf.CONF.libvirt.virt_type, self.instance, image_meta,
            self.block_device_info)

    def create_guest(self, xml: str, power_on: bool,
                     **kwargs: Any) -> Guest:
        """Define (and start) through Nova, which also plugs VIFs."""
        self.driver._create_guest_with_network(
            self.context, xml, self.instance, self.network_info,
            self.block_device_info, power_on=power_on, **kwargs)
        return Guest(self.driver._host.get_guest(self.instance)._domain)


class NovaMigrate(MigrateDiskAndPowerOff):
    def __init__(self, env, uuid, new_flavor, dest, transport,
                 nova: NovaCall, timeout: int, retry_interval: int) -> None:
        super().__init__(env, uuid, new_flavor, dest, transport)
        self.nova = nova
        self.timeout = timeout
        self.retry_interval = retry_interval

    def plan(self) -> Plan:
        # After a crash these two are not undone by recovery but by Nova's
        # start-up: it plugs every instance's VIFs, and its
        # finish_revert_migration for an instance left RESIZE_MIGRATING
        # rebuilds the XML, which connects the volumes.
        return super().plan().insert_after(
            'power off',
            Step('unplug VIFs', self.nova.unplug_vifs, self.nova.plug_vifs,
                 undo_after_crash=False),
            Step('disconnect volumes', self.nova.disconnect_volumes,
                 self.nova.connect_volumes, undo_after_crash=False))

    def journal_context(self) -> dict[str, Any]:
        """After a crash, recovery puts the disks back but leaves the
        guest off: the VIFs and volumes it needs are Nova's to restore, at
        its start-up, before it starts the guest itself (an instance left
        RESIZE_MIGRATING gets plug_vifs, then finish_revert_migration)."""
        return dict(super().journal_context(), power_on_in_recovery=False)

    def power_off(self) -> None:
        # Nova's own: it knows the image's os_shutdown_timeout etc.
        self.nova.driver.power_off(self.nova.instance, self.timeout,
                                   self.retry_interval)


class NovaFinish(FinishMigration):
    def __init__(self, env, record, power_on: bool, nova: NovaCall,
                 migration: Any, image_meta: Any, allocations: Any,
                 share_info: Any) -> None:
        super().__init__(env, record, power_on)
        self.nova = nova
        self.migration = migration
        self.image_meta = image_meta
        self.allocations = allocations
        self.share_info = share_info

    def plan(self) -> Plan:
        plan = super().plan()
        plan.replace('create swap')          # Nova's image backend does it
        # Nova plugs VIFs as part of defining the guest; what it needs
        # first is its images (swap, config drive, ...).
        return plan.replace(
            'plug VIFs',
            Step('create missing images', self.create_missing_images))

    def create_missing_images(self) -> None:
        """Swap, config drive, a missing backing file: the image backend
        does nothing for files that exist (our copies)."""
        driver, n = self.nova.driver, self.nova
        driver._create_image(
            n.context, n.instance, n.disk_mapping(self.image_meta)['mapping'],
            block_device_info=n.block_device_info, ignore_bdi_for_swap=True,
            fallback_from_host=self.migration.source_compute)
        driver._ensure_console_log_for_instance(n.instance)

    def define(self) -> None:
        """Nova's XML for the new flavor, defined (not started) through
        Nova; the engine's own step starts it and its undos apply."""
        driver, n = self.nova.driver, self.nova
        mdevs = driver._allocate_mdevs(self.allocations)
        driver._finish_migration_vtpm(n.context, n.instance)
        xml = driver._get_guest_xml(
            n.context, n.instance, n.network_info,
            n.disk_mapping(self.image_meta), self.image_meta,
            block_device_info=n.block_device_info, mdevs=mdevs,
            share_info=self.share_info)
        gen_confdrive = functools.partial(
            driver._create_configdrive, n.context, n.instance,
            libvirt_driver.InjectionInfo(admin_pass=None,
                                         network_info=n.network_info,
                                         files=None))
        self.guest = n.create_guest(xml, power_on=False,
                                    vifs_already_plugged=True,
                                    post_xml_callback=gen_confdrive)


class NovaConfirm(ConfirmMigration):
    def __init__(self, env, record, nova: NovaCall) -> None:
        super().__init__(env, record)
        self.nova = nova

    def plan(self) -> Plan:
        return super().plan().replace(
            'undefine source domain',
            Step('undefine source domain', self.undefine_source))

    def undefine_source(self) -> None:
        n = self.nova
        n.driver._cleanup_resize_vtpm(n.context, n.instance)
        n.driver._undefine_domain(n.instance)
        n.unplug_vifs()


class NovaRevert:
    """finish_revert_migration under Nova.

    Nova has already destroyed the resized guest on the destination (and
    its disks there unless storage is shared), and has put the old flavor
    back on the instance; Nova also calls this at start-up for instances
    stuck mid-resize, possibly with no ``_resize`` dir at all.  So: no
    record needed, every step idempotent.
    """

    def __init__(self, env, nova: NovaCall, power_on: bool,
                 share_info: Any) -> None:
        self.env = env
        self.nova = nova
        self.power_on = power_on
        self.share_info = share_info
        self.source = InstanceLayout(env.instances_path, nova.instance.uuid)
        self.restored = False
        try:
            self.record: Optional[ResizeRecord] = \
                rd_record.load_pending(self.source)
        except exception.NotFound:
            self.record = None

    def journal_context(self) -> Optional[dict[str, Any]]:
        """As the engine's revert, so recovery can complete it without
        Nova; None when there is no kept copy (nothing to journal)."""
        if self.record is None:
            return None
        return rd_revert.FinishRevertMigration.context_for(self.record,
                                                           self.power_on)

    def plan(self) -> Plan:
        return Plan('finish_revert_migration', self.source.uuid, [
            Step('move _resize back', self.move_back),
            Step('define and start guest', self.define_and_start),
            Step('remove resize record',
                 lambda: rd_revert.remove_record(self.source)),
        ], forward=True)

    def move_back(self) -> None:
        self.restored = rd_revert.restore_source_dir(self.source)

    def define_and_start(self) -> None:
        driver, n = self.nova.driver, self.nova
        current = self.env.host.lookup(self.source.uuid)
        if not self.restored and current is not None and \
                current.is_running() == self.power_on:
            LOG.info('Already reverted', instance=n.instance)
            return
        if current is not None:
            current.destroy()
        driver._finish_revert_migration_vtpm(n.context, n.instance)
        image_meta = n.instance.image_meta
        mdevs = list(driver._get_all_assigned_mediated_devices(n.instance))
        xml = driver._get_guest_xml(
            n.context, n.instance, n.network_info,
            n.disk_mapping(image_meta), image_meta,
            block_device_info=n.block_device_info, mdevs=mdevs,
            old_guest=driver._get_existing_guest_config(n.instance),
            share_info=self.share_info)
        guest = n.create_guest(xml, self.power_on)
        if self.power_on:
            guest.wait_running(self.env.conf.resizedriver.start_timeout)
