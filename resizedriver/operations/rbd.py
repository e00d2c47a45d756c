"""The ``rbd`` plan: a cold resize of an instance whose disks are Ceph
RBD images, on its host or to another host that shares the cluster.  No
image is copied: each stays where it is, and the guest reboots into the
new flavor reading them.  A config drive is an image too under Nova
(``_create_configdrive`` imports it as ``<uuid>_disk.config`` and
deletes the local file): it has a revert point like the root's and is
never grown; Nova's XML names it, and Nova's ``_create_configdrive``
after the define makes no new one where it exists.  The instance
directory's boot files (kernel, ramdisk: a few MiB) are copied as the
file plans copy them, but while the guest runs; any other disk (a local
``disk.config`` file, which Nova 34 under ``images_type = rbd`` does not
leave) keeps the resize Nova's own (chooser rule 1c).

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
  create destination dir   [remove]      another instances path only
  stage boot files         [remove them] guest running: the kernel,
                                         ramdisk and disk.info copied
                                         (verified) into
                                         <uuid>.staging on a shared
                                         instances path, else into the
                                         destination's directory
                                         (``stage_boot_files`` says why
                                         they do not change after)
  write resize record      [remove]
  power off                [start]       (Nova: unplug VIFs after it)
  take revert point        [remove it]   an RBD snapshot of each image,
                                         ``<image>@resizedriver-resize``,
                                         of the guest shut down: the
                                         bytes a revert returns (the
                                         images are journaled); every
                                         image's at once
  move instance dir to _resize [move back]
  put staged dir in place  [take back]   a shared instances path only:
                                         <uuid>.staging becomes <uuid>

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

Each operation talks to the cluster over one connection
(``RbdImages.session``, opened by its first call): a librados connect
(0.02 s here) takes longer than the calls it serves, and each call made
its own before (a dozen per resize, half of them with the guest down).

Why ours and not upstream's (which does the same work: shutdown, a
snapshot, a resize, define, start): Nova takes its ``nova-resize``
snapshot in finish, after power-off, where one left by an earlier
resize makes the finish fail with the guest already off; and it is not
journaled, so a crash between it and the end of the confirm or revert
leaks it.  Ours is taken, checked and removed by journaled steps, and a
leftover is refused before power-off.  It is also faster, measured on
this machine (test guest under TCG, 1 -> 2 vCPUs, 1 -> 2 GiB, medians
of three runs at load 1.0-2.7): the guest was down 5.1 s on its host
and 4.8 s moving to another, against 6.2 and 5.9 s with Nova's own
path; from its power-off to the start returning (without init's reap
and the benchmark's handover) 1.5 and 1.1 s, against 2.2 and 3.2 s
before the boot files were staged (the copy was in the window).

What is left between the guest's power-off and its start returning, and
why each step must be there (medians in doc/source/performance.rst):
  libvirt's stop, power off returning   as the overlay plan's
                        (``overlay``'s docstring); Nova's clean
                        shutdown looks once a second, ours every 0.2 s
                        (``NovaMigrate.power_off``)
  take revert point     what a revert returns is the guest's disk as it
                        shut down: only a snapshot taken after the
                        power-off holds it (one before would lose what
                        the guest wrote in between).  A snapshot's id is
                        the monitors' (an OSDMap change, committed by
                        Paxos at most once per ``paxos_propose_interval``,
                        1 s by default): 0.4-0.8 s here, which nothing
                        before the power-off can prepare; all images'
                        snapshots are asked for at once, so they share
                        that wait (Nova's own resize takes the same
                        snapshot, in its finish)
  move to _resize       one rename, made durable: the record says where
                        the kept source is
  put staged in place   a shared instances path only: one rename, made
                        durable (``<uuid>`` was the source's until then)
  (under Nova: its VIFs and volumes after the power-off, as in its own
  resize)
  check copied,         the destination verifies what it defines the
  check revert point    guest on (the boot files, and each image's
                        revert point and size, over a connection that
                        finish, a call of its own, opens first) before
                        it grows anything
  grow disks            the new flavor's size; after the revert point
  define, start         the new flavor's XML is Nova's, made only once
                        its manager has given the instance the new
                        flavor (``_set_instance_info`` runs between
                        migrate and finish), on the host that runs it;
                        for each RBD disk it runs ``ceph mon dump``
                        (Nova's ``get_mon_addrs``), most of the define
"""

from __future__ import annotations

import os
from concurrent import futures
from typing import TYPE_CHECKING, Callable, Optional

from oslo_log import log as logging

from resizedriver import exception
from resizedriver import staging
from resizedriver import stepname
from resizedriver import threadcontext
from resizedriver import transport
from resizedriver.layout import DISK_INFO
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
#: and the boot files it stages (their undo removes them)
BOOT_FILES = 'rbd_boot_files'


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
    names = op.facts.setdefault(BOOT_FILES, _boot_files(op))

    def take() -> None:
        at_once(lambda path: take_revert_point(rbd, path, uuid), paths)

    stage = Step(stepname.STAGE_BOOT_FILES,
                 lambda: stage_boot_files(op, names),
                 lambda: unstage(op, names))
    down = [Step(stepname.WRITE_RECORD, op.write_record, op.remove_record),
            Step(stepname.POWER_OFF, op.power_off_step, op.power_on_again),
            Step(stepname.TAKE_REVERT_POINT, take,
                 lambda: remove_revert_point(rbd, paths, uuid)),
            Step(stepname.MOVE_TO_RESIZE, op.move_to_resize, op.move_back)]
    if op.topology.shared_path:
        return [stage, *down, Step(
            stepname.PUT_STAGED_IN_PLACE,
            lambda: staging.put_in_place(op.inst),
            lambda: staging.take_back(op.inst))]
    return [Step(stepname.CREATE_DEST_DIR, op.create_dest_dir,
                 op.remove_dest_dir), stage, *down]


def at_once(each: Callable[[str], None], paths: list[str]) -> None:
    """``each`` of every path, all at once: a snapshot's id comes from
    the monitors (an OSDMap change, which they commit by Paxos, here
    0.4-0.8 s later), and the snapshots asked for together are committed
    together (measured here: two images' 0.8 s at once, 1.8-2.0 s one
    after the other)."""
    if len(paths) < 2:
        for path in paths:
            each(path)
        return
    with futures.ThreadPoolExecutor(len(paths)) as pool:
        jobs = [pool.submit(threadcontext.carried(each), path)
                for path in paths]
    for job in jobs:
        job.result()


def take_revert_point(rbd: RbdImages, path: str, uuid: str) -> None:
    """The image's revert point (one there already: this step run again
    after a crash)."""
    if SNAPSHOT not in rbd.snapshots(path):
        rbd.create_snapshot(path, SNAPSHOT)
    LOG.info('Revert point %s@%s taken', path, SNAPSHOT, instance_uuid=uuid)


def _boot_files(op: 'MigrateOp') -> list[str]:
    """The files of the instance directory the resized guest opens: the
    kernel and ramdisk it boots, and ``disk.info``."""
    names = [d.name for d in op.disks
             if d.role is not DiskRole.SWAP and d.format != RBD]
    if os.path.exists(op.inst.path(DISK_INFO)):
        names.append(DISK_INFO)
    return names


def stage_boot_files(op: 'MigrateOp', names: list[str]) -> None:
    """Copy the boot files (verified), while the guest runs, to where
    they wait for it to go down: on a shared instances path, a fresh
    ``<uuid>.staging`` (``<uuid>`` is the source's until it moves); on
    another one, the destination's instance directory itself, made
    before the power-off (as Nova's own migrate makes it).  Nothing writes
    them while it runs: QEMU read the kernel and ramdisk once, at its
    start, and Nova rewrites them (and ``disk.info``) only when it makes
    an instance's images (spawn, rebuild, unrescue, a live migration's
    or hard reboot's missing files), which it does not during a resize:
    the instance's task state refuses every other action."""
    sdir = staging.fresh(op.inst) if op.topology.shared_path else \
        op.dest_inst.dir
    op.copy_all([(op.inst.path(name), os.path.join(sdir, name))
                 for name in names])
    op.transport.sync_dir(sdir, op.dest.instances_path)


def unstage(op: 'MigrateOp', names: list[str]) -> None:
    """Undo :func:`stage_boot_files` (the destination's directory, on
    another instances path, is its own step's to remove)."""
    if op.topology.shared_path:
        staging.remove(op.inst)
    elif names:
        op.transport.execute('rm', '-f', '--', *(
            os.path.join(op.dest_inst.dir, name) for name in names))


def remove_revert_point(rbd: RbdImages, paths: list[str],
                        uuid: str) -> None:
    """Every snapshot this plan made (all at once, as they were taken);
    one already gone is fine (a step run again after a crash)."""
    def remove(path: str) -> None:
        rbd.remove_snapshot(path, SNAPSHOT)
        LOG.info('Revert point %s@%s removed', path, SNAPSHOT,
                 instance_uuid=uuid)
    at_once(remove, paths)


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
