"""Fold an overlay resize's backing chain back, live, with a block pull.

After an overlay resize the guest runs from
``<uuid>/disk -> <uuid>_resize/disk -> _base/<sha>``.  :func:`pull` asks
QEMU (through libvirt) to copy what ``<uuid>_resize/disk`` holds up into
``<uuid>/disk`` and then point it at ``_base/<sha>`` directly: Nova's
layout again, while the guest keeps running.

Why this is crash safe: the job writes only the active image, and only
data the chain already reads there (the guest sees no change); the
backing pointer in its header is switched once, when the job completes.
Killed anywhere before that (the job aborted, libvirtd or QEMU or the
host gone), the chain is what it was -- still valid, still readable --
and a new pull starts over; one that finds the chain already folded does
nothing.  ``<uuid>_resize/disk`` is only ever opened read-only, so it
stays the exact revert point.

One window is not closed by QEMU (seen on QEMU 7.2): at completion it
writes the new backing name into the header while the qcow2 L2 tables of
the clusters it copied up are still only in its metadata cache.  QEMU
killed then (SIGKILL, a host crash) leaves ``<uuid>/disk`` naming
``_base`` without those clusters: the data read through
``<uuid>_resize`` is gone from its view.  So :func:`pull` ends with
``Guest.flush_disks`` (a pause: QEMU flushes every disk), and until that
is recorded as done, a guest found not running must first have its
overlay pointed back at ``<uuid>_resize/disk`` (:func:`reattach`), which
is correct whatever the pull reached: every cluster the active image
lacks on disk reads from there again, and what it has is either a copy
of that or newer.

Whether a job succeeded is decided by the live chain afterwards, not by
the job vanishing: libvirt drops a failed job from ``blockJobInfo`` just
as it drops a completed one.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional

import libvirt
from lxml import etree
from oslo_log import log as logging

from resizedriver import domain_xml
from resizedriver import exception
from resizedriver.guest import Guest
from resizedriver.qemuimg import QemuImg

LOG = logging.getLogger(__name__)
POLL_SECONDS = 0.2
#: a chain deeper than this is not one we made
MAX_DEPTH = 16

#: how long a guest that outruns an active commit is paused for it to
#: catch up (and for its pivot), at most
PAUSED_CATCH_UP = 60.0

#: progress(bytes done, bytes total) of one pull
PullProgress = Callable[[int, int], None]


class FoldFailed(exception.ResizeDriverError):
    """A block pull did not fold the chain; the chain is as it was."""


def backing_chain(guest: Guest, target_dev: str) -> list[str]:
    """The files ``target_dev`` reads, active image first, as the running
    QEMU has them open (libvirt's live ``<backingStore>`` chain)."""
    root = etree.fromstring(guest.live_xml().encode())
    for disk in root.iterfind('./devices/disk'):
        target = disk.find('target')
        if target is None or target.get('dev') != target_dev:
            continue
        chain, node = [], disk
        while node is not None:
            source = node.find('source')
            if source is None or source.get('file') is None:
                break
            chain.append(source.get('file'))
            node = node.find('backingStore')
        return chain
    raise exception.NotFound(f'guest {guest.name} has no disk {target_dev}')


def _folded(chain: list[str], base: Optional[str]) -> bool:
    return chain[1:2] == ([base] if base else [])


def pull(guest: Guest, target_dev: str, base: Optional[str], timeout: float,
         progress: Optional[PullProgress] = None,
         bandwidth: int = 0) -> None:
    """Make ``target_dev``'s active image back directly onto ``base``
    (None: onto nothing, pulling the whole chain) while the guest runs.

    Idempotent: an already folded chain is only flushed, and a pull
    that is still running (started before a crash) is waited for rather
    than started again.  Gives up after ``timeout`` seconds: the job is
    then aborted, which leaves the chain valid and as it was.  Once it
    returns the folded chain is on disk (flushed): only then may
    ``<uuid>_resize`` go.
    """
    chain = backing_chain(guest, target_dev)
    if _folded(chain, base):
        LOG.info('%s already backed by %s', chain[0], base,
                 instance_uuid=guest.uuid)
        guest.flush_disks()     # a crash may have come before ours
        return
    if base is not None and base not in chain[2:]:
        raise FoldFailed(f'{target_dev}: {base} is not below the backing '
                         f'file in its chain {chain}')
    job = guest.block_job(target_dev)
    if job is None:
        LOG.info('Pulling %s into %s, onto %s', chain[1:-1] if base
                 else chain[1:], chain[0], base, instance_uuid=guest.uuid)
        guest.block_pull(target_dev, base, bandwidth)
    elif job.type == libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_PULL:
        LOG.info('A pull of %s is running already: waiting for it',
                 target_dev, instance_uuid=guest.uuid)
    else:
        raise FoldFailed(f'{target_dev}: another block job (type '
                         f'{job.type}) is running on it')
    _wait(guest, target_dev, timeout, progress)
    chain = backing_chain(guest, target_dev)
    if not _folded(chain, base):
        raise FoldFailed(f'{target_dev}: the pull ended but the chain is '
                         f'{chain} (the job failed: see the libvirtd log)')
    guest.flush_disks()
    LOG.info('%s is backed by %s again', chain[0], base,
             instance_uuid=guest.uuid)


def commit_active(guest: Guest, target_dev: str, base: str,
                  timeout: float, drop_top: Callable[[], None]) -> None:
    """Fold ``target_dev``'s active image, and any image between it and
    ``base``, down into ``base`` while the guest runs, switch the guest
    to ``base`` (an active commit and its pivot) and have ``drop_top``
    remove the top: how pre-copy snapshots are taken back.

    The pivot is made with the guest paused, and it stays paused until
    ``drop_top`` is done.  QEMU flushes ``base`` before it ends the job,
    so from the pause on ``base`` holds every write the top holds and
    none newer: whatever a crash leaves, a top that still exists may be
    committed again into a disk no guest runs from, and a paused guest
    that no longer reads its top only has to lose it and go on
    (``sourcetops.fold_tops_back``).  The pause also ends the race with a
    guest that writes faster than the commit copies: after ``timeout`` s
    of mirroring the guest is paused anyway, for at most ``timeout`` s
    more.  Until the pivot the guest's writes go to both images; a
    failure before it resumes the guest on its top, as it was."""
    if guest.block_job(target_dev) is None:
        LOG.info('Committing the top of %s into %s', target_dev, base,
                 instance_uuid=guest.uuid)
        guest.block_commit_active(target_dev, base)
    if not _caught_up(guest, target_dev, base, timeout):
        LOG.warning('%s: the commit did not catch up with the guest '
                    'within %.0f s; pausing the guest (at most %.0f s) '
                    'until it has', target_dev, timeout, PAUSED_CATCH_UP,
                    instance_uuid=guest.uuid)
    try:
        guest.pause()
        if not _caught_up(guest, target_dev, base, PAUSED_CATCH_UP):
            raise FoldFailed(f'{target_dev}: the commit into {base} did not '
                             f'catch up even with the guest paused for '
                             f'{PAUSED_CATCH_UP:.0f} s')
        _pivot(guest, target_dev, PAUSED_CATCH_UP)
    except BaseException:
        _undo_commit(guest, target_dev, base)
        raise
    chain = backing_chain(guest, target_dev)
    if chain[0] != base:
        raise FoldFailed(f'{target_dev}: after the pivot the chain is '
                         f'{chain}, not topped by {base}; the guest stays '
                         f'paused: "resizedriver recover" takes it on')
    drop_top()
    guest.resume()


def _undo_commit(guest: Guest, target_dev: str, base: str) -> None:
    """After a failure before the pivot: no job left, the guest running on
    its top as before.  Pivoted (the failure came after), it stays
    paused: its top must go first (``sourcetops.fold_tops_back``, which
    tries again at once), and so it does when whether it was pivoted
    cannot be read (the next try reads it again and resumes it either
    way)."""
    try:
        if guest.block_job(target_dev) is not None:
            guest.abort_block_job(target_dev)
    finally:
        try:
            pivoted = backing_chain(guest, target_dev)[0] == base
        except Exception:
            LOG.exception('%s: cannot tell whether the guest was pivoted '
                          'to %s: it stays paused for "resizedriver '
                          'recover"', target_dev, base,
                          instance_uuid=guest.uuid)
            pivoted = True
        if not pivoted and guest.is_paused():
            guest.resume()


def _caught_up(guest: Guest, target_dev: str, base: str,
               timeout: float) -> bool:
    """Wait (at most ``timeout`` s) until the commit on ``target_dev``
    mirrors the guest; False if it has not by then."""
    deadline = time.monotonic() + timeout
    while True:
        job = guest.block_job(target_dev)
        if job is None:
            raise FoldFailed(f'{target_dev}: the commit into {base} ended '
                             f'before it could be pivoted (the job failed:'
                             f' see the libvirtd log)')
        if job.end and job.cur == job.end:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)


def _pivot(guest: Guest, target_dev: str, timeout: float) -> None:
    """Pivot, again while libvirt says the job is not ready yet (its
    ready event can come after ``cur == end``), then wait until the job
    is gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            guest.pivot_block_job(target_dev)
            break
        except libvirt.libvirtError as e:
            if guest.block_job(target_dev) is None:
                raise FoldFailed(f'{target_dev}: the commit ended before '
                                 f'its pivot: {e}') from e
            if time.monotonic() >= deadline:
                raise FoldFailed(f'{target_dev}: the pivot was refused for '
                                 f'{timeout:.0f} s: {e}') from e
            LOG.debug('Pivot of %s not possible yet: %s', target_dev, e,
                      instance_uuid=guest.uuid)
            time.sleep(POLL_SECONDS)
    while guest.block_job(target_dev) is not None:
        if time.monotonic() >= deadline:
            raise FoldFailed(f'{target_dev}: the pivoted job did not end '
                             f'within {timeout:.0f} s')
        time.sleep(POLL_SECONDS)


def reattach(path: str, resize_layer: str, qemu_img: QemuImg) -> None:
    """After a crash, before the guest starts again: point the active
    overlay ``path`` back at its ``<uuid>_resize`` layer (header only).
    Always right while that layer exists, whatever a pull had done (see
    the module docstring); a later :func:`pull` folds it again."""
    qemu_img.rebase_unsafe(path, resize_layer, 'qcow2')


def fold_offline(path: str, layer: str, base: Optional[str],
                 qemu_img: QemuImg) -> None:
    """Fold ``layer`` into the overlay ``path`` with the guest off, onto
    ``base``.  The header is not trusted to say whether a pull got that
    far: QEMU killed just as one completed can leave it naming ``base``
    while the copied clusters' index never reached the disk, so their
    data is still only in ``layer``.  Pointing the overlay back at
    ``layer`` first (:func:`reattach`) is always right while it exists;
    the safe rebase then copies up whatever the overlay lacks (nothing,
    after a pull that completed)."""
    reattach(path, layer, qemu_img)
    size = os.path.getsize(layer) + qemu_img.info(path, 'qcow2').virtual_size
    qemu_img.rebase_safe(path, base, 'raw', size=size)


def _wait(guest: Guest, target_dev: str, timeout: float,
          progress: Optional[PullProgress]) -> None:
    """Until the job on ``target_dev`` is gone; abort it after
    ``timeout`` s (or when ``progress`` raises) and say so."""
    deadline = time.monotonic() + timeout
    try:
        while (job := guest.block_job(target_dev)) is not None:
            if progress is not None:
                progress(job.cur, job.end)
            if time.monotonic() >= deadline:
                raise FoldFailed(
                    f'{target_dev}: the pull did not finish within '
                    f'{timeout:.0f} s ({job.cur} of {job.end}); it was '
                    f'aborted, the chain is unchanged and a new pull '
                    f'starts over')
            time.sleep(POLL_SECONDS)
    except BaseException:
        if guest.block_job(target_dev) is not None:
            LOG.warning('Aborting the pull of %s', target_dev,
                        instance_uuid=guest.uuid)
            guest.abort_block_job(target_dev)
        raise


def _under(path: str, directory: str) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([real, top]) == top


def disks_depending_on(guest: Guest, directory: str,
                       qemu_img: QemuImg) -> list[str]:
    """The target devs of the guest's file disks whose chain still reads a
    file under ``directory``: while any does, ``directory`` (the kept
    ``<uuid>_resize``) must not go.

    A running guest answers from the chain QEMU has open; a stopped one
    from the image headers, each layer read as the format the one above
    names (never probed).
    """
    running = guest.is_running()
    found = []
    for disk in domain_xml.file_disks(guest.xml()):
        if running:
            chain = backing_chain(guest, disk.target_dev)
        elif disk.driver_type == 'qcow2':
            chain = _header_chain(disk.path, qemu_img)
        else:
            chain = [disk.path]     # raw: no backing file
        if any(_under(path, directory) for path in chain):
            found.append(disk.target_dev)
    return found


def _header_chain(path: str, qemu_img: QemuImg) -> list[str]:
    chain, fmt = [path], 'qcow2'
    while len(chain) <= MAX_DEPTH:
        info = qemu_img.info(chain[-1], fmt)
        if not info.backing_file:
            return chain
        if not info.backing_format:
            raise exception.UnsupportedDisk(
                f'{chain[-1]}: backing file {info.backing_file} has no '
                f'format recorded (it would be probed)')
        chain.append(os.path.join(os.path.dirname(chain[-1]),
                                  info.backing_file))
        fmt = info.backing_format
    raise exception.UnsupportedDisk(f'{path}: backing chain deeper than '
                                    f'{MAX_DEPTH}')
