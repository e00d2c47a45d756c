"""The source's pre-copy tops: the files the snapshots of the ``precopy``
plan put above each root/ephemeral disk, ``<name>.top`` and
``<name>.top.<n>``, that hold what the guest wrote since.

Folding them back into their disks (the undo of a snapshot, a revert),
true to the bytes whatever a crash left, and refusing to boot, define or
resize a guest beside tops it does not read: a top holds writes its disk
lacks until it is folded.
"""

from __future__ import annotations

import functools
import os
import re
import time
from typing import TYPE_CHECKING, Callable, Optional

import libvirt
from oslo_log import log as logging

from resizedriver import blockjob
from resizedriver import domain_xml
from resizedriver import exception
from resizedriver import fileutil
from resizedriver import transport
from resizedriver.layout import InstanceLayout
from resizedriver.model import GROWABLE, role_for_name

if TYPE_CHECKING:
    from resizedriver.env import HostEnv
    from resizedriver.guest import Guest

LOG = logging.getLogger(__name__)
#: the source's new active layer above a frozen disk: ``<name>.top`` in
#: the first round, ``<name>.top.<n>`` above it in round ``n``
TOP = '.top'
#: ``<name>.top.pivoted``: every top of ``<name>`` has its data in it (the
#: guest pivoted to it, still paused, or the tops were committed offline);
#: the tops left are stale and only go
PIVOTED = '.pivoted'
#: seconds between tries of a fold that failed with the guest paused
RETRY_SECONDS = 2.0
#: failures of libvirt, QEMU's block job or the filesystem, which a
#: later try may not meet; our own refusals would meet the same again
_PASSING = (blockjob.FoldFailed, libvirt.libvirtError, OSError)
_TOP_FILE = re.compile(r'^(?P<disk>.+)\.top(?:\.(?P<round>[0-9]+))?$')


def top_path(inst: InstanceLayout, name: str, round_: int) -> str:
    """Round ``round_``'s top of disk ``name``."""
    return inst.path(name + TOP if round_ == 1 else f'{name}{TOP}.{round_}')


def names(paths: list[str]) -> str:
    """Tops by file name, for messages."""
    return ', '.join(map(os.path.basename, paths)) or 'no top'


def fold_tops_back(env: 'HostEnv', inst: InstanceLayout,
                   redefine: Optional[Callable[[], object]]) -> None:
    """:func:`_fold_once`, tried again while a failure leaves the guest
    paused -- pivoted, or it could not be told -- until the deadline a
    commit of the tops has (``transport.deadlines``, their size): a
    paused guest waits for its tops to go, and nothing else would take
    them away before a service restart (Nova's unpause and the next
    resize are refused beside them).  Each try reads again what is
    there, so the first that finds the guest pivoted drops its tops and
    resumes it.  A failure that leaves the guest running (on its top,
    as it was) or off is the caller's at once, and so is a refusal of
    ours (what it found would be found again); one at the deadline
    too, the guest still paused."""
    deadline = time.monotonic() + transport.deadlines(env.conf).for_size(
        sum(_bytes(stack) for stack in tops_of(inst).values()))
    while True:
        try:
            _fold_once(env, inst, redefine)
            return
        except _PASSING as e:
            left = deadline - time.monotonic()
            if left <= 0 or not _maybe_paused(env, inst):
                raise
            LOG.warning('Folding the pre-copy tops back failed with the '
                        'guest paused (%s); trying again in %.0f s (for '
                        'at most %.0f s more)', e, RETRY_SECONDS, left,
                        instance_uuid=inst.uuid)
            time.sleep(RETRY_SECONDS)


def _maybe_paused(env: 'HostEnv', inst: InstanceLayout) -> bool:
    """Whether the guest is (or, unreadable, may be) paused."""
    try:
        guest = env.host.lookup(inst.uuid)
        return guest is not None and guest.is_paused()
    except Exception:
        LOG.exception('Cannot tell whether the guest is paused',
                      instance_uuid=inst.uuid)
        return True


def _fold_once(env: 'HostEnv', inst: InstanceLayout,
               redefine: Optional[Callable[[], object]]) -> None:
    """Undo of the snapshot, and the revert's step: the data of every top
    of every disk (one per pre-copy round, stacked) back in the disk, the
    tops gone.  Needs nothing but what is there (after a crash the
    journal knows no disks): the tops in the instance directory, the
    markers and the guest that may read them.

    A guest that runs on a top is committed live, down through the tops
    below it, and pivoted (``blockjob.commit_active``); one that runs on
    the disk itself (seen so: :func:`_mark_pivoted_away`) was
    pivoted before a crash, paused until the tops went, and only has to
    lose them and go on.  With no guest running a
    disk's whole stack is committed offline at once: true to the bytes
    whatever a crash left, since an image under a top never holds writes
    newer than the top's (the snapshots froze them; a pivot keeps the
    guest paused until the tops are gone; nothing defines a guest on a
    disk while its tops exist: :func:`refuse_if_topped`).  Once a disk
    holds its tops' data, the marker ``<name>.top.pivoted`` says so
    before any top goes: a lower top committed again over the disk would
    put older data over what the upper ones wrote.  ``redefine`` (if
    any) then replaces a stopped definition that named a top of a disk
    that is here (a revert defines one of its own next)."""
    guest = env.host.lookup(inst.uuid)
    running = guest is not None and guest.is_running()
    # decided before anything goes: a run killed after the markers and
    # before its redefinition leaves only stale tops, and the definition
    # still naming them
    stale_definition = guest is not None and not running and \
        _names_tops_of_disks_here(guest.xml(), inst)
    _resume_pivoted(guest, inst)        # a crash came before the resume
    tops = tops_of(inst)
    if tops and guest is not None and running:
        _fold_tops_live(env, guest, inst, tops)
        return
    qemu_img = env.qemu_img()
    for name, stack in tops.items():
        LOG.info('Committing %s into %s offline', ', '.join(stack), name,
                 instance_uuid=inst.uuid)
        qemu_img.commit(stack[-1], inst.path(name), size=_bytes(stack))
        _mark_folded(inst, name, stack)
    if stale_definition and redefine is not None:
        LOG.info('Replacing the stopped definition that names a pre-copy '
                 'top', instance_uuid=inst.uuid)
        redefine()
    _resume_pivoted(guest, inst)


def _names_tops_of_disks_here(xml: str, inst: InstanceLayout) -> bool:
    """Whether disks of ``xml`` are pre-copy tops of the instance (that
    may be gone already), each of a disk that is in its directory.  A
    disk not there (the directory still in ``_resize``, or a stray one
    in its place) has its tops elsewhere: replaced, the definition would
    boot it without them once the directory is back."""
    named = [match['disk'] for d in domain_xml.file_disks(xml)
             if os.path.dirname(d.path) == inst.dir and
             (match := _TOP_FILE.match(os.path.basename(d.path)))]
    return bool(named) and all(os.path.exists(inst.path(name))
                               for name in named)


def _bytes(stack: list[str]) -> int:
    """What committing the tops ``stack`` moves: their data (at most their
    files' sizes), which its deadline scales with, as a copy's does."""
    return sum(os.path.getsize(t) for t in stack)


def _mark_folded(inst: InstanceLayout, name: str, stack: list[str]) -> None:
    """Disk ``name`` holds the data of its tops ``stack``: its active top
    becomes the marker (durably), and the ones below are stale."""
    fileutil.rename_durably(stack[-1], inst.path(name + TOP + PIVOTED))


def _fold_tops_live(env: 'HostEnv', guest: 'Guest', inst: InstanceLayout,
                    tops: dict[str, list[str]]) -> None:
    """Each disk the guest reads through tops committed into and pivoted
    to; its marker is then made (the guest still paused), the stale tops
    go, and only then does the guest run again: a crash in between
    leaves the marker that has the next run finish it."""
    for name, stack in tops.items():
        mark = functools.partial(_mark_folded, inst, name, stack)
        live = guest.live_xml()
        dev = next(filter(None, (dev_reading(live, t) for t in stack)), None)
        if dev is not None:
            blockjob.commit_active(
                guest, dev, inst.path(name),
                transport.deadlines(env.conf).for_size(_bytes(stack)), mark)
        else:
            _mark_pivoted_away(live, inst, name, stack)
    _resume_pivoted(guest, inst)


def _resume_pivoted(guest: Optional['Guest'], inst: InstanceLayout) -> None:
    """For each disk with a marker: its stale tops go, then a guest
    paused for the pivot is resumed, then the markers go.

    A paused guest that reads none of a disk's tops was pivoted from
    them (nothing else takes a guest off its top) and has not written
    since: that disk is marked first.  Resumed with such a disk
    unmarked, the guest would write to it while its tops still count as
    newer, and a later offline fold would commit them over those
    writes."""
    if not os.path.isdir(inst.dir):
        return
    if guest is not None and guest.is_paused():
        _mark_pivoted(guest, inst)
    markers = _markers(inst)
    if not markers:
        return
    tops = tops_of(inst)
    for name in markers:
        for top in reversed(tops.get(name, [])):
            fileutil.remove_durably(top)
    if guest is not None and guest.is_paused():
        LOG.info('Resuming the guest paused for its pivot',
                 instance_uuid=inst.uuid)
        guest.resume()
    for name in markers:
        fileutil.remove_durably(inst.path(name + TOP + PIVOTED))


def _markers(inst: InstanceLayout) -> list[str]:
    """Names of the disks marked as holding their tops' data."""
    if not os.path.isdir(inst.dir):
        return []
    names = [f[:-len(TOP + PIVOTED)] for f in sorted(os.listdir(inst.dir))
             if f.endswith(TOP + PIVOTED)]
    return [name for name in names if role_for_name(name) in GROWABLE]


def _mark_pivoted(guest: 'Guest', inst: InstanceLayout) -> None:
    """Mark each disk with tops that the (paused) guest no longer reads
    through any of them."""
    live = guest.live_xml()
    marked = _markers(inst)
    for name, stack in tops_of(inst).items():
        if name not in marked and not any(dev_reading(live, t)
                                          for t in stack):
            _mark_pivoted_away(live, inst, name, stack)


def _mark_pivoted_away(live: str, inst: InstanceLayout, name: str,
                       stack: list[str]) -> None:
    """Mark disk ``name``, whose guest reads none of its tops, folded.  It
    counts as pivoted from them only when it is seen reading the disk
    itself: reading it by another name (a symlinked instances path), it
    may be writing to a top that would be taken for stale."""
    if dev_reading(live, inst.path(name)) is None:
        raise exception.ResizeDriverError(
            f'the guest reads neither {names(stack)} nor {inst.path(name)}'
            f': cannot tell whether {name} holds the data of its pre-copy '
            f'tops; leaving them')
    LOG.info('%s was pivoted away from before an interruption: marking it '
             'folded', name, instance_uuid=inst.uuid)
    _mark_folded(inst, name, stack)


def refuse_if_topped(inst: InstanceLayout) -> None:
    """Refuse to define, start or resize a guest while a pre-copy top or
    a fold's marker is in its directory: the top holds writes its disk
    lacks (a guest booted on the disk would first hide them, then have
    them committed over its own; a resize would copy the disk without
    them, or take it for a round's top) and the marker says a fold is
    not finished (recovery takes the top back first)."""
    for name, stack in tops_of(inst).items():
        raise exception.RecoveryNeeded(
            f'{stack[0]} holds writes of the guest that {name} lacks (an '
            f'interrupted pre-copy left it): run "resizedriver recover '
            f'{inst.uuid}" (nova-compute does at start) first')
    if markers := _markers(inst):
        raise exception.RecoveryNeeded(
            f'{inst.path(markers[0] + TOP + PIVOTED)}: an interrupted fold '
            f'of pre-copy tops left it: run "resizedriver recover '
            f'{inst.uuid}" (nova-compute does at start) first')


def refuse_to_start_beside_tops(xml: str, inst: InstanceLayout) -> None:
    """Refuse to start the definition ``xml`` unless it reads the last
    top of each disk that has tops not yet folded: booted on the disk or
    a lower top, the guest would hide the newer data, and the fold after
    would take the tops for stale (it must be redefined first)."""
    marked = _markers(inst)
    for name, stack in tops_of(inst).items():
        if name not in marked and dev_reading(xml, stack[-1]) is None:
            raise exception.RecoveryNeeded(
                f'{stack[-1]} holds the newest writes of {name} and the '
                f'definition does not read it: not starting the guest; run '
                f'"resizedriver recover {inst.uuid}" (nova-compute does at '
                f'start)')


def tops_of(inst: InstanceLayout, directory: Optional[str] = None
          ) -> dict[str, list[str]]:
    """Disk name -> its snapshot tops in ``directory`` (default the
    instance's), lowest round first."""
    directory = directory or inst.dir
    if not os.path.isdir(directory):
        return {}
    found: dict[str, list[tuple[int, str]]] = {}
    for f in os.listdir(directory):
        match = _TOP_FILE.match(f)
        if match and role_for_name(match['disk']) in GROWABLE:
            found.setdefault(match['disk'], []).append(
                (int(match['round'] or 1), os.path.join(directory, f)))
    return {name: [path for _n, path in sorted(stack)]
            for name, stack in sorted(found.items())}


def dev_reading(xml: str, path: str) -> Optional[str]:
    """The target dev whose active image is ``path`` in ``xml``."""
    for disk in domain_xml.file_disks(xml):
        if disk.path == path:
            return disk.target_dev
    return None
