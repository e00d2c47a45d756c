"""The resize engine: Nova's four resize operations, without Nova.

Each method takes the per-instance lock, builds the operation's plan and
runs it.  Callers (the Nova adapter, the operator CLI) translate their own
objects into ``Flavor`` / ``Destination`` and back.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

from oslo_concurrency import lockutils
from oslo_config import cfg
from oslo_log import log as logging

from resizedriver import conf as rd_conf
from resizedriver import exception
from resizedriver import layout
from resizedriver import record as rd_record
from resizedriver import transport
from resizedriver.env import CopyProgress, HostEnv
from resizedriver.host import Host
from resizedriver.model import Destination, Flavor
from resizedriver.operations.confirm import ConfirmMigration
from resizedriver.operations.finish import FinishMigration
from resizedriver.operations.migrate import MigrateDiskAndPowerOff
from resizedriver.operations.revert import (DropDestinationGuest,
                                            FinishRevertMigration)
from resizedriver.record import ResizeRecord

LOG = logging.getLogger(__name__)


class ResizeEngine:
    def __init__(self, conf: cfg.ConfigOpts = rd_conf.CONF,
                 host: Optional[Host] = None,
                 progress: Optional[CopyProgress] = None) -> None:
        self.conf = conf
        self.env = HostEnv(conf=conf,
                           host=host or Host(conf.libvirt.connection_uri),
                           progress=progress)

    @contextlib.contextmanager
    def locked(self, uuid: str) -> Iterator[None]:
        """Serialize operations on one instance, across processes."""
        layout.check_uuid(uuid)
        lock_path = (self.conf.resizedriver.lock_path or
                     os.path.join(self.conf.instances_path, 'locks'))
        os.makedirs(lock_path, exist_ok=True)
        with lockutils.lock(f'resizedriver-{uuid}', external=True,
                            lock_path=lock_path):
            yield

    def _layout(self, uuid: str) -> layout.InstanceLayout:
        return layout.InstanceLayout(self.conf.instances_path, uuid)

    def migrate_disk_and_power_off(self, uuid: str, new_flavor: Flavor,
                                   dest: Destination) -> ResizeRecord:
        """Power off, keep the source as ``<uuid>_resize``, copy to dest.

        Refusals (``ResizeRefused``) come before the guest is touched.
        """
        with self.locked(uuid):
            op = MigrateDiskAndPowerOff(
                self.env, uuid, new_flavor, dest,
                transport.for_host(dest.host, self.conf))
            op.plan().run()
            return op.record

    def finish_migration(self, record: ResizeRecord,
                         power_on: bool = True) -> None:
        """On the destination: make the copy the resized guest."""
        with self.locked(record.uuid):
            FinishMigration(self.env, record, power_on).plan().run()

    def confirm_migration(self, uuid: str) -> None:
        with self.locked(uuid):
            rec = rd_record.load_pending(self._layout(uuid))
            ConfirmMigration(self.env, rec).plan().run()

    def finish_revert_migration(self, uuid: str,
                                power_on: bool = True) -> None:
        """Back to the source copy; a repeat after success is harmless."""
        with self.locked(uuid):
            inst = self._layout(uuid)
            try:
                rec = rd_record.load_pending(inst)
            except exception.NotFound:
                self._ensure_running(uuid, power_on)
                return
            dest_transport = transport.for_host(rec.destination.host,
                                                self.conf)
            FinishRevertMigration(self.env, rec, dest_transport,
                                  power_on).plan().run()

    def _ensure_running(self, uuid: str, power_on: bool) -> None:
        guest = self.env.host.lookup(uuid)
        if guest is None:
            raise exception.NotFound(
                f'nothing to revert for {uuid}: no pending resize and no '
                f'domain')
        LOG.info('No pending resize; instance already reverted',
                 instance_uuid=uuid)
        if power_on:
            guest.ensure_running(self.conf.resizedriver.start_timeout)

    def drop_destination_guest(self, uuid: str) -> None:
        """On the destination of a reverted move to another hypervisor."""
        with self.locked(uuid):
            DropDestinationGuest(self.env, uuid).plan().run()

    def pending(self) -> list[ResizeRecord]:
        return rd_record.all_pending(self.conf.instances_path)
