"""The ``live`` plan: resize a running guest on its own host, no reboot.

Chosen (``resizedriver.chooser``, rule 1) when the guest runs on this
host, the new flavor only grows it (vCPUs, memory, root and ephemeral
disks; swap as it is) within the headroom the domain was started with
(``resizedriver.headroom``), and nothing makes hot-plug unsafe
(:func:`blockers`; an integration adds its own).  vCPUs are hot-plugged
(``virDomainSetVcpusFlags``), memory is plugged by the domain's
virtio-mem device (its ``<requested>`` size, through
``virDomainUpdateDeviceFlags``), disks grow with ``blockResize``; each
is read back from the hypervisor before the step counts as done.  The
persistent definition becomes the new flavor's (with its headroom), so
the next boot is the resized guest too.

migrate_disk_and_power_off (the guest keeps running):
  write resize record     [remove]      in a new <uuid>_resize/, alone;
                                        says how a revert will go

finish_migration:
  check live guest                      still running, still has the
                                        headroom, disks as recorded
  define new flavor       [restore]     the persistent definition only
  grow memory             [shrink]      virtio-mem <requested>, then its
                                        <current> read back; a guest that
                                        cannot give it back reboots once
                                        into its old definition
  grow disks                            blockResize, capacity read back
                                        (a Ceph RBD image's from librbd
                                        too: the plan's one for RBD)
  add vCPUs                             live vCPU count read back

confirm_migration:
  delete _resize                        (the record; nothing was copied)

finish_revert_migration, decided when the resize began (the record's
``live_revert``) and logged then, checked against the guest when the
revert begins and journaled (``decide_revert``; recovery follows the
journal, not the state a crash left):
  'live' (no vCPUs were added, or the hypervisor can unplug them):
    shrink memory                       virtio-mem back to the old size;
                                        if the guest cannot give it back
                                        (it uses it: the unplug never
                                        completes within live_timeout), it
                                        reboots once into the old flavor
    define source domain
    remove resize record
  'reboot' (vCPUs were added and cannot be taken away live):
    shut down resized guest             clean, as a cold resize's
    define source domain
    start guest                         only when power_on
    remove resize record
  'off' (the guest was found off): define source domain, start guest
    (only when power_on), remove resize record
Disks (files and RBD images alike) keep their grown size on a revert:
nothing shrinks a disk the guest may have written to (its filesystem may
already use the space).

After a crash: a migrate is rolled back (the record goes), a finish is
undone (the old definition and memory size come back; vCPUs and disks
that were grown stay until the revert, whose reboot, if vCPUs were
added, takes them away), confirm and revert are completed.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Callable, Optional

from oslo_log import log as logging

from resizedriver import chooser
from resizedriver import exception
from resizedriver import fileutil
from resizedriver import headroom
from resizedriver import qemuprocess
from resizedriver import stepname
from resizedriver.guest import Guest
from resizedriver.layout import RECORD_NAME, InstanceLayout
from resizedriver.model import GROWABLE, RBD, DiskFile, Flavor, grown_size
from resizedriver.plan import Step

if TYPE_CHECKING:
    from resizedriver.operations.protocols import (
        ConfirmOp, FinishOp, MigrateOp)
    from resizedriver.env import HostEnv
    from resizedriver.record import ResizeRecord

LOG = logging.getLogger(__name__)
POLL_SECONDS = 0.2
#: how a live resize is reverted (``ResizeRecord.live_revert``)
REVERT_LIVE = 'live'
REVERT_REBOOT = 'reboot'
#: the revert's decision (``decide_revert``) for a guest found off
GUEST_OFF = 'off'
#: the revert journal's context key that keeps the decision
DECISION = 'live_revert_decision'
#: QEMU versions on which vCPU hot-unplug is known to hang (libvirt times
#: out waiting for QEMU; a later DIMM attach crashed QEMU): never tried
UNPLUG_HANGS = ((7, 2),)


def blockers(running: bool, live_xml: str, old: Flavor, new: Flavor,
             disks: list[DiskFile], use_cow_images: bool) -> list[str]:
    """Why a resize from ``old`` to ``new`` cannot be done live, from
    the running domain's live XML (empty: it can)."""
    if not running:
        return ['the guest is not running']
    why = []
    now = headroom.of_domain(live_xml)
    if new.vcpus < old.vcpus:
        why.append(f'fewer vCPUs ({old.vcpus} -> {new.vcpus})')
    elif new.vcpus > now.max_vcpus:
        why.append(f'{new.vcpus} vCPUs is beyond the domain\'s headroom '
                   f'of {now.max_vcpus}')
    if new.memory_mib < old.memory_mib:
        why.append(f'less memory ({old.memory_mib} -> {new.memory_mib} '
                   f'MiB)')
    elif new.memory_mib > old.memory_mib:
        if now.virtio_mem is None:
            why.append('more memory, and the domain has no virtio-mem '
                       'device to plug it')
        elif new.memory_mib > now.max_memory_mib:
            why.append(f'{new.memory_mib} MiB is beyond the domain\'s '
                       f'headroom of {now.max_memory_mib} MiB')
        elif (new.memory_mib - now.boot_memory_mib) % headroom.BLOCK_MIB:
            why.append(f'{new.memory_mib} MiB is not the boot memory plus '
                       f'whole {headroom.BLOCK_MIB} MiB blocks')
    if new.swap_bytes != old.swap_bytes:
        why.append('swap changes (a swap disk is made anew, cold)')
    wanted = 'qcow2' if use_cow_images else 'raw'
    for disk in disks:
        if disk.role not in GROWABLE:
            continue
        if disk.format not in (wanted, RBD):
            why.append(f'{disk.name} is {disk.format} and the config wants '
                       f'{wanted}: a conversion is a cold resize')
        elif grown_size(disk, new) > disk.virtual_size and \
                not disk.target_dev:
            why.append(f'{disk.name} is not a disk device to grow live')
    return why


def unplug_supported(conf: object, version: tuple[int, int, int]) -> bool:
    """Whether a revert may take vCPUs away live: only where the operator
    said so, and never on a QEMU where it is known to hang."""
    if version[:2] in UNPLUG_HANGS:
        return False
    return bool(conf.resizedriver.vcpu_hot_unplug)   # type: ignore


def revert_mode(old: Flavor, new: Flavor, can_unplug: bool) -> str:
    return REVERT_REBOOT if new.vcpus > old.vcpus and not can_unplug \
        else REVERT_LIVE


# -- migrate ------------------------------------------------------------

def migrate_steps(op: MigrateOp) -> list[Step]:
    return [Step(stepname.WRITE_RECORD, lambda: write_record(op),
                 lambda: remove_record_dir(op.inst))]


def write_record(op: MigrateOp) -> None:
    """The record alone in a new ``<uuid>_resize/`` (where every plan
    keeps it, and where a pending resize is looked for)."""
    os.mkdir(op.inst.resize_dir)
    fileutil.fsync_dir(op.env.instances_path)
    op.write_record(op.inst.in_resize_dir(RECORD_NAME))
    LOG.info('Live resize: the guest keeps running (revert: %s)',
             op.live_revert, instance_uuid=op.inst.uuid)


def remove_record_dir(inst: InstanceLayout) -> None:
    """Undo of ``write_record``, and the end of confirm and revert: the
    record, then its directory (only if nothing else is in it)."""
    fileutil.remove_durably(inst.in_resize_dir(RECORD_NAME))
    if os.path.isdir(inst.resize_dir) and not os.listdir(inst.resize_dir):
        os.rmdir(inst.resize_dir)
        fileutil.fsync_dir(inst.instances_path)


# -- finish ---------------------------------------------------------------

def finish_steps(op: FinishOp) -> list[Step]:
    env, rec = op.env, op.record
    return [
        Step(stepname.CHECK_LIVE, lambda: check_live(env, rec)),
        Step(stepname.DEFINE_NEW_FLAVOR, op.define_persistent,
             lambda: restore_definition(env, rec)),
        Step(stepname.GROW_MEMORY,
             lambda: set_memory(env, rec, rec.new_flavor.memory_mib),
             lambda: undo_memory(env, rec)),
        Step(stepname.GROW_DISKS,
             lambda: grow_disks(env, rec, op.rbd_size)),
        Step(stepname.ADD_VCPUS,
             lambda: set_vcpus(env, rec, rec.new_flavor.vcpus)),
    ]


def _running(env: 'HostEnv', rec: 'ResizeRecord') -> Guest:
    guest = env.host.lookup(rec.uuid)
    if guest is None or not guest.is_running():
        raise exception.ResizeDriverError(
            f'guest {rec.uuid} is not running: a live resize needs it '
            f'running; revert it')
    return guest


def check_live(env: 'HostEnv', rec: 'ResizeRecord') -> None:
    """Nothing changed since migrate's validation that would make a step
    fail half-way: the guest runs, its headroom still fits."""
    guest = _running(env, rec)
    why = blockers(True, guest.live_xml(), rec.old_flavor, rec.new_flavor,
                   rec.disks, env.conf.use_cow_images)
    if why:
        raise exception.ResizeDriverError(
            f'the live resize is no longer possible: {"; ".join(why)}')


def restore_definition(env: 'HostEnv', rec: 'ResizeRecord') -> None:
    """The definition from before the resize, for the next boot."""
    env.host.define(rec.source_xml)


def set_memory(env: 'HostEnv', rec: 'ResizeRecord',
               memory_mib: int) -> None:
    """Make the guest have ``memory_mib``: its virtio-mem device plugs
    (or unplugs) the difference to its boot memory; done once the live
    XML's ``<current>`` says so."""
    guest = _running(env, rec)
    live_xml = guest.live_xml()
    now = headroom.of_domain(live_xml)
    mem = now.virtio_mem
    if mem is None:
        if memory_mib != now.memory_mib:
            raise exception.ResizeDriverError(
                f'guest {rec.uuid} has no virtio-mem device')
        return
    want = memory_mib - now.boot_memory_mib
    if mem.requested_mib != want:
        LOG.info('Asking virtio-mem for %d MiB (guest: %d -> %d MiB)',
                 want, now.memory_mib, memory_mib, instance_uuid=rec.uuid)
        guest.update_device_live(headroom.requested_xml(live_xml, want))
    _wait(env, guest, lambda now: (now.virtio_mem is not None and
                                   now.virtio_mem.current_mib == want),
          f'virtio-mem to plug {want} MiB')


def undo_memory(env: 'HostEnv', rec: 'ResizeRecord') -> None:
    """Back to the old memory; nothing to do for a guest that is off
    (after a host crash): it boots from the old definition, restored by
    the undo of the define step.  A guest that cannot give the memory
    back (it uses it) reboots once into its old definition, defined here
    already (the define step's undo, next, does it again harmlessly)."""
    guest = env.host.lookup(rec.uuid)
    if guest is None or not guest.is_running():
        LOG.info('Guest is off: its memory comes back with its old '
                 'definition', instance_uuid=rec.uuid)
        return
    _live_or_reboot(env, rec, 'shrink memory', lambda: set_memory(
        env, rec, rec.old_flavor.memory_mib), lambda: _boot(env, rec))


def _boot(env: 'HostEnv', rec: 'ResizeRecord') -> None:
    """Start the guest from the definition it had before the resize."""
    restore_definition(env, rec)
    start_guest(env, rec)


def start_guest(env: 'HostEnv', rec: 'ResizeRecord') -> None:
    """Start the defined guest unless it runs (looked up: recovery may
    run this alone)."""
    guest = env.host.lookup(rec.uuid)
    if guest is None:
        raise exception.NotFound(f'no libvirt domain {rec.uuid} to start')
    guest.ensure_running(env.conf.resizedriver.start_timeout)


def grow_disks(env: 'HostEnv', rec: 'ResizeRecord',
               rbd_size: Callable[[DiskFile], int]) -> None:
    """Grow each root and ephemeral disk to the new flavor's size with
    ``blockResize`` (QEMU grows the file, or the RBD image through
    librbd), done once QEMU reads the new size back and, for an RBD
    image, once the cluster says so too (``rbd_size``: librbd)."""
    guest = _running(env, rec)
    for disk in rec.disks:
        if disk.role not in GROWABLE:
            continue
        size = grown_size(disk, rec.new_flavor)
        assert disk.target_dev is not None     # blockers() made sure
        if guest.block_capacity(disk.target_dev) < size:
            LOG.info('Growing %s (%s) to %d bytes live', disk.name,
                     disk.target_dev, size, instance_uuid=rec.uuid)
            guest.block_resize(disk.target_dev, size)
        got = guest.block_capacity(disk.target_dev)
        if got >= size and disk.format == RBD:
            got = rbd_size(disk)
            LOG.info('RBD image %s is %d bytes in the cluster', disk.path,
                     got, instance_uuid=rec.uuid)
        if got < size:
            raise exception.ResizeDriverError(
                f'{disk.name} is {got} bytes after a live resize to {size}')


def set_vcpus(env: 'HostEnv', rec: 'ResizeRecord', vcpus: int) -> None:
    """Hot-plug (or, where supported, unplug) to ``vcpus``; done once
    the live XML's ``<vcpu current>`` says so."""
    guest = _running(env, rec)
    if headroom.of_domain(guest.live_xml()).vcpus != vcpus:
        LOG.info('Setting %d vCPUs live', vcpus, instance_uuid=rec.uuid)
        guest.set_vcpus_live(vcpus)
    _wait(env, guest, lambda now: now.vcpus == vcpus, f'{vcpus} vCPUs')


def _wait(env: 'HostEnv', guest: Guest,
          done: Callable[[headroom.DomainHeadroom], bool],
          what: str) -> None:
    timeout = env.conf.resizedriver.live_timeout
    deadline = time.monotonic() + timeout
    while not done(headroom.of_domain(guest.live_xml())):
        if time.monotonic() >= deadline:
            raise exception.ResizeDriverError(
                f'the hypervisor did not report {what} within {timeout}s')
        time.sleep(POLL_SECONDS)


# -- confirm and revert ----------------------------------------------------

def confirm_steps(op: ConfirmOp) -> list[Step]:
    return [Step(stepname.DELETE_RESIZE_DIR,
                 lambda: remove_record_dir(op.record.source))]


def decide_revert(env: 'HostEnv', rec: 'ResizeRecord') -> str:
    """How the revert goes, from the guest as it is when the revert
    begins: ``REVERT_LIVE``, ``REVERT_REBOOT`` or ``GUEST_OFF``.  The
    caller journals it (``DECISION``) so that a crashed revert is
    completed as it began, not re-decided from the state the crash left
    (a guest it had shut down to reboot would then look like one that
    was off, and stay off).

    Which revert runs was decided when the resize began (the record's
    ``live_revert``); a reboot still happens only while the guest really
    runs with vCPUs it cannot lose live (a finish undone before it added
    them needs none), and a guest that is off just gets its old
    definition back."""
    guest = env.host.lookup(rec.uuid)
    if guest is None or not guest.is_running():
        LOG.info('Revert of a live resize: the guest is off, it gets its '
                 'old definition back', instance_uuid=rec.uuid)
        return GUEST_OFF
    why_reboot = _why_reboot(guest, rec)
    if why_reboot:
        LOG.info('Revert of a live resize: %s; the guest reboots once '
                 'into the old flavor', why_reboot, instance_uuid=rec.uuid)
        return REVERT_REBOOT
    LOG.info('Revert of a live resize: the guest keeps running',
             instance_uuid=rec.uuid)
    return REVERT_LIVE


def decided(env: 'HostEnv', rec: Optional['ResizeRecord'],
            journaled: Optional[str]) -> Optional[str]:
    """The revert's decision: the one ``journaled`` when it began, else
    (a revert beginning now, or a journal from before decisions were
    kept) :func:`decide_revert`'s for a live resize; None for others."""
    if journaled is not None or rec is None or rec.plan != chooser.LIVE:
        return journaled
    return decide_revert(env, rec)


def revert_steps(env: 'HostEnv', rec: 'ResizeRecord', decision: str,
                 define_source: Callable[[], None],
                 start: Optional[Callable[[], None]]) -> list[Step]:
    """The revert ``decision`` (:func:`decide_revert`) makes.
    ``define_source`` defines the old flavor's definition (and under
    Nova, in a reboot, starts it: ``start`` is then None).

    A live revert whose guest cannot give back what it was given (it
    uses the memory: the unplug never completes) reboots it once into
    the old flavor instead (:func:`_live_or_reboot`): the revert never
    fails for good, and a repeat would only build the same plan."""
    grown = [d.name for d in rec.disks if d.role in GROWABLE and
             grown_size(d, rec.new_flavor) > d.virtual_size]
    if grown:
        LOG.warning('Revert of a live resize: %s stay at their grown size '
                    '(a disk the guest may have written to is never '
                    'shrunk)', ', '.join(grown), instance_uuid=rec.uuid)

    def boot_old() -> None:
        define_source()
        if start is not None:
            start()

    steps = []
    if decision == REVERT_REBOOT:
        steps.append(Step(stepname.SHUT_DOWN_RESIZED,
                          lambda: shut_down(env, rec)))
    elif decision == REVERT_LIVE:
        if rec.new_flavor.memory_mib > rec.old_flavor.memory_mib:
            steps.append(Step(stepname.SHRINK_MEMORY, lambda: _live_or_reboot(
                env, rec, 'shrink memory', lambda: set_memory(
                    env, rec, rec.old_flavor.memory_mib), boot_old)))
        if rec.new_flavor.vcpus > rec.old_flavor.vcpus:
            steps.append(Step(stepname.REMOVE_VCPUS, lambda: _live_or_reboot(
                env, rec, 'remove vCPUs', lambda: set_vcpus(
                    env, rec, rec.old_flavor.vcpus), boot_old)))
    steps.append(Step(stepname.DEFINE_SOURCE, define_source))
    if decision != REVERT_LIVE and start is not None:
        steps.append(Step(stepname.START, start))
    steps.append(Step(stepname.REMOVE_RECORD,
                      lambda: remove_record_dir(rec.source)))
    return steps


def _live_or_reboot(env: 'HostEnv', rec: 'ResizeRecord', what: str,
                    change: Callable[[], None],
                    boot_old: Callable[[], None]) -> None:
    """``change`` the running guest back live; if it cannot (whatever
    the reason: the reboot is always a correct revert), shut it down and
    ``boot_old``: its old definition, started.  Bounded by
    ``live_timeout`` plus a shutdown and a start.  A guest found off (a
    crash interrupted this fallback) is booted: it was running when the
    revert began."""
    guest = env.host.lookup(rec.uuid)
    if guest is not None and guest.is_running():
        try:
            change()
            return
        except Exception as e:      # any failure: the reboot reverts too
            LOG.warning('Live resize: %s failed (%s); the guest reboots '
                        'once into the old flavor instead', what, e,
                        instance_uuid=rec.uuid)
            shut_down(env, rec)
    else:
        LOG.info('Live resize: the guest is off, it boots into the old '
                 'flavor', instance_uuid=rec.uuid)
    boot_old()


def _why_reboot(guest: Guest, rec: 'ResizeRecord') -> Optional[str]:
    """Why the running guest cannot be reverted live (None if it can): it
    has vCPUs that cannot be unplugged here, or it no longer runs as the
    live resize left it (booted since, e.g. by a host reboot, with the
    new flavor's memory: virtio-mem cannot take boot memory away)."""
    now = headroom.of_domain(guest.live_xml())
    if rec.live_revert == REVERT_REBOOT and now.vcpus > rec.old_flavor.vcpus:
        return 'vCPUs cannot be taken away live here'
    if now.boot_memory_mib > rec.old_flavor.memory_mib:
        return (f'it booted with {now.boot_memory_mib} MiB since, more '
                f'than the old flavor\'s {rec.old_flavor.memory_mib}')
    return None


def shut_down(env: 'HostEnv', rec: 'ResizeRecord') -> None:
    guest = env.host.lookup(rec.uuid)
    if guest is not None:
        conf = env.conf.resizedriver
        qemuprocess.stop_and_wait(
            guest.name, rec.uuid, lambda: guest.power_off(
                conf.shutdown_timeout, conf.shutdown_retry_interval))
