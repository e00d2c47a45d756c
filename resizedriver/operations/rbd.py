"""The ``rbd`` plan: a cold resize of an instance whose disks are Ceph
RBD images, on its host or to another host that shares the cluster.  No
image is copied: each stays where it is, and the guest reboots into the
new flavor reading them.  A config drive is an image too under Nova
(``_create_configdrive`` imports it as ``<uuid>_disk.config`` and
deletes the local file): it has a revert point like the root's and is
never grown; Nova's XML names it, and Nova's ``_create_configdrive``
after the define makes no new one where it exists.  The instance
directory's boot files (kernel, ramdisk: a few MiB) are copied as the
file plans copy them; any other disk (a local ``disk.config`` file,
which Nova 34 under ``images_type = rbd`` does not leave) keeps the
resize Nova's own (chooser rule 1c).

Ephemeral and swap images (``<uuid>_disk.local`` or ``_disk.eph0``,
``<uuid>_disk.swap``).  What Nova 34 does with them (read in its source,
seen here on a real Ceph for 1 -> 2 GiB and 64 -> 128 MiB): its migrate
copies nothing of them (``_get_instance_disk_info`` lists files only)
and refuses an ephemeral disk going down; its finish runs
``_create_image`` with the new flavor, whose image backend, finding each
image there, only grows it in place (``Rbd.create_image``: a librbd
resize to the flavor's ephemeral size, the mapping's for an ``eph<N>``,
or its swap; never a shrink: a smaller swap keeps its size; no mkfs or
mkswap again), and makes one the instance lacks (mkfs or mkswap,
imported); its revert rolls back and its confirm drops only the root's
``nova-resize``: the ephemeral and swap images keep what the resized
guest wrote and their grown size.  A swap the new flavor drops stays in
the pool.  This plan takes the instances whose new flavor keeps the same
disks (:func:`unproven`: a disk made or dropped, or more than one
ephemeral image, stays Nova's): every image gets the revert point, root
and ephemeral images grow to the flavor's size (as the file plans grow
them, ``model.grown_size``: an ``eph<N>`` too), swap to the new swap if
larger, and a revert gives every image back its bytes and size.

migrate_disk_and_power_off (source; steps with an undo in brackets):
  write resize record      [remove]
  power off                [start]       (Nova: unplug VIFs after it)
  take revert point        [remove it]   an RBD snapshot of each image,
                                         ``<image>@resizedriver-resize``,
                                         of the guest shut down: the
                                         bytes a revert returns (the
                                         images are journaled)
  move instance dir to _resize [move back]   and the destination's
  create (destination) instance dir [remove] made: here, or over ssh
  copy disks                             the boot files and disk.info

finish_migration (destination, which reaches the same cluster):
  check copied disks                     the boot files
  check revert point                     each image has it, at the size
                                         the record says
  grow disks               [roll back]   librbd resize of the root,
                                         ephemeral and swap images
                                         (:func:`new_size`), the size
                                         read back from librbd
  write disk.info                        when the instance has one
  plug VIFs                              (Nova: the console log only)
  define domain            [undefine]    Nova's XML for the new flavor
  start guest              [destroy]     only when power_on

confirm_migration (source; completed after a crash):
  remove revert point                    every snapshot this plan made
  undefine source domain                 another host only
  delete _resize

finish_revert_migration (source; completed after a crash):
  (stop resized guest, drop destination copy, move _resize back: as the
  cold plans; under Nova, whose ``destroy`` keeps an RBD instance's
  directory on the destination, the copy is dropped after the move)
  roll back to revert point              refused while a guest runs the
                                         image here; the image gets its
                                         old bytes and old size
  remove revert point
  define (and start) source domain

Why ours and not upstream's (which does the same work: shutdown, a
snapshot, a resize, define, start): Nova takes its ``nova-resize``
snapshot in finish, after power-off, where one left by an earlier
resize makes the finish fail with the guest already off; and it is not
journaled, so a crash between it and the end of the confirm or revert
leaks it.  Ours is taken, checked and removed by journaled steps, and a
leftover is refused before power-off.  It is also faster, measured on
this machine (test guest under TCG, same host, 1 -> 2 vCPUs and 1 -> 2
GiB, a ping every ~1 s, two runs each, 2 cores at load 5-7): the guest
was unreachable 6.9 and 6.6 s with this plan, 8.2 and 8.1 s with Nova's
own path; migrate + finish took 2.5 and 3.4 s, Nova's 3.3 and 2.5 s.
Where the downtime of this plan goes (the steps' log): power off 0.3-0.4
s, revert point 0.3-0.9 s, the boot files' verified copy 0.8-1.0 s, grow
0.05 s, define 0.2-0.3 s, start 0.4-0.5 s; the rest is the guest's own
shutdown and boot.  (Nova's clean shutdown looks once a second, ours
every 0.2 s: ``NovaMigrate.power_off``.)  Defining the new XML while the
guest shuts down would save at most the define (0.2-0.3 s), and needs
Nova's XML for the new flavor before Nova's manager has given the
instance that flavor (``_set_instance_info`` runs between migrate and
finish), and on the source where a move defines it on the destination:
not done.  Copying the kernel and ramdisk before power-off (they do not
change) would save up to 1 s: left for later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from oslo_log import log as logging

from resizedriver import exception
from resizedriver import stepname
from resizedriver import transport
from resizedriver.model import (GROWABLE, RBD, DiskFile, DiskRole,
                                Flavor, grown_size)
from resizedriver.plan import Step

if TYPE_CHECKING:
    from resizedriver.env import HostEnv, RbdImages
    from resizedriver.operations.protocols import (
        ConfirmOp, FinishOp, MigrateOp)
    from resizedriver.record import ResizeRecord

LOG = logging.getLogger(__name__)
#: the revert point's name: ours, never Nova's ``nova-resize``
SNAPSHOT = 'resizedriver-resize'
#: migrate's fact (journaled: its undo after a crash needs them): the
#: images it takes the revert point of
IMAGES = 'rbd_images'


def images(env: 'HostEnv') -> RbdImages:
    if env.rbd is None:
        raise exception.ResizeDriverError(
            'an RBD resize without access to the cluster: only the Nova '
            'adapter runs this plan')
    return env.rbd


def _images(disks: list[DiskFile]) -> list[DiskFile]:
    """The RBD images among ``disks`` (the rest are copied files)."""
    return [d for d in disks if d.format == RBD]


def _paths(disks: list[DiskFile]) -> list[str]:
    return [d.path for d in _images(disks)]


def refusal(rbd: RbdImages, disks: list[DiskFile]) -> Optional[str]:
    """Why this plan cannot begin (None: it can), before power-off: an
    image already has a snapshot of ours (a revert point an earlier
    resize left) -- the one thing its migrate would trip over."""
    for path in _paths(disks):
        if SNAPSHOT in rbd.snapshots(path):
            return (f'{path}@{SNAPSHOT} exists: a revert point of an '
                    f'earlier resize that was neither confirmed nor '
                    f'reverted; "resizedriver recover" or rbd snap rm it '
                    f'if no resize of this instance is pending')
    return None


def unproven(disks: list[DiskFile], new: Flavor) -> list[str]:
    """What of this resize the plan is not proven with (Nova's own
    then, chooser rule 1c): an ephemeral disk or swap the new flavor
    adds (Nova's image backend makes it: mkfs or mkswap) or drops, more
    than one ephemeral image (their sizes are the block device
    mappings')."""
    def names(role: DiskRole) -> list[str]:
        return [d.name for d in _images(disks) if d.role is role]

    def change(has: list[str], asked: int, what: str) -> list[str]:
        if bool(has) == bool(asked):
            return []
        return [f'the new flavor {"drops" if has else "adds"} {what}']
    ephemerals = names(DiskRole.EPHEMERAL)
    why = [f'more than one ephemeral image ({", ".join(ephemerals)})'] \
        if len(ephemerals) > 1 else \
        change(ephemerals, new.ephemeral_bytes, 'an ephemeral disk')
    return why + change(names(DiskRole.SWAP), new.swap_bytes, 'swap')


# -- migrate ----------------------------------------------------------------

def migrate_steps(op: 'MigrateOp') -> list[Step]:
    rbd = images(op.env)
    uuid = op.inst.uuid
    # planned before the journal opens, so the journal keeps them (and
    # recovery, which has no disks, finds them there)
    paths = op.facts.setdefault(IMAGES, _paths(op.disks))

    def take() -> None:
        for path in paths:
            if SNAPSHOT not in rbd.snapshots(path):
                rbd.create_snapshot(path, SNAPSHOT)
            LOG.info('Revert point %s@%s taken', path, SNAPSHOT,
                     instance_uuid=uuid)

    steps = [Step(stepname.WRITE_RECORD, op.write_record, op.remove_record),
             Step(stepname.POWER_OFF, op.power_off_step, op.power_on_again),
             Step(stepname.TAKE_REVERT_POINT, take,
                  lambda: remove_revert_point(rbd, paths, uuid))]
    return steps + op.move_steps() + [
        Step(stepname.COPY_DISKS, op.copy_disks)]


def remove_revert_point(rbd: RbdImages, paths: list[str],
                        uuid: str) -> None:
    """Every snapshot this plan made; one already gone is fine (a step
    run again after a crash)."""
    for path in paths:
        rbd.remove_snapshot(path, SNAPSHOT)
        LOG.info('Revert point %s@%s removed', path, SNAPSHOT,
                 instance_uuid=uuid)


# -- finish -------------------------------------------------------------------

def finish_steps(op: 'FinishOp') -> list[Step]:
    rbd = images(op.env)
    rec = op.record
    steps = [Step(stepname.CHECK_COPIES, op.check_disks),
             Step(stepname.CHECK_REVERT_POINT,
                  lambda: check_revert_point(rbd, rec)),
             Step(stepname.GROW_DISKS, lambda: grow(rbd, rec),
                  lambda: roll_back(op.env, rbd, rec))]
    # what the copied boot files need, then plug, define and start
    return steps + op.steps_after_checks()


def check_revert_point(rbd: RbdImages, rec: 'ResizeRecord') -> None:
    """Each image has the revert point and the size migrate saw: nothing
    grows an image a revert could not give back."""
    for disk in _images(rec.disks):
        if SNAPSHOT not in rbd.snapshots(disk.path):
            raise exception.ResizeDriverError(
                f'{disk.path} has no revert point {SNAPSHOT}')
        size = rbd.size(disk.path)
        if size != disk.virtual_size:
            raise exception.ResizeDriverError(
                f'{disk.path} is {size} bytes, the source saw '
                f'{disk.virtual_size}')


def new_size(disk: DiskFile, flavor: Flavor) -> Optional[int]:
    """What an image becomes (None: it keeps its size, as a config
    drive): a root or ephemeral image the flavor's size, a swap image
    the flavor's swap; never smaller than it is (Nova's image backend
    only grows an image it finds: a smaller swap keeps its size)."""
    if disk.role in GROWABLE:
        return grown_size(disk, flavor)
    if disk.role is DiskRole.SWAP:
        return max(flavor.swap_bytes, disk.virtual_size)
    return None


def grow(rbd: RbdImages, rec: 'ResizeRecord') -> None:
    """Each image to its new size (:func:`new_size`); done once librbd
    says so."""
    for disk in _images(rec.disks):
        size = new_size(disk, rec.new_flavor)
        if size is None:
            continue
        if rbd.size(disk.path) < size:
            LOG.info('Growing %s to %d bytes', disk.path, size,
                     instance_uuid=rec.uuid)
            rbd.resize(disk.path, size)
        got = rbd.size(disk.path)
        if got < size:
            raise exception.ResizeDriverError(
                f'{disk.path} is {got} bytes after a resize to {size}')


def roll_back(env: 'HostEnv', rbd: RbdImages, rec: 'ResizeRecord') -> None:
    """Each image back to its revert point (bytes and size).  Never under
    a guest of this host that runs it (a rollback under a running QEMU
    changes its disk beneath it); the destination's guest is gone before
    a revert is called (Nova's ``destroy``, our ``drop`` step)."""
    guest = env.host.lookup(rec.uuid)
    if guest is not None and guest.is_running():
        raise exception.ResizeDriverError(
            f'guest {rec.uuid} runs here: not rolling its disks back '
            f'under it')
    for path in _paths(rec.disks):
        if SNAPSHOT not in rbd.snapshots(path):
            # run again after the revert point went: already rolled back
            LOG.info('%s has no revert point left: rolled back already',
                     path, instance_uuid=rec.uuid)
            continue
        rbd.rollback(path, SNAPSHOT)
        LOG.info('%s rolled back to %s (%d bytes)', path, SNAPSHOT,
                 rbd.size(path), instance_uuid=rec.uuid)


# -- confirm and revert -------------------------------------------------------

def confirm_steps(op: 'ConfirmOp') -> list[Step]:
    rbd = images(op.env)
    rec = op.record
    steps = [Step(stepname.REMOVE_REVERT_POINT,
                  lambda: remove_revert_point(rbd, _paths(rec.disks),
                                              rec.uuid))]
    if not rec.same_hypervisor:
        steps.append(Step(stepname.UNDEFINE_SOURCE, op.undefine))
    return steps + [Step(stepname.DELETE_RESIZE_DIR, op.delete_resize_dir)]


def revert_steps(env: 'HostEnv', rec: 'ResizeRecord',
                 drop_dest_dir: bool = False) -> list[Step]:
    """What a revert does to the images, after ``_resize`` is back and
    before the source domain is defined.  ``drop_dest_dir``: first drop
    the destination's instance directory (its console log and copied
    boot files), which Nova's ``destroy`` there keeps for RBD instances
    (``destroy_disks`` is false for shared block storage) and the next
    move to that host would find in its way."""
    rbd = images(env)
    steps = []
    if drop_dest_dir and not rec.shared_path:
        steps.append(Step(stepname.DROP_DEST_COPY, lambda: transport.for_host(
            rec.destination.host, env.conf).remove_tree(rec.dest.dir)))
    return steps + [Step(stepname.ROLL_BACK_TO_REVERT_POINT,
                 lambda: roll_back(env, rbd, rec)),
            Step(stepname.REMOVE_REVERT_POINT,
                 lambda: remove_revert_point(rbd, _paths(rec.disks),
                                             rec.uuid))]
