"""The resize engine: Nova's four resize operations, without Nova.

The engine owns the operations' entry points: each method takes the
per-instance lock, completes an interrupted confirm or revert instead of
starting it again, loads the pending resize record, decides what a call
with nothing pending does, and runs the operation's plan under a journal,
so that ``recover`` can roll back or complete it after a crash.

What the plans are made of comes from an ``Implementation``: factories of
the operation objects (``MigrateDiskAndPowerOff``, ``FinishMigration``,
``ConfirmMigration``, ``FinishRevertMigration`` by default).  An
integration supplies its own, one class per integration (the Nova
adapter's ``NovaImplementation``, built per call with that call's Nova
objects), whose operations replace steps with its own (power off, VIFs,
volumes, the guest XML, define and start) and whose journals name it, so
that recovery rebuilds its plans (``resizedriver.recovery``).  Callers
(the Nova adapter, the operator CLI) translate their own objects into
``Flavor`` / ``Destination`` and the engine's exceptions back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, ContextManager, Iterator, Optional, Protocol

from oslo_concurrency import lockutils
from oslo_config import cfg
from oslo_log import log as logging

from resizedriver import conf as rd_conf
from resizedriver import exception
from resizedriver import layout
from resizedriver import record as rd_record
from resizedriver import recovery
from resizedriver import summary
from resizedriver import transport
from resizedriver.env import CopyProgress, HostEnv, RbdImages
from resizedriver.host import Host
from resizedriver.journal import OUTER_OPERATIONS, Journal, JournalStore
from resizedriver.model import Destination, Flavor
from resizedriver.operations.confirm import ConfirmMigration
from resizedriver.operations.finish import AfterFinish, FinishMigration
from resizedriver.operations import plans, sourcetops
from resizedriver.operations.migrate import MigrateDiskAndPowerOff
from resizedriver.operations.revert import (DropDestinationGuest,
                                            FinishRevertMigration)
from resizedriver.plan import Plan
from resizedriver.record import ResizeRecord
from resizedriver.recovery import Recovered
from resizedriver.transport import Transport

LOG = logging.getLogger(__name__)


class Operation(Protocol):
    """What an entry point runs: the plan, and what its journal keeps for
    recovery to rebuild it (the operation class's ``from_journal``)."""

    def plan(self) -> Plan: ...

    def journal_context(self) -> dict[str, Any]: ...


class Implementation:
    """The operations the entry points run: the engine's own.

    An integration subclasses it to put its own steps into the plans while
    the engine keeps the locking, resuming, record and journal handling,
    which every caller then gets the same way.  Each method is called
    with the instance's lock held.
    """

    def migrate(self, env: HostEnv, uuid: str, new_flavor: Flavor,
                dest: Destination, dest_transport: Transport,
                live: Optional[str]) -> MigrateDiskAndPowerOff:
        return MigrateDiskAndPowerOff(env, uuid, new_flavor, dest,
                                      dest_transport, live)

    def finish(self, env: HostEnv, record: ResizeRecord,
               power_on: bool) -> Operation:
        return FinishMigration(env, record, power_on)

    def confirm(self, env: HostEnv, record: ResizeRecord) -> Operation:
        return ConfirmMigration(env, record)

    def revert(self, env: HostEnv, record: ResizeRecord,
               power_on: bool) -> Operation:
        return FinishRevertMigration(
            env, record, transport.for_host(record.destination.host,
                                            env.conf), power_on)

    def nothing_to_revert(self, env: HostEnv, uuid: str,
                          power_on: bool) -> None:
        """A revert with no pending resize: one that already succeeded
        (a repeat must be harmless), so the guest only has to run."""
        sourcetops.refuse_if_topped(layout.InstanceLayout(env.instances_path,
                                                       uuid))
        guest = env.host.lookup(uuid)
        if guest is None:
            raise exception.NotFound(
                f'nothing to revert for {uuid}: no pending resize and no '
                f'domain')
        LOG.info('No pending resize; instance already reverted',
                 instance_uuid=uuid)
        if power_on:
            guest.ensure_running(env.conf.resizedriver.start_timeout)

    def resume(self, env: HostEnv, journal: Journal,
               power_on: bool) -> Recovered:
        """Complete the interrupted confirm or revert of ``journal`` for a
        repeated call (``power_on``: the repeated revert's).  The engine
        has no objects of a call to add, so it completes it as recovery
        does, with the plan of the implementation that wrote the journal:
        one the Nova adapter wrote never gets the engine's define and
        VIFs (Nova's objects are the authority on those)."""
        return recovery.recover(env, journal)


#: the engine's own operations: what the entry points run by default
OWN = Implementation()


class ResizeEngine:
    def __init__(self, conf: cfg.ConfigOpts = rd_conf.CONF,
                 host: Optional[Host] = None,
                 progress: Optional[CopyProgress] = None,
                 rbd: Optional[RbdImages] = None) -> None:
        self.conf = conf
        self.env = HostEnv(conf=conf,
                           host=host or Host(conf.libvirt.connection_uri),
                           progress=progress, rbd=rbd)
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

    def _cluster(self) -> ContextManager[None]:
        """One connection to the Ceph cluster for the whole operation
        (``RbdImages.session``), where the integration gives one: a
        librados connect takes longer than most calls it serves, and the
        ``rbd`` plan makes some of its calls with the guest down."""
        if self.env.rbd is None:
            return contextlib.nullcontext()
        return self.env.rbd.session()

    def run(self, plan: Plan, context: dict[str, Any]) -> None:
        """Run ``plan`` under a journal holding ``context`` for recovery."""
        plan.run(self.journals.open(plan.name, plan.uuid, context))

    def _resume(self, uuid: str, operation: str, impl: Implementation,
                power_on: bool) -> bool:
        """Complete an interrupted confirm or revert instead of starting
        it over: a repeat is how Nova and operators retry them.  ``impl``
        says with which plan (``Implementation.resume``)."""
        for journal in self.journals.find(uuid):
            if journal.operation == operation:
                result = impl.resume(self.env, journal, power_on)
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
        return self._recover(uuid, defer_live_folds=False)[0]

    def recover_at_start(self) -> tuple[list[Recovered], list[str]]:
        """:meth:`recover` for a service's start, without its long part:
        a fold whose guest runs on its valid chain (``_completed_later``)
        is left, and its instance returned, for :meth:`complete_folds`
        after the start (a pull moves a whole disk's data: an hour per
        disk, one instance after another, had nova-compute report down
        and invite an evacuation of guests that run).  What restores
        state (rollbacks, reverts, confirms that drop files) runs now,
        before Nova initialises the instances that depend on it, and so
        does a fold whose guest is off: Nova may start it next, on a
        chain that must be Nova's."""
        return self._recover(None, defer_live_folds=True)

    def complete_folds(self, uuids: list[str]) -> list[Recovered]:
        """Complete what :meth:`recover_at_start` left (run it in the
        background), each fold's progress logged for its instance."""
        results = []
        for uuid in uuids:
            LOG.info('Completing the fold left at start',
                     instance_uuid=uuid)
            env = dataclasses.replace(self.env,
                                      progress=recovery.LoggedProgress(uuid))
            try:
                results += self._recover_instance(env, uuid, False)[0]
            except Exception:      # one instance must not stop the others
                LOG.exception('Completing the fold failed; "resizedriver '
                              'recover %s" tries again', uuid,
                              instance_uuid=uuid)
        return results

    def _recover(self, uuid: Optional[str], defer_live_folds: bool) \
            -> tuple[list[Recovered], list[str]]:
        journals, unreadable = self.journals.scan(uuid)
        results = [Recovered(u.uuid, u.operation, None, error=str(u.error))
                   for u in unreadable]
        for result in results:
            LOG.error('Recovery: %s', result, instance_uuid=result.uuid)
        damaged = {u.uuid for u in unreadable}
        later = []
        for one in sorted({j.uuid for j in journals} - damaged):
            done, left = self._recover_instance(self.env, one,
                                                defer_live_folds)
            results += done
            if left:
                later.append(one)
        return results, later

    def _recover_instance(self, env: HostEnv, uuid: str,
                          defer_live_folds: bool) \
            -> tuple[list[Recovered], bool]:
        """Recover one instance's journals; with ``defer_live_folds``,
        leave those of a fold under a running guest (True if any)."""
        results, left = [], False
        with self.locked(uuid):
            journals = [j for j in self.journals.find(uuid)
                        if j.operation not in OUTER_OPERATIONS]
            for journal in sorted(journals, key=recovery.sort_key):
                if defer_live_folds and _completed_later(journal) and \
                        self._runs(uuid):
                    LOG.info('Recovery: %s is a fold under the running '
                             'guest: left for after the start',
                             journal.operation, instance_uuid=uuid)
                    left = True
                    continue
                result = recovery.recover(env, journal)
                (LOG.error if result.error else LOG.warning)(
                    'Recovery: %s', result, instance_uuid=uuid)
                results.append(result)
        return results, left

    def _runs(self, uuid: str) -> bool:
        """Whether the guest runs; not when that cannot be told (its
        journal is then recovered now, as any other)."""
        try:
            guest = self.env.host.lookup(uuid)
            return guest is not None and guest.is_running()
        except Exception:
            LOG.exception('Cannot tell whether the guest runs',
                          instance_uuid=uuid)
            return False

    def _layout(self, uuid: str) -> layout.InstanceLayout:
        return layout.InstanceLayout(self.conf.instances_path, uuid)

    def migrate_disk_and_power_off(self, uuid: str, new_flavor: Flavor,
                                   dest: Destination,
                                   live: Optional[str] = None,
                                   impl: Implementation = OWN) \
            -> ResizeRecord:
        """Power off, keep the source as ``<uuid>_resize``, copy to dest
        (or whatever the plan the chooser picks does instead; ``live``:
        ``chooser.LIVE_MODES``, default ``[resizedriver] live_resize``).

        Refusals (``ResizeRefused``) come before the guest is touched.
        """
        dest_transport = transport.for_host(dest.host, self.conf)
        # one connection to the destination for validation, the copies
        # and the commands with the guest off (each would open its own)
        with self.locked(uuid), dest_transport.session(), \
                self._cluster():
            self._complete_after_finish(uuid)
            op = impl.migrate(self.env, uuid, new_flavor, dest,
                              dest_transport, live)
            self.run(op.plan(), op.journal_context())
            # the facts gathered since the record was written (power-off,
            # copies), for ``status`` while the resize is pending
            op.record.write(self._layout(uuid).in_resize_dir(
                layout.RECORD_NAME))
            return op.record

    def finish_migration(self, record: ResizeRecord, power_on: bool = True,
                         impl: Implementation = OWN) -> None:
        """On the destination: make the copy the resized guest."""
        with self.locked(record.uuid), self._cluster():
            self._complete_after_finish(record.uuid, record)
            op = impl.finish(self.env, record, power_on)
            self.run(op.plan(), op.journal_context())
            if power_on:    # start is the plan's last step
                record.summary.started_again_at = summary.now()
            self._after_finish(AfterFinish(self.env, record))
            record.summary.finished_at = summary.now()
            LOG.info('%s', summary.line(record.uuid, record.plan,
                                        record.topology.value,
                                        record.summary),
                     instance_uuid=record.uuid)
            self._keep_summary(record)

    def _keep_summary(self, record: ResizeRecord) -> None:
        """Put the finished summary into the pending record when it is
        on this host (the same hypervisor), for ``status``; another
        host's source keeps what its migrate knew."""
        if not record.same_hypervisor:
            return
        try:
            pending = rd_record.load_pending(record.source)
        except exception.NotFound:
            return
        pending.summary = record.summary
        pending.write(record.source.in_resize_dir(layout.RECORD_NAME))

    def _complete_after_finish(self, uuid: str,
                               incoming: Optional[ResizeRecord] = None) \
            -> None:
        """Complete what an earlier finish or confirm left undone here
        (its fold failed: ``_run_or_leave``) before anything else is done
        to the instance: a new finish or migrate would otherwise be
        refused for the journal, or read a chain that is not Nova's yet.
        A failure again refuses the operation before it touched anything.
        A finish of another resize (``incoming``) means the instance left
        this host since and came back: what an after-finish journal would
        fold is gone, and the names it would fold are the new copies' --
        it is dropped, not run.  (A confirm's is completed by the migrate
        that made the instance leave.)"""
        for journal in self.journals.find(uuid):
            if not _completed_later(journal) or (
                    incoming is not None and
                    journal.operation == ConfirmMigration.OPERATION):
                continue
            if incoming is not None and \
                    journal.context.get('record') != incoming.to_dict():
                LOG.warning('Dropping %s of an earlier resize: the '
                            'instance left this host since', journal.path,
                            instance_uuid=uuid)
                journal.close()
                continue
            result = recovery.recover(self.env, journal)
            if result.error:
                raise exception.ResizeRefused(str(result))
            LOG.info('%s', result, instance_uuid=uuid)

    def _after_finish(self, after: AfterFinish) -> None:
        """Run what the plan does once the resized guest runs
        (``_run_or_leave``): the finish is done and the guest runs
        (``AfterFinish``)."""
        self._run_or_leave(after.plan(), after.journal_context())

    def _run_or_leave(self, plan: Plan, context: dict[str, Any]) -> bool:
        """Run a forward plan that leaves the guest running on a valid
        chain whatever happens in it; a failure is the log's, not the
        caller's: its journal has recovery complete it (nova-compute at
        start, ``resizedriver recover``, or the next resize first).
        False when it was left so."""
        if not plan.steps:
            return True
        try:
            self.run(plan, context)
        except exception.ResizeDriverError as e:
            LOG.error('%s. The resized guest runs on a valid disk chain; '
                      '"resizedriver recover %s" (nova-compute does at '
                      'start) completes it', e, plan.uuid,
                      instance_uuid=plan.uuid)
            return False
        return True

    def confirm_migration(self, uuid: str,
                          impl: Implementation = OWN) -> None:
        """Drop the kept source copy.  ``NotFound`` when no resize is
        pending (and none was interrupted): the caller decides whether
        that is done (Nova) or a mistake (an operator's wrong host)."""
        with self.locked(uuid), self._cluster():
            if self._resume(uuid, 'confirm_migration', impl,
                            power_on=False):     # a confirm starts nothing
                return
            rec = rd_record.load_pending(self._layout(uuid))
            began = summary.now()
            kept = summary.allocated_tree(rec.source.resize_dir)
            op = impl.confirm(self.env, rec)
            plan = op.plan()
            done = True
            if plans.builders(rec.plan).confirm_completed_later:
                # the overlay's fold: failing the confirm would have Nova
                # put a running instance in ERROR and never confirm again
                done = self._run_or_leave(plan, op.journal_context())
            else:
                self.run(plan, op.journal_context())
            LOG.info('%s', summary.operation_line(
                'Confirm', uuid, rec.plan, rec.topology.value, began,
                plan.step_names, outcome='done' if done else 'left',
                freed_bytes=kept if done else 0), instance_uuid=uuid)

    def finish_revert_migration(self, uuid: str, power_on: bool = True,
                                impl: Implementation = OWN) -> None:
        """Back to the source copy; a repeat after success is harmless
        (``Implementation.nothing_to_revert``)."""
        with self.locked(uuid), self._cluster():
            if self._resume(uuid, 'finish_revert_migration', impl,
                            power_on):
                return
            try:
                rec = rd_record.load_pending(self._layout(uuid))
            except exception.NotFound:
                impl.nothing_to_revert(self.env, uuid, power_on)
                return
            began = summary.now()
            kept = summary.allocated_tree(rec.source.resize_dir)
            op = impl.revert(self.env, rec, power_on)
            plan = op.plan()
            self.run(plan, op.journal_context())
            LOG.info('%s', summary.operation_line(
                'Revert', uuid, rec.plan, rec.topology.value, began,
                plan.step_names, restored_bytes=kept), instance_uuid=uuid)

    def drop_destination_guest(self, uuid: str) -> None:
        """On the destination of a reverted move to another hypervisor."""
        with self.locked(uuid):
            DropDestinationGuest(self.env, uuid).plan().run()

    def pending(self) -> list[ResizeRecord]:
        return rd_record.all_pending(self.conf.instances_path)


def _completed_later(journal: Journal) -> bool:
    """Whether ``journal`` is a fold left to be completed later, the
    guest running on a valid chain meanwhile: a pre-copy's after-finish,
    or the confirm of a plan whose fold may be left
    (``Builders.confirm_completed_later``)."""
    if journal.operation == AfterFinish.OPERATION:
        return True
    return journal.operation == ConfirmMigration.OPERATION and \
        plans.builders(journal.context['record']['plan']
                       ).confirm_completed_later
