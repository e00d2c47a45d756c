"""The engine's plans with Nova's own implementations of some steps.

``NovaImplementation`` is the adapter's ``resizedriver.engine.
Implementation``: built per compute-manager call with that call's Nova
objects, it makes the operations below for the engine's entry points,
which keep the locking, resuming, record and journal handling.

Disk work (validation, copies, rebase, conversion, growth, the kept source
copy) stays the engine's.  What Nova owns stays Nova's: power off through
the driver, VIF plugging through os-vif, volume (dis)connection, missing
images (swap, config drive, backing files) through the image backend, and
the guest XML through ``_get_guest_xml`` so NUMA, PCI, vTPM, mdevs and
friends come out right for the new flavor.

Every journal these write says ``impl: nova``, so that recovery rebuilds
these plans, not the engine's (``OPERATIONS`` below).  Two cases:

* a repeated confirm or revert (Nova calls the driver again): the call
  has Nova's objects, so the adapter completes it with these full plans;
* ``init_host`` after a crash: there are no Nova objects yet.  Recovery
  then does only the disk work the engine owns (the kept ``_resize``
  copy, the record, a domain it had Nova define) and leaves define, VIFs,
  volumes and start to Nova's own start-up path: it plugs every
  instance's VIFs, calls ``finish_revert_migration`` for an instance left
  RESIZE_MIGRATING, and rebuilds the XML on the next hard reboot or
  start.  Never the CLI's bridge creation, never the saved source XML:
  under Nova, Nova's XML (from its objects) is the authority.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import nova.conf
from nova.virt.libvirt import blockinfo
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import guest as libvirt_guest
from oslo_log import log as logging

from resizedriver import chooser
from resizedriver import exception
from resizedriver import stepname
from resizedriver import recovery
from resizedriver.env import HostEnv
from resizedriver.guest import Guest
from resizedriver.layout import InstanceLayout
from resizedriver.nova import compat
from resizedriver.nova import translate
from resizedriver.nova.progress import InstanceProgress
from resizedriver.model import DiskFile, DiskRole
from resizedriver.operations import live, precopy, rbd
from resizedriver.operations import revert as rd_revert
from resizedriver.operations.confirm import ConfirmMigration
from resizedriver.operations.finish import FinishMigration
from resizedriver.operations.migrate import MigrateDiskAndPowerOff
from resizedriver.plan import Plan, Step
from resizedriver.record import ResizeRecord

LOG = logging.getLogger(__name__)
#: in every journal context of these plans (see ``resizedriver.recovery``)
IMPL = {recovery.IMPL: 'nova'}


def undefine(env: HostEnv, uuid: str, keep_state: bool) -> None:
    """Stop and undefine a domain the way Nova's ``_undefine_domain``
    does, which needs no Nova objects: libvirt refuses to undefine a UEFI
    domain unless told what to do with its NVRAM.  ``keep_state`` keeps
    the NVRAM and vTPM state (another definition of the same instance on
    this host uses them), else they go with the domain, as Nova's."""
    guest = env.host.lookup(uuid)
    if guest is None:
        return
    guest.destroy()
    libvirt_guest.Guest(guest._domain).delete_configuration(
        keep_vtpm=keep_state, keep_nvram=keep_state)


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


def nova_objects(nova: Optional[NovaCall]) -> NovaCall:
    """The Nova objects of the call, for a step that needs them.  A plan
    rebuilt at start-up has none; it only runs undos (and a revert's disk
    work), none of which come here, so reaching this without them is a
    bug in a plan, reported as such instead of an AttributeError."""
    if nova is None:
        raise exception.ResizeDriverError(
            'a step that needs the objects of a Nova call ran without them')
    return nova


class NovaMigrate(MigrateDiskAndPowerOff):
    #: the destination's nova-compute runs the finish
    dest_half_by_remote_command = False
    #: Nova's image backend makes the swap at finish (``NovaFinish``)
    makes_swap = False
    #: RBD images the live plan cannot grow go Nova's own way
    #: (``exception.Upstream``, caught by the driver)
    owns_rbd = True

    def __init__(self, env, uuid, new_flavor, dest, transport,
                 live_mode: Optional[str], nova: NovaCall, timeout: int,
                 retry_interval: int, progress: InstanceProgress,
                 nova_flavor: Any = None) -> None:
        super().__init__(dataclasses.replace(env, progress=progress), uuid,
                         new_flavor, dest, transport, live_mode)
        self.nova = nova
        self.progress = progress
        #: Nova's new flavor object (its extra specs), for live_blockers
        self.nova_flavor = nova_flavor
        self.timeout = timeout
        self.retry_interval = retry_interval

    def plan(self) -> Plan:
        # After a crash these two are not undone by recovery but by Nova's
        # start-up: it plugs every instance's VIFs, and its
        # finish_revert_migration for an instance left RESIZE_MIGRATING
        # rebuilds the XML, which connects the volumes.  (A live resize
        # powers nothing off and keeps both.)
        plan = super().plan()
        # validation has looked at the disks: the bytes a copy will send
        self.progress.expect(sum(d.actual_size for d in self.disks
                                 if d.role is not DiskRole.SWAP))
        if stepname.POWER_OFF not in plan:
            return plan
        return plan.insert_after(
            stepname.POWER_OFF,
            Step(stepname.UNPLUG_VIFS, self.nova.unplug_vifs,
                 self.nova.plug_vifs,
                 undo_after_crash=False),
            Step(stepname.DISCONNECT_VOLUMES, self.nova.disconnect_volumes,
                 self.nova.connect_volumes, undo_after_crash=False))

    def journal_context(self) -> dict[str, Any]:
        """After a crash, recovery puts the disks back but leaves the
        guest off: the VIFs and volumes it needs are Nova's to restore, at
        its start-up, before it starts the guest itself (an instance left
        RESIZE_MIGRATING gets plug_vifs, then finish_revert_migration).
        That is the engine's own rollback with this one policy declared
        (the VIF and volume steps are journaled as needing no undo)."""
        return dict(super().journal_context(), power_on_in_recovery=False,
                    **IMPL)

    def integration_live_blockers(self) -> list[str]:
        """What Nova's side makes unsafe to hot-plug: the compute manager
        terminates the source's volume connections between migrate and
        finish, and a guest whose layout Nova pins (dedicated CPUs, NUMA,
        hugepages, realtime, PCI or mediated devices) would need Nova to
        place what is added."""
        why: list[str] = []
        inst = self.nova.instance
        if translate.volume_connections(self.nova.block_device_info):
            why.append('Cinder volumes are attached (Nova disconnects them '
                       'between migrate and finish)')
        for flavor, which in ((inst.flavor, 'its flavor'),
                              (self.nova_flavor, 'the new flavor')):
            if flavor is None:
                continue
            pinned = translate.layout_pinned(flavor, inst.image_meta)
            if pinned:
                why.append(f'{which} pins the guest\'s layout ({pinned})')
        if self.nova_flavor is not None:
            changed = translate.extra_specs_changed(inst.flavor,
                                                    self.nova_flavor)
            if changed:
                why.append(f'the new flavor changes more than sizes '
                           f'({", ".join(changed)}): Nova\'s XML for it '
                           f'needs a boot')
        if inst.numa_topology is not None:
            why.append('the instance has a NUMA topology')
        if inst.pci_devices:
            why.append('the instance has PCI devices')
        return why

    def check_no_shrink(self) -> None:
        """Nova's rule, from the flavors (``translate.disk_down``), in
        place of the operator command's from the disks: a disk already
        larger than the new flavor's size keeps it, as under Nova, and
        what Nova allows is never refused for it."""
        why = translate.disk_down(self.nova.instance, self.nova_flavor,
                                  self.nova.block_device_info)
        if why:
            raise exception.DiskShrinkRefused(
                f'cannot shrink {why}: unable to resize disk down')

    def check_host_files(self) -> None:
        """Nova's XML is authoritative: ``_get_guest_xml`` regenerates
        the definition on the destination (guest-agent socket, firmware,
        CD-ROMs and all); the source's is never defined there."""

    def power_off(self) -> None:
        """Nova's power off with Nova's ``timeout`` and
        ``retry_interval`` (the compute manager's: the image's
        ``os_shutdown_timeout``, ...).  Its clean shutdown is ours: the
        same ACPI request repeated every ``retry_interval`` within
        ``timeout``, but a guest that went off is seen within
        ``guest.POLL_SECONDS`` where Nova's ``_clean_shutdown`` looks
        once a second, a second of downtime it adds to every cold
        resize.  Then Nova's own ``power_off`` with no timeout: its
        ``_destroy`` powers off hard what did not stop, as Nova's does
        after its own clean shutdown."""
        if self.timeout:
            self.guest.power_off(self.timeout, self.retry_interval)
        self.nova.driver.power_off(self.nova.instance, 0, 0)


class NovaFinish(FinishMigration):
    #: Nova's image backend makes the swap (``create_missing_images``),
    #: as its XML declares it: under ``use_cow_images`` a qcow2 overlay
    #: over ``_base/swap_<MiB>``, which QEMU is told to read as qcow2
    #: whatever ``disk.info`` says.  A raw swap of ours would not boot.
    makes_swap = False

    def __init__(self, env, record, power_on: bool,
                 nova: Optional[NovaCall], migration: Any = None,
                 image_meta: Any = None, allocations: Any = None,
                 share_info: Any = None) -> None:
        super().__init__(env, record, power_on)
        self.nova = nova
        self.migration = migration
        self.image_meta = image_meta
        self.allocations = allocations
        self.share_info = share_info

    def journal_context(self) -> dict[str, Any]:
        return dict(super().journal_context(), **IMPL)

    @classmethod
    def from_journal(cls, env, context: dict[str, Any]) -> 'NovaFinish':
        """For a rollback at start-up: only undos run, and they need no
        Nova objects."""
        return cls(env, ResizeRecord.from_dict(context['record']),
                   bool(context['power_on']), None)

    def check_source_definition(self) -> None:
        """Nothing to check: the source definition is never defined here.
        Nova generates the new XML itself (``_get_guest_xml``), so its CD-
        ROM images, guest-agent socket, UEFI loader and NVRAM are Nova's
        own (libvirt keeps the NVRAM of a redefined domain, and makes one
        from the template on another host, as with Nova's resize)."""

    def undefine(self) -> None:
        """Undo of define, in process and after a crash: remove what we
        had Nova define, keeping NVRAM and vTPM state (on this host the
        source's definition shares them).  Not the saved source XML: the
        old definition is Nova's to rebuild from its objects (revert, hard
        reboot), with the VIFs and volumes it manages."""
        undefine(self.env, self.record.uuid, keep_state=True)

    def plan(self) -> Plan:
        plan = super().plan()
        if stepname.PLUG_VIFS not in plan:   # live: the guest has them
            return plan
        # Nova plugs VIFs as part of defining the guest; what it needs
        # first is its images (swap, config drive, ...).  The rbd plan's
        # image is there, and Nova's image backend would take its own
        # revert point of it (``nova-resize``, in RESIZE_FINISH): only
        # the console log.
        return plan.replace(
            stepname.PLUG_VIFS,
            Step(stepname.CREATE_MISSING_IMAGES,
                 self.ensure_console_log if
                 self.record.plan == chooser.RBD_COLD else
                 self.create_missing_images))

    def rbd_size(self, disk: DiskFile) -> int:
        """The image's size from librbd, as Nova's RBD backend reads it
        (``[libvirt] images_rbd_ceph_conf``, ``rbd_user``), in the pool
        the domain names (over the operation's connection)."""
        return rbd.images(self.env).size(disk.path)

    def ensure_console_log(self) -> None:
        """The instance directory (migrate made it) gets the console log
        Nova's XML names."""
        n = nova_objects(self.nova)
        n.driver._ensure_console_log_for_instance(n.instance)

    def create_missing_images(self) -> None:
        """Swap, config drive, a missing backing file: the image backend
        does nothing for files that exist (our copies)."""
        n = nova_objects(self.nova)
        driver = n.driver
        driver._create_image(
            n.context, n.instance, n.disk_mapping(self.image_meta)['mapping'],
            block_device_info=n.block_device_info, ignore_bdi_for_swap=True,
            fallback_from_host=self.migration.source_compute)
        driver._ensure_console_log_for_instance(n.instance)

    def define(self) -> None:
        """Nova's XML for the new flavor, defined (not started) through
        Nova; the engine's own step starts it and its undos apply."""
        n = nova_objects(self.nova)
        driver = n.driver
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


    def define_persistent(self) -> None:
        """The live plan's define: Nova's XML for the new flavor (with
        the headroom the driver adds) becomes the definition of the next
        boot; the running guest goes on as it is.  Not through
        ``_create_guest_with_network``: that would also write the config
        drive the running guest has open."""
        n = nova_objects(self.nova)
        self.env.host.define(n.driver._get_guest_xml(
            n.context, n.instance, n.network_info,
            n.disk_mapping(self.image_meta), self.image_meta,
            block_device_info=n.block_device_info,
            share_info=self.share_info))


class NovaConfirm(ConfirmMigration):
    def __init__(self, env, record, nova: Optional[NovaCall]) -> None:
        super().__init__(env, record)
        self.nova = nova

    def journal_context(self) -> dict[str, Any]:
        return dict(super().journal_context(), **IMPL)

    @classmethod
    def from_journal(cls, env, context: dict[str, Any],
                     nova: Optional[NovaCall] = None) -> 'NovaConfirm':
        return cls(env, ResizeRecord.from_dict(context['record']), nova)

    def plan(self) -> Plan:
        return self._undefining_with(self.undefine_source)

    def recovery_plan(self) -> Plan:
        """At start-up, without Nova's objects: the old domain goes as
        Nova's ``_undefine_domain`` drops it (NVRAM and vTPM state too: the
        instance lives on the other host now).  The vTPM secret of a
        flavor that dropped its vTPM and the old host's VIF devices need
        the instance's flavors and network info, so they are left (Nova
        does not look at an instance of another host at start-up)."""
        return self._undefining_with(functools.partial(
            undefine, self.env, self.record.uuid, keep_state=False))

    def _undefining_with(self, undefine_source: Callable[[], None]) -> Plan:
        """The engine's confirm, the old domain undefined Nova's way
        (planned only when the destination is another hypervisor)."""
        plan = super().plan()
        if stepname.UNDEFINE_SOURCE in plan:
            plan.replace(stepname.UNDEFINE_SOURCE,
                         Step(stepname.UNDEFINE_SOURCE, undefine_source))
        return plan

    def undefine_source(self) -> None:
        n = nova_objects(self.nova)
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

    def __init__(self, env, uuid: str, record: Optional[ResizeRecord],
                 nova: Optional[NovaCall], power_on: bool,
                 share_info: Any = None) -> None:
        self.env = env
        self.nova = nova
        self.power_on = power_on
        self.share_info = share_info
        self.source = InstanceLayout(env.instances_path, uuid)
        self.record = record
        #: whether define_and_start must (re)define: the kept copy came
        #: back, or an interrupted revert is being completed
        self.must_define = False
        #: a live resize's revert decision (``live.decide_revert``)
        self.decision: Optional[str] = None

    @classmethod
    def from_journal(cls, env, context: dict[str, Any],
                     nova: Optional[NovaCall] = None,
                     power_on: Optional[bool] = None,
                     share_info: Any = None) -> 'NovaRevert':
        """An interrupted revert: with ``nova``, a repeated call that
        completes it with Nova's steps; without, start-up recovery (with
        the journaled ``power_on``).  A live revert goes on as it was
        decided when it began."""
        record = ResizeRecord.from_dict(context['record'])
        if power_on is None:
            power_on = bool(context['power_on'])
        op = cls(env, record.uuid, record, nova, power_on, share_info)
        op.must_define = True
        op.decision = context.get(live.DECISION)
        return op

    def journal_context(self) -> dict[str, Any]:
        """The record and power_on, for ``from_journal``.  Only a revert
        of a kept copy is journaled: one with no record has nothing to
        recover (``NovaImplementation.nothing_to_revert``)."""
        assert self.record is not None
        self.decision = live.decided(self.env, self.record, self.decision)
        return dict(rd_revert.FinishRevertMigration.context_for(
            self.record, self.power_on, self.decision), **IMPL)

    @property
    def is_live(self) -> bool:
        return self.record is not None and self.record.plan == chooser.LIVE

    def plan(self) -> Plan:
        if self.is_live:
            return self._live_plan(self.define_live, None)
        steps = [Step(stepname.MOVE_BACK, self.move_back)]
        plan = self.record.plan if self.record is not None else None
        if plan == chooser.PRECOPY:
            assert self.record is not None
            steps.append(precopy.revert_fold_step(self.env, self.record))
        elif plan == chooser.RBD_COLD:
            assert self.record is not None
            steps += rbd.revert_steps(self.env, self.record,
                                      drop_dest_dir=True)
        return Plan('finish_revert_migration', self.source.uuid, steps + [
            Step(stepname.DEFINE_AND_START, self.define_and_start),
            Step(stepname.REMOVE_RECORD,
                 lambda: rd_revert.remove_record(self.source)),
        ], forward=True)

    def recovery_plan(self) -> Plan:
        """At start-up, without Nova's objects: the disk work only.  The
        guest is Nova's to define and start (for an instance left
        RESIZE_MIGRATING Nova calls finish_revert_migration again, which
        then finds no record and defines and starts it; one left
        RESIZE_REVERTING gets a new XML from Nova's next hard reboot).  A
        live resize's guest gets the definition Nova made before the
        resize back (its own XML, from the record), and one the revert
        reboots (or shut down before the crash) is started here: Nova
        has no start-up branch for RESIZE_REVERTING, and the guest was
        running when the revert began."""
        if self.is_live:
            assert self.record is not None
            record = self.record
            return self._live_plan(
                lambda: live.restore_definition(self.env, record),
                functools.partial(live.start_guest, self.env, record)
                if self.power_on else None)
        return self.plan().replace(stepname.DEFINE_AND_START)

    def _live_plan(self, define: Callable[[], None],
                   start: Optional[Callable[[], None]]) -> Plan:
        """The live plan's revert, as decided when it began."""
        assert self.record is not None
        self.decision = live.decided(self.env, self.record, self.decision)
        assert self.decision is not None
        return Plan('finish_revert_migration', self.source.uuid,
                    live.revert_steps(self.env, self.record, self.decision,
                                      define, start), forward=True)

    def define_live(self) -> None:
        """A live resize's revert: Nova's XML for the old flavor (the
        instance has it back) is the next boot's definition of a guest
        that runs on; a guest that is off (rebooted into the old flavor,
        or found off) is defined and started through Nova."""
        n = nova_objects(self.nova)
        current = self.env.host.lookup(self.source.uuid)
        if current is not None and current.is_running():
            self.env.host.define(self._nova_xml(n))
            return
        self.must_define = True
        self.define_and_start()

    def move_back(self) -> None:
        if rd_revert.restore_source_dir(self.source):
            self.must_define = True

    def define_and_start(self) -> None:
        n = nova_objects(self.nova)
        driver = n.driver
        current = self.env.host.lookup(self.source.uuid)
        if not self.must_define and current is not None and \
                current.is_running() == self.power_on:
            LOG.info('Already reverted', instance=n.instance)
            return
        if current is not None:
            current.destroy()
        driver._finish_revert_migration_vtpm(n.context, n.instance)
        guest = n.create_guest(self._nova_xml(n), self.power_on)
        if self.power_on:
            guest.wait_running(self.env.conf.resizedriver.start_timeout)

    def _nova_xml(self, n: NovaCall) -> str:
        """Nova's XML for the instance's (old, again) flavor."""
        driver = n.driver
        image_meta = n.instance.image_meta
        mdevs = list(driver._get_all_assigned_mediated_devices(n.instance))
        return driver._get_guest_xml(
            n.context, n.instance, n.network_info,
            n.disk_mapping(image_meta), image_meta,
            block_device_info=n.block_device_info, mdevs=mdevs,
            share_info=self.share_info,
            **compat.old_guest(driver, n.instance))


#: what recovery (``resizedriver.recovery``) rebuilds for a journal that
#: says ``impl: nova``.  The migrate is the engine's rollback with the
#: policy its journal declares (``power_on_in_recovery``).
OPERATIONS = {
    'finish_migration': NovaFinish,
    'migrate_disk_and_power_off': MigrateDiskAndPowerOff,
    'finish_revert_migration': NovaRevert,
    'confirm_migration': NovaConfirm,
}
