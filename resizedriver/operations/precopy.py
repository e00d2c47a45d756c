"""The ``precopy`` plan: a move to another host whose downtime does not
grow with the disks.

While the guest still runs on the source, an external disk-only snapshot
(libvirt ``DISK_ONLY | NO_METADATA | ATOMIC``, the mechanism of oVirt
VDSM's live storage migration) freezes each root/ephemeral disk: the
guest goes on writing to a new top ``<name>.top`` above it, and the
frozen image -- the bulk -- is copied to the destination as
``<name>.precopy`` with no hurry.  Only then is the guest shut down, and
what it wrote since (the top, as large as the writes during the pre-copy,
whatever the disk's size) is copied as the destination's ``<name>``, its
header pointed at ``<name>.precopy``.  The destination boots on that
two-layer chain and, once the guest runs, folds it back to Nova's
``<uuid>/disk -> _base/...`` layout with a live block pull
(``resizedriver.blockjob``), deleting ``<name>.precopy`` after.  The
destination's ``<name>`` keeps Nova's name, so Nova's XML for it is right
as it is.

The source's chain (``<name>.top -> <name> -> _base``) stays intact until
confirm: a revert folds the top into ``<name>`` offline (``qemu-img
commit``: exactly the bytes the guest had at its clean shutdown) before
the source is defined again.

Why not the alternatives: ``blockCopy``/drive-mirror to an NBD export on
the destination needs QEMU on the destination serving a disk before any
guest is defined there, and a network block protocol between the hosts
(NBD's kernel module is not available on these hosts; QEMU's own server
would be, but it is one more daemon per disk with its own failure modes
mid-resize); persistent dirty bitmaps need a second copy pass of our own
over the bitmap.  A snapshot plus two plain copies reuse the verified,
sparse, hashed-while-streaming copy of the ``copy`` plan.

Rounds: while the guest wrote more than ``pre_copy_final_mb`` during the
last copy (and less than that copy moved, and the destination has room),
round ``n`` snapshots again (the guest goes on on ``<name>.top.<n>``),
copies the frozen top as ``<name>.precopy.<n>`` and commits it into the
destination's layer offline, up to ``pre_copy_rounds``.  The source's
tops stack up; an undo or revert commits the whole stack into the disk.

migrate_disk_and_power_off (steps with an undo in brackets):
  copy backing files     [remove partial]   guest running
  create dest dir        [remove]
  snapshot disks for pre-copy  [fold tops back: live active commit +
                                pivot, or offline commit if the guest is
                                off; then the saved definition]
  pre-copy disks                            the frozen images as
                                            <name>.precopy, kernel,
                                            ramdisk, CD-ROM config drive,
                                            disk.info: all while it runs;
                                            then rounds: snapshot again,
                                            copy the frozen top, commit
                                            it into <name>.precopy
  write resize record    [remove]
  power off              [start]
  move instance dir to _resize [move back]
  copy what changed                         each top as the dest's
                                            <name>, backed by
                                            <name>.precopy (header only);
                                            a vfat config drive

finish_migration:
  check pre-copied disks                    layer as the record says,
                                            top backed by exactly it
  rebase overlays                           only when _base moved (another
                                            instances path): the layers
  (extend, swap, disk.info, VIFs, define, start: as the copy plan)

after_finish_migration (only ever completed, never undone: the guest
runs on a valid chain whatever happens here; a failure is logged and
left to recovery, a crash is completed by it):
  fold pre-copied layers                    live pull (offline rebase if
                                            not started), then the layer
                                            goes

confirm_migration: the copy plan's (the tops go with ``_resize``).
finish_revert_migration: the copy plan's, with ``fold snapshot tops
back`` after ``move _resize back``.

What is left between the guest's power-off and its start on the
destination, and why (medians in doc/source/performance.rst):
  libvirt's stop, power off returning, move to _resize: as the overlay
                        plan's (``overlay``'s docstring)
  copy what changed     the last tops: what the guest wrote since the last
                        round, so it must wait for the guest to stop; over
                        the migrate's one ssh connection
                        (``Transport.session``), a round trip per copy
                        and one per rename, which also fsyncs and first
                        points the top's header at its layer
  check pre-copied      on the destination: the files came from another
                        host, and qemu-img reads them (untrusted input)
  define, start         as every cold plan (under Nova: its image step
                        and XML, as in its own resize)
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Callable, Optional

from lxml import etree
from oslo_log import log as logging

from resizedriver import blockjob
from resizedriver import domain_xml
from resizedriver import exception
from resizedriver import fileutil
from resizedriver import inventory
from resizedriver import stepname
from resizedriver import transport
from resizedriver.layout import DISK_INFO, RECORD_NAME, InstanceLayout
from resizedriver.model import GROWABLE, DiskFile, DiskRole, MiB
from resizedriver.operations.sourcetops import (dev_reading, fold_tops_back,
                                                 names, top_path, tops_of)
from resizedriver.plan import Step

if TYPE_CHECKING:
    from resizedriver.operations.protocols import FinishOp, MigrateOp
    from resizedriver.env import HostEnv
    from resizedriver.qemuimg import QemuImg
    from resizedriver.record import ResizeRecord

LOG = logging.getLogger(__name__)
#: the destination's copy of the frozen disk, below its copy of the top;
#: ``<name>.precopy.<n>`` is round ``n``'s copy until it is folded in
LAYER = '.precopy'


def _growable(disks: list[DiskFile]) -> list[DiskFile]:
    return [d for d in disks if d.role in GROWABLE]


def fold_room(disks: list[DiskFile]) -> int:
    """Bytes the destination needs beyond the copies: while a layer is
    pulled into its top both hold its data (the layer goes after)."""
    return sum(d.actual_size for d in _growable(disks))


# -- migrate ----------------------------------------------------------------

def migrate_steps(op: MigrateOp) -> list[Step]:
    steps = []
    if op.backing_to_copy:
        steps.append(Step(stepname.COPY_BACKING, op.copy_backing,
                          op.remove_copied_backing))
    return steps + [
        Step(stepname.CREATE_DEST_DIR, op.create_dest_dir,
             op.remove_dest_dir),
        Step(stepname.SNAPSHOT_FOR_PRECOPY, lambda: snapshot(op),
             lambda: fold_tops_back(op.env, op.inst, lambda: op.env.host
                                    .define(op.source_xml))),
        Step(stepname.PRECOPY_DISKS, lambda: precopy(op)),
        Step(stepname.WRITE_RECORD, op.write_record, op.remove_record),
        Step(stepname.POWER_OFF, op.power_off_step, op.power_on_again),
        Step(stepname.MOVE_TO_RESIZE, op.move_to_resize, op.move_back),
        Step(stepname.COPY_TOPS, lambda: copy_tops(op)),
    ]


def snapshot_xml(live_xml: str, inst: InstanceLayout,
                 disks: list[DiskFile], round_: int = 1) -> str:
    """Every root/ephemeral disk gets an external top (round ``round_``'s)
    in its directory; every other disk of the domain is left out
    explicitly (libvirt's default for a disk-only snapshot is to snapshot
    them all)."""
    tops = {d.target_dev: top_path(inst, d.name, round_)
            for d in _growable(disks)}
    root = etree.Element('domainsnapshot')
    etree.SubElement(root, 'memory', snapshot='no')
    listed = etree.SubElement(root, 'disks')
    for disk in domain_xml.parse(live_xml).iterfind('./devices/disk'):
        target = disk.find('target')
        dev = target.get('dev') if target is not None else None
        if dev is None:
            continue
        entry = etree.SubElement(listed, 'disk', name=dev)
        if dev in tops:
            entry.set('snapshot', 'external')
            etree.SubElement(entry, 'driver', type='qcow2')
            etree.SubElement(entry, 'source', file=tops[dev])
        else:
            entry.set('snapshot', 'no')
    return domain_xml.to_string(root)


def snapshot(op: MigrateOp, round_: int = 1) -> None:
    """Freeze what each disk holds (round 1) or what the guest wrote
    during the round before (its top); the guest goes on on new tops.

    Each disk must be as the rounds before left it: its tops exactly
    theirs and the guest writing to the last (round 1: to the disk, no
    top; validation refused leftovers), so that the top a round freezes
    and copies, and the one the power-off copies last, are the guest's.
    """
    live = op.guest.live_xml()
    tops = tops_of(op.inst)
    for disk in _growable(op.disks):
        expected = [top_path(op.inst, disk.name, n) for n in range(1, round_)]
        wanted = expected[-1] if expected else op.inst.path(disk.name)
        found = tops.get(disk.name, [])
        reads = next((d.path for d in domain_xml.file_disks(live)
                      if d.target_dev == disk.target_dev), None)
        if found != expected or reads != wanted:
            raise exception.ResizeDriverError(
                f'pre-copy round {round_} of {disk.name}: the guest writes '
                f'to {reads} with {names(found)} in {op.inst.dir}; '
                f'expected {os.path.basename(wanted)} with '
                f'{names(expected)}: refusing to snapshot')
    op.guest.snapshot_disks(snapshot_xml(live, op.inst, op.disks, round_))
    LOG.info('Pre-copy round %d: disks frozen, the guest writes to new '
             'tops', round_, instance_uuid=op.inst.uuid)


def precopy(op: MigrateOp) -> None:
    """Everything but the last tops, while the guest runs: the frozen
    disks as ``<name>.precopy``, the files that do not change as
    themselves; then as many more rounds as pay (:func:`_next_round`),
    each freezing what the guest wrote during the one before and folding
    it into the copied layers.  Ends with the room for the last tops
    checked: the guest is stopped next."""
    late = inventory.written_config_drives(op.disks, op.source_xml)
    pairs = [(op.inst.path(d.name), op.dest_inst.path(
        d.name + LAYER if d.role in GROWABLE else d.name))
        for d in op.disks if d.role is not DiskRole.SWAP and d not in late]
    if os.path.exists(op.inst.path(DISK_INFO)):
        pairs.append((op.inst.path(DISK_INFO), op.dest_inst.path(DISK_INFO)))
    op.copy_all(pairs)
    # the copies' directory, and its own entry (``create dest dir``):
    # nothing the guest's downtime does changes the latter
    op.transport.sync_dir(op.dest_inst.dir, op.dest.instances_path)
    copied, grown, round_ = fold_room(op.disks), 0, 1
    while (why_not := _next_round(op, round_, copied, grown)) is None:
        round_ += 1
        copied = _copy_round(op, round_)
        grown += copied
    LOG.info('Pre-copy done after %d round(s): %s', round_, why_not,
             instance_uuid=op.inst.uuid)
    op.summary.precopy_rounds = round_
    _check_room_for_tops(op, grown)


def _active_tops(op: MigrateOp,
                 directory: Optional[str] = None) -> dict[str, str]:
    """Disk name -> the top the guest writes to now."""
    return {name: stack[-1]
            for name, stack in tops_of(op.inst, directory).items()}


def _left(op: MigrateOp) -> int:
    """Bytes the guest's writes since the last snapshot take."""
    return sum(os.path.getsize(t) for t in _active_tops(op).values())


def _next_round(op: MigrateOp, done: int, copied: int,
                grown: int) -> Optional[str]:
    """Why no further round (``done`` were, the last moving ``copied``
    bytes, the later ones growing the layers by ``grown``), or None for
    another: it must be allowed, still worth it
    (more than ``pre_copy_final_mb`` left), converging (less left than
    the last round moved: a guest that writes as fast as the wire
    carries only makes rounds) and fit the destination (the round's copy
    and the layers growing by as much)."""
    conf = op.env.conf.resizedriver
    left = _left(op)
    if done >= conf.pre_copy_rounds:
        return f'{left} bytes left, pre_copy_rounds ({done}) reached'
    if left <= conf.pre_copy_final_mb * MiB:
        return f'{left} bytes left, at most pre_copy_final_mb'
    if left >= copied:
        return (f'{left} bytes written during a round that moved {copied}: '
                f'another round would not move less')
    if op.transport.free_bytes(op.dest.instances_path) < \
            _room_for_tops(op, left, grown) + 2 * left:
        return f'{left} bytes left, no room for another round'
    return None


def _copy_round(op: MigrateOp, round_: int) -> int:
    """Round ``round_``: freeze the tops, copy each as
    ``<name>.precopy.<n>`` and commit it into the destination's layer
    (offline: no guest runs there yet; over the destination's copy of
    ``_base``, which the commit reads where the layer's clusters are
    larger than what it writes), then drop the copy.  Returns the bytes
    it moved."""
    snapshot(op, round_)
    frozen = {d.name: top_path(op.inst, d.name, round_ - 1)
              for d in _growable(op.disks)}
    sizes = {name: os.path.getsize(top) for name, top in frozen.items()}
    remote_img = op.env.qemu_img(op.transport)
    parts = {name: op.dest_inst.path(f'{name}{LAYER}.{round_}')
             for name in frozen}
    op.copy_all([(frozen[name], parts[name]) for name in frozen])
    bases = {d.name: op.dest_inst.base_path(d.base_name)
             if d.backing_file else None for d in _growable(op.disks)}
    for name, part in parts.items():
        layer = op.dest_inst.path(name + LAYER)
        remote_img.rebase_unsafe(part, layer, 'qcow2')
        remote_img.commit_into_layer(part, layer, bases[name], sizes[name])
        op.transport.remove_file(part)
    op.transport.sync_dir(op.dest_inst.dir)
    return sum(sizes.values())


def _room_for_tops(op: MigrateOp, left: int,
                   grown: int) -> int:
    """What the destination still needs: the last tops' copies (``left``
    bytes), and the fold (the layers' data, with the ``grown`` bytes
    later rounds added to them)."""
    return left + fold_room(op.disks) + grown


def _check_room_for_tops(op: MigrateOp, grown: int) -> None:
    """Validation counted the copies and the fold; the tops have grown
    since, by what the guest wrote during the pre-copy.  Refused now, the
    undo takes the snapshots back and the guest never stops."""
    needed = _room_for_tops(op, _left(op), grown)
    free = op.transport.free_bytes(op.dest.instances_path)
    if free < needed:
        raise exception.InsufficientSpace(
            f'after the pre-copy the destination has {free} bytes free; '
            f'the tops the guest wrote meanwhile and the fold need '
            f'{needed}: not powering off')


def copy_tops(op: MigrateOp) -> None:
    """With the guest off: each disk's last top as the destination's
    ``<name>``, over its pre-copied layer, and a config drive the guest
    may write (vfat; small: 64 MiB at most under Nova), which only now
    holds all it wrote; then ``copies_verified`` on record, as the copy
    plan does.

    Each round trip to the destination here is downtime (each a session
    over the migrate's one ssh connection, ``Transport.session``): the
    copies (streamed, read back there and compared), and their renames
    (one command each, ``Transport.publish``) with their directory's
    fsync and, first, the top's header rewrite (``qemu-img rebase -u``
    on the verified partial file: the top names the source's disk as its
    backing file until then, and is never under the disk's name so).
    The destination directory's own entry was made durable with the
    pre-copy."""
    remote_img = op.env.qemu_img(op.transport)
    tops = _active_tops(op, op.inst.resize_dir)
    names = [d.name for d in _growable(op.disks)]
    if missing := [n for n in names if n not in tops]:
        raise exception.ResizeDriverError(
            f'no pre-copy top of {", ".join(missing)} in '
            f'{op.inst.resize_dir}: cannot copy what the guest wrote')
    late = [d.name for d in inventory.written_config_drives(
        op.disks, op.source_xml)]
    op.copy_all([(tops[name], op.dest_inst.path(name)) for name in names] +
                [(op.inst.in_resize_dir(name), op.dest_inst.path(name))
                 for name in late],
                prepare={op.dest_inst.path(name): functools.partial(
                    _onto_layer, remote_img, op.dest_inst.path(name + LAYER))
                    for name in names})
    op.record.copies_verified = True
    op.record.write(op.inst.in_resize_dir(RECORD_NAME))


def _onto_layer(remote_img: 'QemuImg', layer: str,
                part: str) -> list[str]:
    """The command that points a copied top's header (the verified
    partial file ``part``) at its pre-copied ``layer``."""
    return remote_img.rebase_unsafe_argv(part, layer, 'qcow2')


# -- finish -----------------------------------------------------------------

def finish_steps(op: FinishOp) -> list[Step]:
    steps = [Step(stepname.CHECK_PRECOPIED, lambda: check_precopied(op))]
    if _moved_bases(op):
        steps.append(Step(stepname.REBASE, lambda: rebase_layers(op)))
    return steps + op.steps_after_checks()


def after_finish_steps(op: FinishOp) -> list[Step]:
    return [Step(stepname.FOLD_PRECOPY, lambda: _fold_or_fail(op))]


def _fold_or_fail(op: FinishOp) -> None:
    """:func:`fold_layers`, whose every error is a failure to retry: a
    plan ends a refusal of its first step as if nothing had begun, and
    would drop the journal that has the fold completed later."""
    try:
        fold_layers(op)
    except exception.ResizeRefused as e:
        raise blockjob.FoldFailed(str(e)) from e


def _moved_bases(op: FinishOp) -> list[tuple[str, str]]:
    """(layer, this host's backing file) of each layer whose header names
    the source's ``_base`` at another path."""
    moved = []
    for disk in op.copied:
        if disk.role in GROWABLE and disk.backing_file:
            here = op.dest.base_path(disk.base_name)
            if here != disk.backing_file:
                moved.append((op.dest.path(disk.name + LAYER), here))
    return moved


def rebase_layers(op: FinishOp) -> None:
    """Point each layer at this host's ``_base`` (header only; the check
    compared the file there with the source's)."""
    for layer, backing in _moved_bases(op):
        op.qemu_img.rebase_unsafe(layer, backing, 'raw')


def check_precopied(op: FinishOp) -> None:
    """As ``FinishMigration.check_disks``, each root/ephemeral disk as its
    layer (the record's description) under a top backed by exactly it."""
    op.check_source_definition()
    for disk in op.copied:
        if disk.role in GROWABLE:
            layer = op.dest.path(disk.name + LAYER)
            inventory.check_copy(disk, op.dest, op.qemu_img, path=layer)
            inventory.check_top(disk, op.dest, op.qemu_img, layer)
        else:
            inventory.check_copy(disk, op.dest, op.qemu_img)


def fold_layers(op: FinishOp) -> None:
    """Nova's layout again on this host: each top pulls its layer in
    (live once the guest runs; offline when it does not), then the layer
    goes.  The chain is valid all along, so a failure or a crash anywhere
    leaves a guest that runs and a pull that starts over: this runs after
    the finish, as a plan of its own that is only ever completed
    (``operations.finish.AfterFinish``)."""
    guest = op.env.host.lookup(op.record.uuid)
    progress = op.env.progress
    for copied, final in op.pairs:
        if copied.role not in GROWABLE:
            continue
        layer = op.dest.path(copied.name + LAYER)
        if not os.path.lexists(layer):
            continue
        if guest is not None and guest.is_running():
            dev = dev_reading(guest.live_xml(), final.path)
            if dev is None:
                raise exception.ResizeDriverError(
                    f'the running guest does not read {final.path}: not '
                    f'folding {layer} under it')
            report: Optional[blockjob.PullProgress] = None
            if progress is not None:
                report = functools.partial(_report, progress,
                                           f'{copied.name} (fold)')
            # what the pull moves: the layer's data (at most its size)
            blockjob.pull(guest, dev, final.backing_file,
                          transport.deadlines(op.env.conf).for_size(
                              os.path.getsize(layer)), report)
        else:
            blockjob.fold_offline(final.path, layer, final.backing_file,
                                  op.qemu_img)
        fileutil.remove_durably(layer)


def _report(progress: Callable[[str, int, int], None], name: str,
            done: int, total: int) -> None:
    progress(name, done, total)


# -- revert -----------------------------------------------------------------

def revert_fold_step(env: 'HostEnv', record: 'ResizeRecord') -> Step:
    """``fold snapshot tops back`` for a revert: after the move back, the
    source's disks get what the guest wrote into the tops."""
    return Step(stepname.FOLD_TOPS_BACK, lambda: fold_tops_back(
        env, record.source, None))
