"""migrate_disk_and_power_off: the source half of a cold resize/migration.

Plan (steps with an undo in brackets; after a crash, recovery undoes every
step the journal shows begun, so each undo checks what is really there):
  validate request                  refuse before anything is touched;
                                    decide the Topology and ask the
                                    chooser (these modules are its
                                    ``copy`` plan)
  copy backing files  [remove]      while the guest still runs: they are
                                    immutable, so this costs no downtime
  create dest dir     [remove]      remote / other path, while it runs
  write resize record [remove]
  power off           [start]       clean shutdown, then hard off
  move to _resize     [move back]
  create instance dir [remove]      shared path: same dir name again
  copy disks                        swap is not copied but recreated;
                                    each source is read once, hashed as
                                    it is sent; the copy is read back
                                    from the device while it is written
                                    and compared before it gets its
                                    name (``resizedriver.sparse`` says
                                    why not later, e.g. in finish)

What is left between the guest's power-off and its start returning:
libvirt's stop, power off returning and the move to _resize as in the
overlay plan (``overlay``'s docstring says why each); the copy of every
disk, the plan's cost, since what the guest wrote is final only once it
is off; finish's checks of the copies (they are read on this host) and
what the new flavor or destination needs of them (``finish``), define
and start.  Another path's directory is made while the guest runs.
"""

from __future__ import annotations

import os
import tempfile
import threading
from concurrent import futures
from typing import Any, Optional

from oslo_log import log as logging

from resizedriver import chooser
from resizedriver import domain_xml
from resizedriver import exception
from resizedriver import stepname
from resizedriver import summary
from resizedriver import threadcontext
from resizedriver import fileutil
from resizedriver import hostfiles
from resizedriver import inventory
from resizedriver import qemuimg
from resizedriver import qemuprocess
from resizedriver import remote
from resizedriver import transport
from resizedriver.env import HostEnv
from resizedriver.operations import (backing, live, plans, precopy, rbd,
                                     sourcetops)
from resizedriver.guest import Guest
from resizedriver.layout import DISK_INFO, RECORD_NAME, InstanceLayout
from resizedriver.model import (RBD, Destination, DiskFile, DiskRole,
                                Flavor, Topology)
from resizedriver.plan import Plan, Step
from resizedriver.record import ResizeRecord
from resizedriver.transport import Transport

LOG = logging.getLogger(__name__)
#: a fact (``MigrateDiskAndPowerOff.facts``): our mkdir of the destination
#: dir failed, something else made it
DEST_DIR_NOT_OURS = 'dest_dir_not_ours'


class MigrateDiskAndPowerOff(backing.BackingFiles):
    #: the plans this implementation can run (see ``chooser.choose``)
    offered_plans: tuple[str, ...] = chooser.ENGINE_PLANS
    #: another host's half runs there through ``[resizedriver]
    #: remote_command`` (the operator CLI), and its finish runs qemu-img
    #: there; an integration whose own service runs it there (Nova's
    #: compute) says False
    dest_half_by_remote_command = True
    #: whether the instance's own Ceph RBD images are its disks to grow
    #: live (chooser rule 1b): an integration with Nova's own resize for
    #: the rest says True; the operator command refuses RBD disks
    owns_rbd = False
    #: whether the plans make the new swap (raw, ``mkswap``) or the
    #: integration's finish does (``FinishMigration.makes_swap``): the
    #: overlay plan stages one only when they do
    makes_swap = True

    def __init__(self, env: HostEnv, uuid: str, new_flavor: Flavor,
                 dest: Destination, dest_transport: Transport,
                 live_mode: Optional[str] = None) -> None:
        self.env = env
        #: chooser.LIVE_MODES; default: ``[resizedriver] live_resize``
        self.live_mode = live_mode or env.conf.resizedriver.live_resize
        #: how a live resize will be reverted (``live.revert_mode``)
        self.live_revert = ''
        self.inst = InstanceLayout(env.instances_path, uuid)
        self.new_flavor = new_flavor
        self.dest = dest
        self.dest_inst = InstanceLayout(dest.instances_path, uuid)
        self.transport = dest_transport
        self._guest = env.host.lookup(uuid)
        #: decided once, in validation; the record keeps them
        self.topology = Topology.of(dest.same_hypervisor, False)
        self.choice = chooser.Choice(chooser.COPY, 'not validated yet')
        self.disks: list[DiskFile] = []
        #: the definition before the resize (read in validation)
        self.source_xml = ''
        self.backing_to_copy: list[str] = []
        #: source backing file -> its name in the destination's ``_base``
        #: where that is not its own (``backing.ephemeral_base_name``)
        self.renamed_bases: dict[str, str] = {}
        self._record: Optional[ResizeRecord] = None
        self.was_running = False
        #: what a step learns that an undo needs, kept in the journal's
        #: context (this very dict: a failing plan saves its journal
        #: before it undoes anything), so that recovery knows it too
        self.facts: dict[str, Any] = {}
        #: what a pre-copy would run on the destination but cannot
        self.dest_lacks_for_precopy: list[str] = []
        #: the operator's summary, begun now; the record carries it on
        self.summary = summary.Summary(started_at=summary.now())
        self._counting = threading.Lock()   # copies run side by side

    @property
    def guest(self) -> Guest:
        """The source domain.  Validation asks first: none is a refusal
        before anything is touched."""
        if self._guest is None:
            raise exception.ResizeRefused(
                f'no libvirt domain with UUID {self.inst.uuid}')
        return self._guest

    @property
    def record(self) -> ResizeRecord:
        """The resize record, made by the write-record step."""
        if self._record is None:
            raise exception.ResizeDriverError(
                f'no resize record of {self.inst.uuid} written yet')
        return self._record

    # -- planning ---------------------------------------------------------

    def plan(self) -> Plan:
        """Validate (refusing with no side effect), then the steps of the
        plan the chooser picked."""
        self.validate()
        return self.steps()

    def journal_context(self) -> dict[str, Any]:
        """What recovery needs to rebuild the undos."""
        return {'uuid': self.inst.uuid, 'dest': self.dest.to_dict(),
                'new_flavor': self.new_flavor.to_dict(),
                'topology': self.topology.value,
                'plan': self.choice.plan,
                'was_running': self.was_running,
                'backing_to_copy': self.backing_to_copy,
                'renamed_bases': self.renamed_bases,
                'source_xml': self.source_xml,
                'facts': self.facts}

    @classmethod
    def from_journal(cls, env: HostEnv,
                     context: dict[str, Any]) -> 'MigrateDiskAndPowerOff':
        dest = Destination.from_dict(context['dest'])
        op = cls(env, context['uuid'],
                 Flavor.from_dict(context['new_flavor']), dest,
                 transport.for_host(dest.host, env.conf))
        # journals written before the topology was kept say 'shared'
        op.topology = Topology(context['topology']) if 'topology' in \
            context else Topology.of(dest.same_hypervisor,
                                     bool(context['shared']))
        # Under Nova, Nova's own start-up starts the guest (after plugging
        # its VIFs and rebuilding its XML in finish_revert_migration).
        op.was_running = (bool(context['was_running']) and
                          bool(context.get('power_on_in_recovery', True)))
        op.backing_to_copy = [str(p) for p in context['backing_to_copy']]
        op.renamed_bases = {str(k): str(v) for k, v in
                            context.get('renamed_bases', {}).items()}
        # what an undo puts back (journals before it was kept: none needed)
        op.source_xml = str(context.get('source_xml', ''))
        op.facts = dict(context.get('facts', {}))
        plan = chooser.check_known(str(context.get('plan', chooser.COPY)))
        op.choice = chooser.Choice(plan, 'from the journal')
        return op

    def recovery_plan(self) -> Plan:
        return self.steps()

    def steps(self) -> Plan:
        return Plan('migrate_disk_and_power_off', self.inst.uuid,
                    plans.builders(self.choice.plan).migrate(self))

    def copy_steps(self) -> list[Step]:
        """The ``copy`` plan (the table at the top of this module)."""
        steps = []
        if self.backing_to_copy:
            steps.append(Step(stepname.COPY_BACKING, self.copy_backing,
                              self.remove_copied_backing))
        if not self.topology.shared_path:
            # made while the guest runs: a round trip less with it off,
            # and a directory found there is refused before power off
            steps.append(Step(stepname.CREATE_DEST_DIR, self.create_dest_dir,
                              self.remove_dest_dir))
        return steps + [
            Step(stepname.WRITE_RECORD, self.write_record,
                 self.remove_record),
            Step(stepname.POWER_OFF, self.power_off_step,
                 self.power_on_again),
        ] + self.move_steps() + [
            Step(stepname.COPY_DISKS, self.copy_disks)]

    def move_steps(self) -> list[Step]:
        """The source to ``<uuid>_resize`` and, on a shared path, an empty
        instance directory of the same name again (another path's was
        made while the guest ran)."""
        move = Step(stepname.MOVE_TO_RESIZE, self.move_to_resize,
                    self.move_back)
        if self.topology.shared_path:
            return [move, Step(stepname.CREATE_INSTANCE_DIR,
                               self.create_dest_dir, self.remove_dest_dir)]
        return [move]

    def validate(self) -> None:
        path = self.dest.instances_path
        if not os.path.isabs(path) or os.path.normpath(path) != path:
            raise exception.ResizeRefused(
                f'destination instances path {path!r} must be an absolute, '
                f'normalised path')
        if not os.path.isdir(self.inst.dir):
            raise exception.ResizeRefused(
                f'instance directory {self.inst.dir} does not exist')
        if os.path.exists(self.inst.resize_dir):
            raise exception.ResizePending(
                f'{self.inst.resize_dir} exists: a resize of this instance '
                f'is pending; confirm or revert it first')
        sourcetops.refuse_if_topped(self.inst)
        self.was_running = self.guest.is_running()
        self.source_xml = self.guest.xml()
        own_rbd = inventory.rbd_disks(self.source_xml, self.inst.uuid,
                                  self.guest.block_capacity) \
            if self.owns_rbd and self.was_running else []
        self.refuse_disks_elsewhere([d.target_dev or '' for d in own_rbd])
        self.disks = inventory.discover(self.source_xml, self.inst,
                                        self.env.qemu_img()) + own_rbd
        if not any(d.role is DiskRole.ROOT for d in self.disks):
            LOG.info('No root disk in the instance directory (booted from '
                     'volume)', instance_uuid=self.inst.uuid)
        self.old_flavor = inventory.current_flavor(self.source_xml,
                                                   self.disks)
        self.check_no_shrink()
        for disk in inventory.larger_than_asked(self.disks, self.new_flavor):
            LOG.info('%s is %d bytes, more than the new flavor\'s %d: it '
                     'keeps its size (a disk is never shrunk)', disk.name,
                     disk.virtual_size,
                     self.new_flavor.size_for(disk.role),
                     instance_uuid=self.inst.uuid)
        inventory.check_new_sizes(self.new_flavor,
                                  self.env.qemu_img().max_virtual_size)
        self.check_dest_programs()      # and another host is reachable
        self.check_host_files()
        self.topology = Topology.of(self.dest.same_hypervisor,
                                    self._path_is_shared())
        self.backing_to_copy = self._backing_to_copy()
        free = self._dest_free_bytes()
        self.choice = chooser.choose(
            self.topology, self.disks,
            use_cow_images=self.env.conf.use_cow_images,
            offered=self.offered_plans, live=self.live_mode,
            live_blockers=self.live_blockers(), running=self.was_running,
            pre_copy=self.env.conf.resizedriver.pre_copy,
            precopy_blockers=self._precopy_blockers(free),
            rbd_blockers=self._rbd_blockers())
        if self.choice.plan == chooser.UPSTREAM:     # the caller logs it
            raise exception.Upstream(self.choice.reason)
        if self.choice.plan == chooser.RBD_COLD:
            why = rbd.refusal(rbd.images(self.env), self.disks)
            if why:
                raise exception.ResizeRefused(why)
        LOG.info('Plan %s: %s', self.choice.plan, self.choice.reason,
                 instance_uuid=self.inst.uuid)
        if self.choice.plan == chooser.LIVE:
            self.live_revert = live.revert_mode(
                self.old_flavor, self.new_flavor, live.unplug_supported(
                    self.env.conf, self.env.host.hypervisor_version()))
            LOG.info('A revert of this resize will be %s', {
                live.REVERT_LIVE: 'live (the guest keeps running)',
                live.REVERT_REBOOT: 'one reboot into the old flavor (the '
                                    'added vCPUs cannot be unplugged '
                                    'live here)'}[self.live_revert],
                instance_uuid=self.inst.uuid)
        if not self.topology.shared_path and \
                self.transport.exists(self.dest_inst.dir):
            # Ours to delete on rollback only if we made it.
            raise exception.ResizeRefused(
                f'{self.dest_inst.dir} already exists on the destination; '
                f'move it away if it is a leftover')
        self._check_space(free)

    def refuse_disks_elsewhere(self, own_rbd: list[str]) -> None:
        """resizedriver resizes disks that are files in the instance
        directory, and (``owns_rbd``) the instance's own RBD images,
        target devices ``own_rbd``; a domain with any other (LVM, a block
        or network device, a file elsewhere) is refused before anything
        is touched.  Under Nova such an instance never gets here: it
        takes Nova's own path (``chooser.why_upstream``)."""
        elsewhere = {dev: what for dev, what in domain_xml.disks_elsewhere(
            self.source_xml, self.inst.dir).items() if dev not in own_rbd}
        if elsewhere:
            raise exception.ResizeRefused(
                '; '.join(f'{dev} is {what}' for dev, what in
                          sorted(elsewhere.items())) +
                ': resizedriver resizes only disks that are files in the '
                'instance directory')

    def check_no_shrink(self) -> None:
        """Refuse a resize that would take a disk down: the operator
        command's rule (``inventory.check_no_shrink``); an integration
        with a flavor on record decides from it instead, as Nova does."""
        inventory.check_no_shrink(self.disks, self.new_flavor)

    def _rbd_blockers(self) -> list[str]:
        """What else keeps an RBD resize from the ``rbd`` plan: it needs
        the cluster, and it makes or drops no disk (``rbd.unproven``)."""
        if not any(d.format == RBD for d in self.disks):
            return []
        why = []
        if self.env.rbd is None:
            why.append('no access to the Ceph cluster here')
        return why + rbd.unproven(self.disks, self.new_flavor)

    def live_blockers(self) -> list[str]:
        """Why this resize cannot be live (``live.blockers``, then the
        integration's own); only asked where it could be (this host, live
        not ``never``)."""
        if self.topology is not Topology.SAME_HOST or \
                self.live_mode == 'never':
            return []
        return live.blockers(
            self.was_running,
            self.guest.live_xml() if self.was_running else '',
            self.old_flavor, self.new_flavor, self.disks,
            self.env.conf.use_cow_images) + self.integration_live_blockers()

    def integration_live_blockers(self) -> list[str]:
        """What the integration (Nova) makes unsafe to hot-plug."""
        return []

    def check_dest_programs(self) -> None:
        """In one round trip: refuse another host that cannot run what
        every plan runs there (the copies' receiver; the operator CLI's
        ``remote_command``, whose finish runs qemu-img), and note what a
        pre-copy, which runs qemu-img there itself, would lack.  This
        host runs them as we do."""
        if self.transport.host is None:
            return
        every = list(self.transport.copy_programs)
        if self.dest_half_by_remote_command:
            every += remote.command(self.env.conf)[:1] + [*qemuimg.PROGRAMS]
        precopy_only = [p for p in qemuimg.PROGRAMS if p not in every]
        missing = self.transport.missing(*every, *precopy_only)
        lacking = [p for p in every if p in missing]
        if lacking:
            raise exception.ResizeRefused(
                f'the destination {self.transport.host} cannot run what a '
                f'resize to it runs there: {", ".join(lacking)} (not found '
                f'on the PATH of an ssh session there)')
        self.dest_lacks_for_precopy = [p for p in precopy_only
                                       if p in missing]

    def check_host_files(self) -> None:
        """Refuse host files outside the instance directory that the new
        definition cannot keep, or that another hypervisor lacks (see
        :mod:`resizedriver.hostfiles`): before power off, not in finish."""
        files = hostfiles.kept(self.source_xml, self.inst.dir)
        if not self.topology.same_hypervisor:
            hostfiles.check_on(self.transport, files)

    def _path_is_shared(self) -> bool:
        """Whether the dest sees our instances path as its own."""
        if self.dest.instances_path != self.env.instances_path:
            return False
        if self.transport.host is None:
            return True
        with tempfile.NamedTemporaryFile(dir=self.env.instances_path,
                                         prefix='.shared-check-') as marker:
            return self.transport.exists(marker.name)

    def _dest_free_bytes(self) -> int:
        try:
            return self.transport.free_bytes(self.dest.instances_path)
        except exception.CommandFailed as e:
            raise exception.ResizeRefused(
                f'destination instances path {self.dest.instances_path} '
                f'is not usable: {e}') from e

    def _bytes_needed(self) -> int:
        """Every disk copied (not swap: made anew) and the backing files
        the destination lacks."""
        return sum(d.actual_size for d in self.disks
                   if d.role is not DiskRole.SWAP) + \
            sum(os.path.getsize(b) for b in self.backing_to_copy)

    def _precopy_blockers(self, free: int) -> list[str]:
        blockers = []
        if self.dest_lacks_for_precopy:
            blockers.append(
                f'{self.transport.host} has no '
                f'{", ".join(self.dest_lacks_for_precopy)} on the PATH of '
                f'an ssh session there, which a pre-copy runs')
        needed = self._bytes_needed() + precopy.fold_room(self.disks)
        if free < needed:
            blockers.append(
                f'the destination has {free} bytes free, a pre-copy needs '
                f'{needed} (its fold holds the data of a disk twice for a '
                f'while)')
        return blockers

    def _check_space(self, free: int) -> None:
        needed = self._bytes_needed()
        if free < needed:
            raise exception.InsufficientSpace(
                f'destination {self.dest.instances_path} has {free} bytes '
                f'free, the disks need {needed}')

    # -- steps ------------------------------------------------------------

    def copy(self, src: str, dst: str,
             prepare: Optional[transport.Prepare] = None) -> None:
        """Copy verified and durable (see ``Transport.copy_file``, and its
        ``prepare``), under this instance's partial names."""
        progress = self.env.progress
        name = os.path.basename(dst)
        self.transport.copy_file(
            src, dst,
            (lambda done, total: progress(name, done, total))
            if progress else None, owner=self.inst.uuid, prepare=prepare)
        with self._counting:
            self.summary.add_copied(src)

    def copy_all(self, pairs: list[tuple[str, str]],
                 prepare: Optional[dict[str, transport.Prepare]] = None
                 ) -> None:
        """:meth:`copy` each (source, destination), ``[resizedriver]
        parallel_copies`` at a time: several disks cross the wire
        together; ``prepare`` by destination.  After a failure no other
        copy begins; those under way run to their end (a failed one
        removes its partial file) before the failure is raised."""
        prepare = prepare or {}
        workers = min(len(pairs), self.env.conf.resizedriver.parallel_copies)
        if workers <= 1:
            for src, dst in pairs:
                self.copy(src, dst, prepare.get(dst))
            return
        failed = threading.Event()

        def one(src: str, dst: str) -> None:
            if failed.is_set():
                return
            try:
                self.copy(src, dst, prepare.get(dst))
            except BaseException:
                failed.set()
                raise

        pool = futures.ThreadPoolExecutor(workers)
        try:
            one_here = threadcontext.carried(one)   # the request's id
            jobs = [pool.submit(one_here, src, dst) for src, dst in pairs]
            futures.wait(jobs)
        except BaseException:       # Ctrl-C: nothing new begins, and the
            failed.set()            # undo waits for the copies under way
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        for job in jobs:
            job.result()

    def write_record(self, path: Optional[str] = None) -> None:
        """Write the record to ``path`` (default: in the instance dir,
        which the move to ``_resize`` takes along)."""
        self._record = ResizeRecord(
            uuid=self.inst.uuid, name=self.guest.name,
            source_host=self.env.hostname,
            source_instances_path=self.env.instances_path,
            destination=self.dest, topology=self.topology,
            plan=self.choice.plan,
            old_flavor=self.old_flavor, new_flavor=self.new_flavor,
            source_xml=self.source_xml, disks=self.disks,
            was_running=self.was_running, live_revert=self.live_revert,
            summary=self.summary)
        self.summary.reason = self.choice.reason
        self.record.write(path or self.inst.path(RECORD_NAME))

    def remove_record(self) -> None:
        fileutil.remove_durably(self.inst.path(RECORD_NAME))

    def power_off_step(self) -> None:
        """Power off (ours or the integration's :meth:`power_off`) and
        wait for the QEMU process to be gone (``qemuprocess`` says
        why)."""
        qemuprocess.stop_and_wait(self.guest.name, self.inst.uuid,
                                  self.power_off)
        if self.was_running:
            self.summary.powered_off_at = summary.now()

    def power_off(self) -> None:
        conf = self.env.conf.resizedriver
        self.guest.power_off(conf.shutdown_timeout,
                             conf.shutdown_retry_interval)

    def power_on_again(self) -> None:
        if self.was_running:
            if not self.guest.is_running():
                sourcetops.refuse_to_start_beside_tops(self.guest.xml(),
                                                       self.inst)
            self.guest.ensure_running(
                self.env.conf.resizedriver.start_timeout)

    def create_dest_dir(self) -> None:
        # mkdir, not mkdir -p: fails rather than adopt a dir we did not make
        try:
            self.transport.execute('mkdir', self.dest_inst.dir)
        except exception.ResizeDriverError:
            # something else made it: whatever is there, keep it
            self.facts[DEST_DIR_NOT_OURS] = True
            raise

    def remove_dest_dir(self) -> None:
        if self.facts.get(DEST_DIR_NOT_OURS):
            return
        if self.topology.shared_path and \
                not os.path.isdir(self.inst.resize_dir):
            return      # <uuid> is still the source itself: not ours
        self.transport.remove_tree(self.dest_inst.dir)

    def move_to_resize(self) -> None:
        # durable: the record says the kept source is in <uuid>_resize
        fileutil.rename_durably(self.inst.dir, self.inst.resize_dir)

    def move_back(self) -> None:
        if os.path.isdir(self.inst.resize_dir) and \
                not os.path.exists(self.inst.dir):
            fileutil.rename_durably(self.inst.resize_dir, self.inst.dir)

    def copy_disks(self) -> None:
        """Copy each disk (verified, fsynced, renamed, directory fsynced
        by ``copy_file``), then make the new instance directory's own
        entry durable, and only then put ``copies_verified`` on record:
        confirm deletes the source on the strength of it.  The check is
        done here, not deferred, because the guest boots from the copy
        and changes it: only before that start can a read-back prove
        the copy."""
        names = [d.name for d in self.disks
                 if d.role is not DiskRole.SWAP and d.format != RBD]
        if os.path.exists(self.inst.in_resize_dir(DISK_INFO)):
            names.append(DISK_INFO)
        self.copy_all([(self.inst.in_resize_dir(name),
                        self.dest_inst.path(name)) for name in names])
        self.transport.sync_dir(self.dest.instances_path)
        self.record.copies_verified = True
        self.record.write(self.inst.in_resize_dir(RECORD_NAME))
