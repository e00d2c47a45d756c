"""The ``overlay`` plan: a same-host resize that copies nothing while the
guest is down.

While the guest still runs, ``<uuid>.staging/`` gets a new qcow2 overlay
per root/ephemeral disk, already of the new size, whose backing file is
that disk's name-to-be in ``<uuid>_resize/`` (``resizedriver.staging``).
With the guest off, two renames make it the instance; the guest boots
the new flavor reading its old disks through the overlays.  At confirm,
when the kept source is no longer needed, the chain is folded back to
Nova's ``<uuid>/disk -> _base/...`` layout by a live block pull
(``resizedriver.blockjob``) while the guest runs: not at finish, where
the pull would compete with the guest's boot for the disk.  Until then
the guest reads through one more layer, and Nova's image cache manager
counts ``<uuid>_resize``'s backing files as in use (it looks at
``_resize`` directories too).  The
old disks are only ever backing files, opened read-only: a revert (the
common one, ``revert.py``) goes back to exactly their bytes.

Why not the alternatives: a qcow2 internal snapshot as the revert point
writes into the very image the guest runs from (a revert is then a
snapshot revert of a live image, and confirm must delete it); reflink
copies need XFS or btrfs (``_base`` filesystems here are ext4) and still
convert nothing; the overlay works on any filesystem and leaves the
source untouched.

migrate_disk_and_power_off (steps with an undo in brackets):
  stage overlays          [remove staging]    guest running: overlays,
                                              new swap, hard links,
                                              disk.info
  write resize record     [remove]
  power off               [start]
  move instance dir to _resize [move back]
  put staged dir in place [take it back]      a rename: all the downtime
                                              work there is (and the copy
                                              of a vfat config drive)

finish_migration:
  check staged overlays                       each backs onto its kept
                                              source, at the new size
  plug VIFs
  define domain           [restore source definition]
  start guest             [destroy]           only when power_on

confirm_migration (forward: completed after a crash, and after a
failure: the call succeeds, the guest runs on, recovery folds later):
  mark _resize as read by the guest   a file in it says so, for anyone
                                      who would take it for disposable
  fold backing chains     live pull (its deadline scales with the bytes
                          to pull, as copies' do), or offline rebase if
                          the guest is off; then nothing may still read
                          _resize
  delete _resize

After a crash, migrate and finish are rolled back by their undos (each
checks what is there), confirm is completed, and a pull interrupted at
any point leaves a valid chain a new pull completes.

What is left between the guest's power-off and its start returning, and
why each step must be there (medians in doc/source/performance.rst, with
libvirt 9.0's source lines):
  libvirt's stop        0.2 s, libvirt's own: on QEMU's monitor EOF it
                        kills the process (virProcessKillPainfullyDelay)
                        and, as the process still exists then (QEMU
                        closes its monitor before it exits), sleeps 200
                        ms before it looks again; then it restores the
                        disks' labels and owners by path.  destroy takes
                        the same loop; a rename or define before it says
                        "off" would race that restore
  power off returning   our look at the state every ``POLL_SECONDS``
                        (Nova's ``power_off`` then finds it off)
  move to _resize,      two renames, each fsynced: the record says where
  put staged in place   the kept source is, and the overlays back onto
                        its new name
  check staged          two header reads per disk, no process: what the
                        guest is defined on must be the overlays staged
  (under Nova: its VIFs and volumes after the power-off, as its own
  migrate; in finish its image step, which makes what is missing (the
  swap) and for the overlays only reads two sizes per disk, and its XML
  for the new flavor, which the manager sets only after migrate)
  define, start         the new flavor needs a new definition and a boot;
                        libvirt's start is 0.3 s here quiet, 0.2 s of it
                        its check of the guest CPU (400 QMP commands)
The overlays, swap (CLI) and disk.info are made before the power-off.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from oslo_log import log as logging

from resizedriver import blockjob
from resizedriver import exception
from resizedriver import fileutil
from resizedriver import inventory
from resizedriver import qemuimg
from resizedriver import staging
from resizedriver import stepname
from resizedriver import transport
from resizedriver.layout import IN_USE_MARKER
from resizedriver.model import GROWABLE, DiskFile
from resizedriver.plan import Step

if TYPE_CHECKING:
    from resizedriver.operations.protocols import (
        ConfirmOp, FinishOp, MigrateOp)
    from resizedriver.record import ResizeRecord

LOG = logging.getLogger(__name__)


def migrate_steps(op: MigrateOp) -> list[Step]:
    def copied_late() -> list[str]:
        return [d.name for d in inventory.written_config_drives(
            op.disks, op.source_xml)]

    def stage() -> None:
        staging.build(op.inst, op.disks, op.new_flavor, op.env.qemu_img(),
                      copied_late(), make_swap=op.makes_swap)

    return [
        Step(stepname.STAGE_OVERLAYS, stage,
             lambda: staging.remove(op.inst)),
        Step(stepname.WRITE_RECORD, op.write_record, op.remove_record),
        Step(stepname.POWER_OFF, op.power_off_step, op.power_on_again),
        Step(stepname.MOVE_TO_RESIZE, op.move_to_resize, op.move_back),
        Step(stepname.PUT_STAGED_IN_PLACE,
             lambda: staging.put_in_place(op.inst, copied_late()),
             lambda: staging.take_back(op.inst)),
    ]


def finish_steps(op: FinishOp) -> list[Step]:
    steps = [Step(stepname.CHECK_STAGED, lambda: check_staged(op)),
             Step(stepname.PLUG_VIFS, op.plug_vifs),
             Step(stepname.DEFINE, op.define, op.undefine)]
    if op.power_on:
        steps.append(Step(stepname.START, op.start, op.stop))
    return steps


def confirm_steps(op: ConfirmOp) -> list[Step]:
    return [Step(stepname.MARK_RESIZE_DIR_IN_USE, lambda: mark_in_use(op)),
            Step(stepname.FOLD_CHAINS, lambda: fold_before_delete(op)),
            Step(stepname.DELETE_RESIZE_DIR, op.delete_resize_dir)]


def mark_in_use(op: ConfirmOp) -> None:
    """Say in ``<uuid>_resize`` that the guest reads from it: a fold
    that fails leaves it there after a confirm that succeeded (Nova
    shows the resize as done), and every operator knows ``_resize`` as
    the disposable copy a revert would have needed."""
    rec = op.record
    fileutil.write_atomic(os.path.join(
        rec.source.resize_dir, IN_USE_MARKER),
        f'Do not delete this directory.  The resize of instance '
        f'{rec.uuid} ({rec.name}) was confirmed, but its guest still '
        f'reads its disks through the files here: each disk in '
        f'{rec.dest.dir} is a qcow2 overlay backed by its namesake in '
        f'{rec.source.resize_dir} until a block pull folds it back.  '
        f'"resizedriver recover {rec.uuid}" (nova-compute runs it at '
        f'start, the next resize of the instance first) folds the disks '
        f'and then deletes this directory.\n')


def _growable(record: 'ResizeRecord') -> list[DiskFile]:
    return [d for d in record.disks if d.role in GROWABLE]


def check_staged(op: FinishOp) -> None:
    """Each overlay is a plain qcow2 (no data file), backed by its kept
    source disk recorded as qcow2 (never probed), at the new size.

    Read from the headers, with no process: this runs with the guest
    off, and each ``qemu-img info`` cost 0.02-0.06 s of it.  The
    overlays are this host's own, made by ``qemu-img create`` while the
    guest ran; what finish must prove is that the files it defines the
    guest on are still those, which their headers say."""
    op.check_source_definition()
    sizes = {f.name: f.virtual_size for f in op.final}
    for disk in _growable(op.record):
        path = op.dest.path(disk.name)
        kept = op.record.source.in_resize_dir(disk.name)
        header = qemuimg.read_header(path)
        info = qemuimg.read_qcow2_chain(path)
        if header.format != 'qcow2' or header.data_file or \
                info.backing_file != kept or \
                info.backing_format != 'qcow2' or \
                info.virtual_size != sizes[disk.name] or \
                not os.path.isfile(kept):
            raise exception.UnsupportedDisk(
                f'{path} is not the overlay this resize staged (backing '
                f'{info.backing_file!r} as {info.backing_format!r}, '
                f'{info.virtual_size} bytes; wanted {kept!r} as qcow2, '
                f'{sizes[disk.name]} bytes)')


def _fold(op: ConfirmOp, disk: DiskFile) -> None:
    guest = op.env.host.lookup(op.record.uuid)
    if guest is None:
        raise exception.NotFound(f'no domain {op.record.uuid} to fold')
    progress = op.env.progress
    assert disk.target_dev is not None     # the chooser made sure
    # what the pull moves: the kept disk's data (at most its file size)
    size = os.path.getsize(op.record.source.in_resize_dir(disk.name))
    blockjob.pull(guest, disk.target_dev, disk.backing_file,
                  transport.deadlines(op.env.conf).for_size(size),
                  (lambda done, total: progress(f'{disk.name} (fold)', done,
                                                total)) if progress else None)


def fold_before_delete(op: ConfirmOp) -> None:
    """Nothing may still read ``<uuid>_resize`` when it goes: pull live, or
    rebase offline when the guest is off."""
    guest = op.env.host.lookup(op.record.uuid)
    qemu_img = op.env.qemu_img()
    for disk in _growable(op.record):
        if guest is not None and guest.is_running():
            _fold(op, disk)
        else:
            _rebase_offline(op, disk, qemu_img)
    if guest is not None:
        still = blockjob.disks_depending_on(
            guest, op.record.source.resize_dir, qemu_img)
        if still:
            raise exception.ResizeDriverError(
                f'{", ".join(still)} still read from '
                f'{op.record.source.resize_dir}: not deleting it')


def _rebase_offline(op: ConfirmOp, disk: DiskFile,
                    qemu_img: qemuimg.QemuImg) -> None:
    """Fold with the guest off (``blockjob.fold_offline``)."""
    path = op.record.dest.path(disk.name)
    LOG.info('Guest is off: folding %s onto %s offline', path,
             disk.backing_file, instance_uuid=op.record.uuid)
    blockjob.fold_offline(path, op.record.source.in_resize_dir(disk.name),
                          disk.backing_file, qemu_img)
