"""finish_migration: the destination half, run on the destination host.

Plan (steps with an undo in brackets):
  check copied disks                every file is there and is what the
                                    source said it was
  rebase overlays                   only when _base moved (other path),
                                    before a conversion reads the chain
  convert disk formats              only when the dest wants another format
  extend disks                      only when the flavor grows them
  create swap                       only when the new flavor has swap
  write disk.info                   when the instance has one
  plug VIFs
  define domain       [restore]     the source definition on a shared
                                    libvirtd, undefine on another host
  start guest         [destroy]     only when power_on

Until define, the steps touch only the destination's copy, which a revert
throws away; the source copy in ``<uuid>_resize`` is never written.  After
a crash, recovery undoes start and define (the guest goes back to not
existing here, or to its source definition on a shared libvirtd); the
resize as a whole is then reverted from the source.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

from oslo_concurrency import processutils
from oslo_log import log as logging

from resizedriver import domain_xml
from resizedriver import headroom
from resizedriver import exception
from resizedriver import fileutil
from resizedriver import stepname
from resizedriver import hostfiles
from resizedriver import inventory
from resizedriver import vif
from resizedriver.env import HostEnv
from resizedriver.operations import plans
from resizedriver.operations.forward import ForwardOperation
from resizedriver.guest import Guest
from resizedriver.model import (GROWABLE, RBD, DiskFile, DiskRole,
                                disk_info, grown_size)
from resizedriver.layout import DISK_INFO
from resizedriver.plan import Plan, Step
from resizedriver.record import ResizeRecord
from resizedriver.sparse import PARTIAL_SUFFIX

LOG = logging.getLogger(__name__)


class FinishMigration:
    #: whether the finish makes the new swap (raw, ``mkswap``), or the
    #: integration does (Nova's image backend, in its own format)
    makes_swap = True

    def __init__(self, env: HostEnv, record: ResizeRecord,
                 power_on: bool) -> None:
        self.env = env
        self.record = record
        self.power_on = power_on
        self.dest = record.dest
        self.qemu_img = env.qemu_img()
        # (an RBD image is not a file here: nothing copies it)
        self.copied = [dataclasses.replace(d, path=self.dest.path(d.name))
                       for d in record.disks
                       if d.role is not DiskRole.SWAP and d.format != RBD]
        #: each copied disk and what it becomes
        self.pairs = [(d, self._final(d)) for d in self.copied]
        #: the disks of the resized guest: swap is made anew, not copied
        self.final = [f for _, f in self.pairs]
        if record.new_flavor.swap_bytes and self.makes_swap:
            self.final.append(DiskFile(
                name='disk.swap', role=DiskRole.SWAP,
                path=self.dest.path('disk.swap'), format='raw',
                virtual_size=record.new_flavor.swap_bytes, actual_size=0))
        self.guest: Optional[Guest] = None      # defined by define

    def _final(self, disk: DiskFile) -> DiskFile:
        """What a copied disk becomes: format, size and backing file."""
        if disk.role not in GROWABLE:
            return disk
        fmt = 'qcow2' if self.env.conf.use_cow_images else 'raw'
        if plans.builders(self.record.plan).keeps_disk_formats:
            fmt = disk.format
        backing = disk.backing_file
        if backing:
            backing = None if fmt != disk.format else \
                self.dest.base_path(disk.base_name)
        return dataclasses.replace(
            disk, format=fmt,
            virtual_size=grown_size(disk, self.record.new_flavor),
            backing_file=backing)

    def journal_context(self) -> dict[str, Any]:
        return {'record': self.record.to_dict(), 'power_on': self.power_on}

    def rbd_size(self, disk: DiskFile) -> int:
        """The size of an RBD image as the cluster says (librbd): the
        integration that owns RBD disks (``MigrateDiskAndPowerOff.
        owns_rbd``) reads it; no other one ever has them."""
        raise exception.ResizeDriverError(
            f'{disk.path}: an RBD image, which this integration does not '
            f'resize')

    @classmethod
    def from_journal(cls, env: HostEnv,
                     context: dict[str, Any]) -> 'FinishMigration':
        return cls(env, ResizeRecord.from_dict(context['record']),
                   bool(context['power_on']))

    def recovery_plan(self) -> Plan:
        return self.plan()

    def plan(self) -> Plan:
        """The steps of the plan the resize record names."""
        return Plan('finish_migration', self.record.uuid,
                    plans.builders(self.record.plan).finish(self))

    def copy_steps(self) -> list[Step]:
        """The ``copy`` plan (the table at the top of this module)."""
        steps = [Step(stepname.CHECK_COPIES, self.check_disks)]
        if any(self._dest_backing(c) not in (None, c.backing_file)
               for c in self.copied):
            steps.append(Step(stepname.REBASE, self.rebase))
        if any(c.format != f.format for c, f in self.pairs):
            steps.append(Step(stepname.CONVERT, self.convert))
        return steps + self.steps_after_checks()

    def steps_after_checks(self) -> list[Step]:
        """From extend to start: what every plan that copies does once
        its copies are checked (and in the formats wanted)."""
        steps: list[Step] = []
        if any(c.virtual_size != f.virtual_size for c, f in self.pairs):
            steps.append(Step(stepname.EXTEND, self.extend))
        if self.record.new_flavor.swap_bytes and self.makes_swap:
            steps.append(Step(stepname.CREATE_SWAP, self.create_swap))
        if os.path.exists(self.dest.path(DISK_INFO)):
            steps.append(Step(stepname.WRITE_DISK_INFO, self.write_disk_info))
        steps += [Step(stepname.PLUG_VIFS, self.plug_vifs),
                  Step(stepname.DEFINE, self.define, self.undefine)]
        if self.power_on:
            steps.append(Step(stepname.START, self.start, self.stop))
        return steps

    # -- steps ------------------------------------------------------------

    def check_disks(self) -> None:
        """Refuse a record or copies that would make this host open files
        that are not the instance's own: the record comes from the other
        host and the copies' contents from the guest."""
        self.check_source_definition()
        for disk in self.copied:
            if not os.path.lexists(disk.path):
                raise exception.ResizeDriverError(
                    f'{disk.path} was not copied to this host')
            inventory.check_copy(disk, self.dest, self.qemu_img)

    def check_source_definition(self) -> None:
        """The source definition becomes this host's: outside the
        instance directory it may keep only the host files ``hostfiles``
        allows.  The source checked them before power off; a definition
        from another host is checked again here, where they are opened."""
        files = hostfiles.kept(self.record.source_xml,
                               self.record.source.dir)
        if not self.record.same_hypervisor:
            hostfiles.check_here(files)

    def _dest_backing(self, disk: DiskFile) -> Optional[str]:
        """Where this host keeps the backing file of a copied overlay."""
        if not disk.backing_file:
            return None
        return self.dest.base_path(disk.base_name)

    def rebase(self) -> None:
        """Point copied overlays at this host's ``_base``, before any
        conversion: the header names the source host's path, which here
        may be missing or another file (``check_disks`` verified ours)."""
        for copied in self.copied:
            backing = self._dest_backing(copied)
            if backing not in (None, copied.backing_file):
                self.qemu_img.rebase_unsafe(copied.path, backing, 'raw')

    def convert(self) -> None:
        for copied, final in self.pairs:
            if copied.format == final.format:
                continue
            part = final.path + PARTIAL_SUFFIX
            self.qemu_img.convert(copied.path, part, copied.format,
                                  final.format)
            os.rename(part, final.path)

    def extend(self) -> None:
        for copied, final in self.pairs:
            if final.virtual_size > copied.virtual_size:
                self.qemu_img.resize(final.path, final.format,
                                     final.virtual_size)

    def create_swap(self) -> None:
        swap = self.final[-1]
        self.qemu_img.create(swap.path, 'raw', swap.virtual_size)
        processutils.execute('mkswap', swap.path)

    def write_disk_info(self) -> None:
        """Nova trusts disk.info over probing: make it name the new files."""
        fileutil.write_atomic(self.dest.path(DISK_INFO),
                              disk_info(self.final))

    def plug_vifs(self) -> None:
        vif.plug(domain_xml.vifs(self.record.source_xml), self.record.uuid)

    def _definition(self) -> str:
        """The source definition for the new flavor and paths, with the
        headroom it had or the configuration wants."""
        new = self.record.new_flavor
        return headroom.resized(
            self.record.source_xml, flavor=new,
            virt_type=self.env.virt_type, old_dir=self.record.source.dir,
            new_dir=self.dest.dir, disks=self.final,
            wanted=headroom.wanted(self.env.conf, new.vcpus,
                                   new.memory_mib))

    def define(self) -> None:
        self.guest = self.env.host.define(self._definition())

    def define_persistent(self) -> None:
        """The live plan's define: the running guest goes on as it is,
        its next boot is the new flavor's."""
        self.env.host.define(self._definition())

    def undefine(self) -> None:
        if self.record.same_hypervisor:
            self.env.host.define(self.record.source_xml)
        else:
            self.env.host.remove(self.record.uuid)

    def start(self) -> None:
        guest = self.guest
        assert guest is not None, 'start is planned after define'
        guest.start()
        guest.wait_running(self.env.conf.resizedriver.start_timeout)

    def stop(self) -> None:
        guest = self.env.host.lookup(self.record.uuid)
        if guest is not None:
            guest.destroy()


class AfterFinish(ForwardOperation):
    """What the destination does once the resized guest runs
    (``Builders.after_finish``: pre-copy folds its layers): a plan of its
    own, run by the engine after a finish that succeeded.  It is a
    forward plan: a failure leaves its journal, a crash is completed by
    recovery, and neither undoes the finish -- the guest runs on a valid
    chain, and rolling the finish back would destroy it."""

    OPERATION = 'after_finish_migration'

    def steps(self) -> list[Step]:
        return plans.builders(self.record.plan).after_finish(
            FinishMigration(self.env, self.record, power_on=False))
