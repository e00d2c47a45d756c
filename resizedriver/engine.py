"""The resize engine: Nova's four resize operations, without Nova.

Each method takes the per-instance lock, builds the operation's plan and
runs it under a journal, so that ``recover`` can roll back or complete it
after a crash.  Callers (the Nova adapter, the operator CLI) translate
their own objects into ``Flavor`` / ``Destination`` and back.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable, Iterator, Optional

from oslo_concurrency import lockutils
from oslo_config import cfg
from oslo_log import log as logging

from resizedriver import conf as rd_conf
from resizedriver import exception
from resizedriver import layout
from resizedriver import record as rd_record
from resizedriver import recovery
from resizedriver import transport
from resizedriver.env import CopyProgress, HostEnv
from resizedriver.host import Host
from resizedriver.journal import OUTER_OPERATIONS, Journal, JournalStore
from resizedriver.model import Destination, Flavor
from resizedriver.operations.confirm import ConfirmMigration
from resizedriver.operations.finish import FinishMigration
from resizedriver.operations.migrate import MigrateDiskAndPowerOff
from resizedriver.operations.revert import (DropDestinationGuest,
                                            FinishRevertMigration)
from resizedriver.plan import Plan
from resizedriver.record import ResizeRecord
from resizedriver.recovery import Recovered

LOG = logging.getLogger(__name__)


class ResizeEngine:
    def __init__(self, conf: cfg.ConfigOpts = rd_conf.CONF,
                 host: Optional[Host] = None,
                 progress: Optional[CopyProgress] = None) -> None:
        self.conf = conf
        self.env = HostEnv(conf=conf,
                           host=host or Host(conf.libvirt.connection_uri),
                           progress=progress)
        self.journals = JournalStore(conf.instances_path, self.env.hostname)

    @contextlib.contextmanager
    def locked(self, uuid: str, scope: str = '') -> Iterator[None]:
        """Serialize operations on one instance, across processes.

        ``scope`` names a separate lock for something that spans several
        operations (the CLI's whole resize), so they can nest.
        """
        layout.check_uuid(uuid)
        lock_path = (self.conf.resizedriver.lock_path or
                     os.path.join(self.conf.instances_path, 'locks'))
        os.makedirs(lock_path, exist_ok=True)
        with lockutils.lock(f'resizedriver-{uuid}{scope}', external=True,
                            lock_path=lock_path):
            yield

    def run(self, plan: Plan, context: dict[str, Any]) -> None:
        """Run ``plan`` under a journal holding ``context`` for recovery."""
        plan.run(self.journals.open(plan.name, plan.uuid, context))

    def resume(self, uuid: str, operation: str,
               plan_for: Optional[Callable[[Journal], Plan]] = None) -> bool:
        """Complete an interrupted confirm or revert instead of starting
        it over: a repeat is how Nova and operators retry them.
        ``plan_for`` rebuilds the caller's own plan (the Nova adapter's,
        with the objects of the repeated call) instead of the recovery
        plan of the journal."""
        for journal in self.journals.find(uuid):
            if journal.operation == operation:
                result = (recovery.run(journal,
                                       functools.partial(plan_for, journal))
                          if plan_for else recovery.recover(self.env, journal))
                if result.error:
                    raise exception.ResizeFailed(
                        str(result), step='recover', rolled_back=False)
                LOG.info('%s', result, instance_uuid=uuid)
                return True
        return False

    def recover(self, uuid: Optional[str] = None) -> list[Recovered]:
        """Roll back or complete every interrupted operation on this host
        (of one instance, or all), the destination half first.

        An instance with an unreadable journal is left alone and reported
        (its journal stays, so it stays refused): one damaged file must not
        keep nova-compute from starting or the other instances from being
        recovered.
        """
        journals, unreadable = self.journals.scan(uuid)
        results = [Recovered(u.uuid, u.operation, None, error=str(u.error))
                   for u in unreadable]
        for result in results:
            LOG.error('Recovery: %s', result, instance_uuid=result.uuid)
        damaged = {u.uuid for u in unreadable}
        for one in sorted({j.uuid for j in journals} - damaged):
            with self.locked(one):
                journals = [j for j in self.journals.find(one)
                            if j.operation not in OUTER_OPERATIONS]
                for journal in sorted(journals, key=recovery.sort_key):
                    result = recovery.recover(self.env, journal)
                    (LOG.error if result.error else LOG.warning)(
                        'Recovery: %s', result, instance_uuid=one)
                    results.append(result)
        return results

    def _layout(self, uuid: str) -> layout.InstanceLayout:
        return layout.InstanceLayout(self.conf.instances_path, uuid)

    def migrate_disk_and_power_off(self, uuid: str, new_flavor: Flavor,
                                   dest: Destination,
                                   live: Optional[str] = None) \
            -> ResizeRecord:
        """Power off, keep the source as ``<uuid>_resize``, copy to dest
        (or whatever the plan the chooser picks does instead; ``live``:
        ``chooser.LIVE_MODES``, default ``[resizedriver] live_resize``).

        Refusals (``ResizeRefused``) come before the guest is touched.
        """
        with self.locked(uuid):
            op = MigrateDiskAndPowerOff(
                self.env, uuid, new_flavor, dest,
                transport.for_host(dest.host, self.conf), live)
            self.run(op.plan(), op.journal_context())
            return op.record

    def finish_migration(self, record: ResizeRecord,
                         power_on: bool = True) -> None:
        """On the destination: make the copy the resized guest."""
        with self.locked(record.uuid):
            op = FinishMigration(self.env, record, power_on)
            self.run(op.plan(), op.journal_context())

    def confirm_migration(self, uuid: str) -> None:
        with self.locked(uuid):
            if self.resume(uuid, 'confirm_migration'):
                return
            rec = rd_record.load_pending(self._layout(uuid))
            op = ConfirmMigration(self.env, rec)
            self.run(op.plan(), op.journal_context())

    def finish_revert_migration(self, uuid: str,
                                power_on: bool = True) -> None:
        """Back to the source copy; a repeat after success is harmless."""
        with self.locked(uuid):
            if self.resume(uuid, 'finish_revert_migration'):
                return
            inst = self._layout(uuid)
            try:
                rec = rd_record.load_pending(inst)
            except exception.NotFound:
                self._ensure_running(uuid, power_on)
                return
            op = FinishRevertMigration(
                self.env, rec,
                transport.for_host(rec.destination.host, self.conf), power_on)
            self.run(op.plan(), op.journal_context())

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
