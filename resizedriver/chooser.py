"""Which plan a resize runs: one rule table, consulted in one place.

Migrate's validation asks :func:`choose` once, from the instance's disks,
the old and the new flavor and the :class:`~resizedriver.model.Topology`
it decided; the answer is kept in the resize record (``plan``) and in the
migrate journal, so finish, confirm, revert and recovery follow the plan
that ran instead of deciding again.  A new plan is one module plus one
rule here.

Rules, first match wins:

====  =========  ===========================  ===============================
rule  topology   instance / config            plan
====  =========  ===========================  ===============================
0     any        under Nova: a disk that is   ``upstream`` (``nova/
                 not a file in the instance   upstream.py``): Nova's own
                 directory (Ceph RBD but the  ``LibvirtDriver`` methods,
                 instance's own images of a
                 running guest; LVM,
                 ploop, a block or network    unchanged; decided by
                 device), ``images_type``     :func:`why_upstream` in the
                 not a file backend,          Nova adapter before the engine
                 attached volumes, no local   looks at the disks.  The CLI
                 root disk; a vTPM going to   refuses such domains instead
                 another hypervisor
1     same-host  the guest runs, the flavor   ``live`` (``operations/
                 only grows (swap as it is),  live.py``): vCPUs and memory
                 within the domain's          hot-plugged, disks grown with
                 headroom, nothing makes      ``blockResize``; the guest
                 hot-plug unsafe, live        never stops (Ceph RBD disks
                 resize not ``never``         too)
1b    any        under Nova: Ceph RBD disks   ``rbd`` (``operations/
                 (the instance's own, rule 0  rbd.py``): shutdown, an RBD
                 let them through), not rule  snapshot of each image as the
                 1; the guest runs, its       revert point, grow, define,
                 disks are an RBD root image  start (on the destination for
                 (and a config drive, one     a move); no image is copied
                 ephemeral and a swap image,  (the boot files are)
                 kernel and ramdisk files),
                 the new flavor asks for no
                 disk the instance lacks and
                 drops none
1c    any        under Nova: other Ceph RBD   ``upstream``: Nova's own
                 disks, not rule 1 or 1b      resize
2     same-host  every root/ephemeral disk    ``overlay``
                 is qcow2 on a disk device,   (``operations/overlay.py``):
                 ``use_cow_images`` is true,  the guest boots the new flavor
                 the caller offers it         on new overlays above the
                                              untouched ``<uuid>_resize``;
                                              nothing is copied while it is
                                              down; the chain is folded back
                                              live
3     other-     the guest runs, it has a     ``precopy`` (``operations/
      host       root or ephemeral disk file  precopy.py``): the disks are
                 and every one is qcow2 on a  copied while the guest runs,
                 disk device,                 then only what it wrote since,
                 ``use_cow_images`` and       with it down: downtime does
                 ``pre_copy`` are true, the   not grow with the disks
                 destination has room for
                 two copies (the fold),
                 the caller offers it
4     any        any                          ``copy``: power off, move the
                                              source to ``<uuid>_resize``,
                                              copy its disks to the
                                              destination (``migrate.py``,
                                              ``finish.py``, ``confirm.py``)
====  =========  ===========================  ===============================

Live resize ``always`` refuses, before anything is touched, a resize rule
1 does not take; ``never`` skips rule 1.  What stops rule 1 is listed by
``operations.live.blockers`` (and an integration's own, e.g. Nova's
attached volumes or pinned CPUs) and logged with the plan chosen instead.

The ``overlay``, ``precopy`` and ``copy`` plans revert the same way
(``revert.py``): back to the untouched ``<uuid>_resize`` (``precopy``
first folds the guest's last writes back into it); ``live`` reverts
live, or with one reboot where the hypervisor cannot take vCPUs away.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

from resizedriver import exception
from resizedriver.inventory import BOOT_ROLES
from resizedriver.model import GROWABLE, RBD, DiskFile, DiskRole, Topology

COPY = 'copy'
OVERLAY = 'overlay'
LIVE = 'live'
PRECOPY = 'precopy'
UPSTREAM = 'upstream'
RBD_COLD = 'rbd'
#: how live a resize may be (``--live``, ``[resizedriver] live_resize``)
LIVE_MODES = ('auto', 'always', 'never')
#: the plans the engine runs (rules 1-4)
ENGINE_PLANS = (LIVE, RBD_COLD, OVERLAY, PRECOPY, COPY)
#: every plan this version knows (and so finishes, confirms, reverts and
#: recovers); a record naming another was written by a newer version.
PLANS = ENGINE_PLANS + (UPSTREAM,)
#: Nova's ``[libvirt] images_type`` values whose disks are files in the
#: instance directory, which resizedriver owns
OWN_IMAGE_TYPES = ('default', 'qcow2', 'raw', 'flat')
#: the ``images_type`` whose disks resizedriver resizes (rules 1, 1b)
RBD_IMAGE_TYPE = 'rbd'
#: the RBD images the ``rbd`` plan takes (rule 1b): the root, ephemeral
#: and swap images it grows, and the config drive Nova imports into the
#: cluster, which stays as it is (a local ``disk.config`` file: rule 1c)
RBD_PLAN_ROLES = (DiskRole.ROOT, DiskRole.EPHEMERAL, DiskRole.SWAP,
                  DiskRole.CONFIG)


@dataclasses.dataclass(frozen=True)
class Choice:
    plan: str
    #: why, for the log: an operator should see which rule picked it
    reason: str


def why_upstream(images_type: str, disks_elsewhere: dict[str, str],
                 volumes: Sequence[str], has_root_file: bool,
                 vtpm_to_another_host: bool = False,
                 own_rbd: Sequence[str] = ()) -> Optional[str]:
    """Why a resize under Nova is Nova's own (rule 0), None when
    resizedriver owns it: what it has not proven its plans with goes the
    way upstream would take it, never worse.

    ``images_type``: ``[libvirt] images_type``; ``disks_elsewhere``:
    target device -> what it is, for every disk that is not a file in the
    instance directory (``domain_xml.disks_elsewhere``); ``volumes``: the
    target devices of attached Cinder volumes; ``has_root_file``: a root
    disk (a file in the instance directory, or one of ``own_rbd``) is
    there; ``vtpm_to_another_host``: the instance has a vTPM and goes to
    another hypervisor (Nova's migrate moves the swtpm state and its
    finish restores it; our plans copy disks only); ``own_rbd``: the
    target devices of the instance's own RBD images
    (``inventory.own_rbd``), given only where our plans could resize
    them (the guest runs): rules 1, 1b and 1c decide then.
    """
    why = []
    if images_type not in OWN_IMAGE_TYPES and \
            not (images_type == RBD_IMAGE_TYPE and own_rbd):
        why.append(f'images_type is {images_type}')
    if volumes:
        why.append(f'Cinder volumes are attached ({", ".join(volumes)}), '
                   f'which resizedriver\'s plans are not proven with')
    if not has_root_file:
        why.append('no root disk file in the instance directory (booted '
                   'from volume)')
    if vtpm_to_another_host:
        why.append('it has a vTPM and goes to another host (Nova moves its '
                   'swtpm state, resizedriver\'s plans do not)')
    why += [f'{dev} is {what}' for dev, what in
            sorted(disks_elsewhere.items())
            if dev not in volumes and dev not in own_rbd]
    return '; '.join(why) or None


def choose(topology: Topology, disks: list[DiskFile], *,
           use_cow_images: bool,
           offered: tuple[str, ...] = ENGINE_PLANS,
           live: str = 'never',
           live_blockers: Sequence[str] = (), running: bool = False,
           pre_copy: bool = False,
           precopy_blockers: Sequence[str] = (),
           rbd_blockers: Sequence[str] = ()) -> Choice:
    """The plan for this resize, by the rule table above.

    ``offered``: the plans the caller can run (an integration that has not
    been proven with a plan leaves it out).  ``live``: one of
    ``LIVE_MODES``; ``live_blockers``: why this resize cannot be live.
    ``running``: the guest runs; ``pre_copy``: ``[resizedriver]
    pre_copy``; ``precopy_blockers``: what else stops a pre-copy (the
    destination's free space, say); ``rbd_blockers``: what else stops
    the ``rbd`` plan (the integration's).
    """
    why_not_live = _why_not_live(topology, offered, live, live_blockers)
    if why_not_live is None:
        return Choice(LIVE, 'same host, the guest runs and has the '
                            'headroom: resized live, it never stops')
    if live == 'always':
        raise exception.ResizeRefused(
            f'a live resize was asked for but is not possible: '
            f'{why_not_live}')
    if any(d.format == RBD for d in disks):
        why_not_rbd = _why_not_rbd(offered, disks, running, rbd_blockers)
        if why_not_rbd is None:
            return Choice(RBD_COLD, f'Ceph RBD disk, not live '
                                    f'({why_not_live}): an RBD snapshot is '
                                    f'the revert point, nothing is copied')
        return Choice(UPSTREAM, f'Ceph RBD disks, not live: '
                                f'{why_not_live}; not the rbd plan: '
                                f'{why_not_rbd}')
    why_not = (_not_here(OVERLAY, topology, offered) or
               _needs_conversion(disks, use_cow_images))
    live_note = '' if live == 'never' else f'; not live: {why_not_live}'
    if why_not is None:
        return Choice(OVERLAY, 'same host, qcow2 disks: nothing is copied '
                               f'while the guest is down{live_note}')
    why_not_precopy = _why_not_precopy(topology, offered, disks,
                                       use_cow_images, running, pre_copy,
                                       precopy_blockers)
    if why_not_precopy is None:
        return Choice(PRECOPY, 'another host, the guest runs, qcow2 disks: '
                               'copied while it runs, then only what it '
                               'wrote since')
    return Choice(COPY, f'overlay plan not possible ({why_not}); pre-copy '
                        f'not possible ({why_not_precopy}){live_note}')


def _why_not_rbd(offered: tuple[str, ...], disks: list[DiskFile],
                 running: bool, blockers: Sequence[str]) -> Optional[str]:
    """Why the ``rbd`` plan cannot run (None: it may): what it is not
    proven with goes Nova's way."""
    if RBD_COLD not in offered:
        return 'this integration does not offer it'
    if not running:
        return 'the guest is not running'
    others = [d.name for d in disks if d.role not in BOOT_ROLES and
              (d.format != RBD or d.role not in RBD_PLAN_ROLES)]
    if others:
        return (f'disks other than the RBD root, ephemeral, swap and '
                f'config drive images and the kernel and ramdisk files '
                f'({", ".join(others)})')
    return '; '.join(blockers) if blockers else None


def _why_not_precopy(topology: Topology, offered: tuple[str, ...],
                     disks: list[DiskFile], use_cow_images: bool,
                     running: bool, pre_copy: bool,
                     blockers: Sequence[str]) -> Optional[str]:
    if PRECOPY not in offered:
        return 'this integration does not offer it'
    if topology is not Topology.OTHER_HOST:
        return f'the destination is {topology.value}, not another host ' \
               f'with its own storage'
    if not pre_copy:
        return 'pre_copy is false'
    if not running:
        return 'the guest is not running'
    if not any(d.role in GROWABLE for d in disks):
        return 'no root or ephemeral disk file to pre-copy (booted from ' \
               'volume)'
    return _needs_conversion(disks, use_cow_images) or \
        ('; '.join(blockers) if blockers else None)


def _needs_conversion(disks: list[DiskFile],
                      use_cow_images: bool) -> Optional[str]:
    """Why the overlay plan would need a conversion (None: it does not)."""
    if not use_cow_images:
        return 'use_cow_images is false: raw disks need a conversion'
    if any(d.format != 'qcow2' or not d.target_dev for d in disks
           if d.role in GROWABLE):
        return ('a root or ephemeral disk is not a qcow2 disk device: it '
                'would need a conversion')
    return None


def _why_not_live(topology: Topology, offered: tuple[str, ...], live: str,
                  blockers: Sequence[str]) -> Optional[str]:
    if live not in LIVE_MODES:
        raise exception.ResizeRefused(
            f'live resize must be one of {", ".join(LIVE_MODES)}, not '
            f'{live!r}')
    if live == 'never':
        return 'live resize is "never"'
    why_not = _not_here(LIVE, topology, offered)
    if why_not is None and blockers:
        return '; '.join(blockers)
    return why_not


def _not_here(plan: str, topology: Topology,
              offered: tuple[str, ...]) -> Optional[str]:
    """Why a same-host plan cannot run (None: it may): not offered, or
    the destination is elsewhere."""
    if plan not in offered:
        return 'this integration does not offer it'
    if topology is not Topology.SAME_HOST:
        return f'the destination is {topology.value}, not this host'
    return None


def check_known(plan: str) -> str:
    """``plan`` if this version can run it, else a clear refusal."""
    if plan not in PLANS:
        raise exception.ResizeRefused(
            f'the resize was made by the {plan!r} plan, which this version '
            f'of resizedriver does not know (it knows '
            f'{", ".join(PLANS)}): finish it with the version that began it')
    return plan
