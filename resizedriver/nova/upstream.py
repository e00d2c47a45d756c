"""The ``upstream`` plan: Nova's own resize, for what resizedriver does not
own (chooser rule 0, ``chooser.why_upstream``).

=========================  ==============================================
call                       what runs
=========================  ==============================================
migrate_disk_and_power_off Nova's ``LibvirtDriver`` method, unchanged (its
(source)                   own refusals: shrink, LVM); then the record,
                           plan ``upstream``, in the ``<uuid>_resize``
                           Nova made.  The disk info handed to the
                           destination is Nova's own
finish_migration           Nova's, recognised by Nova's disk info (a list,
(destination)              where ours is a record)
confirm_migration          Nova's; its clean-up removes ``<uuid>_resize``
(source)                   and the record in it
destroy (destination,      Nova's
revert)
finish_revert_migration    Nova's; the record comes back into ``<uuid>``
(source)                   with the directory and is dropped
crash recovery             none of ours: no journal is written; Nova's
                           start-up handles its own states
=========================  ==============================================

A crash after Nova's migrate renamed the directory and before the record
was written leaves a ``<uuid>_resize`` with no record and no journal of
ours, which none of our plans ever leaves (each writes its record before
the move, and journals every step): that, too, is Nova's
(:func:`is_pending`), so confirm and revert still go to Nova's methods.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Optional

from nova.virt import driver as nova_driver
from nova.virt.libvirt import utils as libvirt_utils
from oslo_log import log as logging

from resizedriver import chooser
from resizedriver import domain_xml
from resizedriver import exception
from resizedriver import fileutil
from resizedriver import inventory
from resizedriver import record as rd_record
from resizedriver.journal import JournalStore
from resizedriver.layout import RECORD_NAME, InstanceLayout
from resizedriver.model import (Destination, DiskRole, Topology,
                                role_for_name)
from resizedriver.nova import translate
from resizedriver.record import ResizeRecord
from resizedriver.summary import Summary

LOG = logging.getLogger(__name__)


def volume_devices(block_device_info: Optional[dict]) -> list[str]:
    """Target devices (``vdb``) of the attached Cinder volumes."""
    return sorted(os.path.basename(bdm.get('mount_device') or '?') for bdm
                  in nova_driver.block_device_info_get_mapping(
                      block_device_info))


def reason(guest_xml: str, inst: InstanceLayout, images_type: str,
           block_device_info: Optional[dict],
           vtpm_to_another_host: bool,
           rbd_ours: bool = False) -> Optional[str]:
    """Why this resize must be Nova's own, None if it is ours (or the
    chooser's to decide).  ``rbd_ours``: the instance's own RBD images
    may be resized by our plans (the guest runs: ``live`` or ``rbd``,
    chooser rules 1 and 1b)."""
    own_rbd = inventory.own_rbd(guest_xml, inst.uuid) if rbd_ours else {}
    names = list(own_rbd.values()) + [
        os.path.basename(d.path) for d in domain_xml.file_disks(guest_xml)
        if os.path.dirname(d.path) == inst.dir]
    has_root = any(role_for_name(n) is DiskRole.ROOT for n in names)
    return chooser.why_upstream(
        images_type, domain_xml.disks_elsewhere(guest_xml, inst.dir),
        volume_devices(block_device_info), has_root, vtpm_to_another_host,
        list(own_rbd))


def leaked_resize_snapshot(image_backend: Any, instance: Any) \
        -> Optional[str]:
    """Why Nova's own resize of this instance would fail after power-off,
    None if not: its RBD root disk still has the ``nova-resize``
    snapshot of an earlier resize.

    Nova's finish takes that snapshot (the revert point) and its confirm
    and revert remove it; one left behind (a confirm or revert that never
    ran to its end) makes the next finish fail taking it again (rbd's
    ImageExists), the guest already off and the instance in ERROR.  It
    is there to see before.  Only for backends with snapshots of their
    own (``SUPPORTS_CLONE``, as Nova's confirm asks): asking another
    backend for its root disk may write its ``disk.info``."""
    if not image_backend.backend().SUPPORTS_CLONE:
        return None
    root = image_backend.by_name(instance, 'disk')
    snap = libvirt_utils.RESIZE_SNAPSHOT_NAME
    if not root.exists() or not root.driver.exists(root.rbd_name,
                                                   snapshot=snap):
        return None
    return (f'the root disk {root.driver.pool}/{root.rbd_name} still has '
            f'the snapshot {root.rbd_name}@{snap} of an earlier resize, '
            f'which Nova\'s finish would take again after power-off and '
            f'fail: remove it (rbd snap rm) if no resize of this instance '
            f'is pending')


def is_novas_disk_info(disk_info: str) -> bool:
    """Nova's disk info is a JSON list of disks; ours is a record."""
    try:
        return isinstance(json.loads(disk_info), list)
    except ValueError:
        return False


def write_record(inst: InstanceLayout, *, name: str,
                 destination: Destination, old_flavor: Any, new_flavor: Any,
                 source_xml: str, was_running: bool, reason: str) -> None:
    """The pending resize's record, plan ``upstream``, in the
    ``<uuid>_resize`` Nova's migrate made: ``resizedriver status`` lists
    it (with ``reason``, why it went Nova's way), and confirm and revert
    follow it to Nova's methods."""
    ResizeRecord(
        uuid=inst.uuid, name=name, source_host=socket.gethostname(),
        source_instances_path=inst.instances_path, destination=destination,
        topology=Topology.of(destination.same_hypervisor,
                             destination.same_hypervisor),
        old_flavor=translate.flavor(old_flavor),
        new_flavor=translate.flavor(new_flavor), source_xml=source_xml,
        disks=[], was_running=was_running, plan=chooser.UPSTREAM,
        summary=Summary(reason=reason),
    ).write(inst.in_resize_dir(RECORD_NAME))


def is_pending(inst: InstanceLayout, journals: JournalStore) -> bool:
    """Whether the resize pending on this (source) host is Nova's own:
    its record says so, or a ``<uuid>_resize`` has neither a record nor a
    journal of ours (see the module's docstring)."""
    try:
        return rd_record.load_pending(inst).plan == chooser.UPSTREAM
    except exception.NotFound:
        return os.path.isdir(inst.resize_dir) and \
            not journals.find(inst.uuid)


def drop_reverted_record(inst: InstanceLayout) -> None:
    """After Nova's revert moved ``<uuid>_resize`` back, the record it
    carried along into ``<uuid>`` is no file of the instance's (nor
    before a new resize, should a crash have left it there)."""
    path = inst.path(RECORD_NAME)
    try:
        if ResizeRecord.read(path).plan != chooser.UPSTREAM:
            return
    except (OSError, exception.ResizeRefused):
        return                # none, or not the upstream plan's to drop
    fileutil.remove_durably(path)
    LOG.debug('Dropped the upstream plan\'s record %s', path,
                  instance_uuid=inst.uuid)
