"""Driving both halves of a resize from the source host.

Under Nova the compute manager calls the source and the destination
drivers in turn.  The operator CLI has no manager, so this plays its part:
the source half runs here; the destination half runs here too when the
destination is this host, else through the destination's own
``resizedriver`` command over ssh.  The whole resize is itself a plan with
a journal: a failed finish reverts at once, and a crash between the two
halves is reverted by ``recover``, so the instance is never left
half-resized.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

from oslo_log import log as logging

from resizedriver import exception
from resizedriver import record as rd_record
from resizedriver import recovery
from resizedriver import remote
from resizedriver import transport
from resizedriver.engine import ResizeEngine
from resizedriver.journal import OUTER_OPERATIONS, Journal
from resizedriver.layout import InstanceLayout
from resizedriver.model import Destination, Flavor
from resizedriver.plan import Plan, Step
from resizedriver.record import ResizeRecord
from resizedriver.recovery import Recovered

LOG = logging.getLogger(__name__)


class Orchestrator:
    def __init__(self, engine: ResizeEngine) -> None:
        self.engine = engine
        self.conf = engine.conf

    def destination(self, host: str | None,
                    instances_path: str | None) -> Destination:
        """Describe the destination, asking it whether it is us.

        The path is normalised (an alias of ours is ours), so that the
        backing chains and the shared-path decision see one spelling.
        """
        path = instances_path or self.conf.instances_path
        if not os.path.isabs(path):
            raise exception.ResizeRefused(
                f'destination instances path {path!r} must be absolute')
        path = os.path.normpath(path)
        if host is None and os.path.realpath(path) == \
                os.path.realpath(self.conf.instances_path):
            path = self.conf.instances_path
        if host is None:
            return Destination(None, path, same_hypervisor=True)
        remote = transport.for_host(host, self.conf)
        same = remote.machine_id() == self.engine.env.local.machine_id()
        return Destination(host, path, same_hypervisor=same)

    def _resize_plan(self, uuid: str, flavor: Flavor, dest: Destination,
                     power_on: bool, live: Optional[str]) \
            -> tuple[Plan, list[ResizeRecord]]:
        records: list[ResizeRecord] = []

        def migrate() -> None:
            records.append(self.engine.migrate_disk_and_power_off(
                uuid, flavor, dest, live))

        def finish() -> None:
            if dest.host is None:
                self.engine.finish_migration(records[0], power_on)
            else:
                remote.run(self.conf, dest.host, 'finish',
                           *([] if power_on else ['--no-start']),
                           stdin=records[0].to_json())

        return Plan('resize', uuid, [
            Step('migrate_disk_and_power_off', migrate,
                 lambda: self._revert_if_pending(uuid)),
            Step('finish_migration', finish)]), records

    def _pending(self, uuid: str) -> Optional[ResizeRecord]:
        try:
            return rd_record.load_pending(
                InstanceLayout(self.conf.instances_path, uuid))
        except exception.NotFound:
            return None

    def _revert_if_pending(self, uuid: str) -> None:
        """Undo of a migrate that completed (an interrupted one has been
        rolled back by its own journal)."""
        record = self._pending(uuid)
        if record is not None:
            self.engine.finish_revert_migration(uuid, record.was_running)

    def resize(self, uuid: str, flavor: Flavor, dest: Destination,
               power_on: bool = True,
               live: Optional[str] = None) -> ResizeRecord:
        with self.engine.locked(uuid, scope='-resize'):
            plan, records = self._resize_plan(uuid, flavor, dest, power_on,
                                              live)
            self.engine.run(plan, {'flavor': flavor.to_dict(),
                                   'dest': dest.to_dict(),
                                   'power_on': power_on, 'live': live})
        return records[0]

    def recover(self, uuid: Optional[str] = None) -> list[Recovered]:
        """The engine's recovery, then whole resizes this command began:
        one interrupted after its migrate is reverted."""
        results = self.engine.recover(uuid)
        outer = {j.uuid for j in self.engine.journals.find(uuid)
                 if j.operation in OUTER_OPERATIONS}
        for one in sorted(outer):
            with self.engine.locked(one, scope='-resize'):
                for journal in self.engine.journals.find(one):
                    if journal.operation in OUTER_OPERATIONS:
                        results.append(self._roll_back_resize(journal))
        return results

    def _roll_back_resize(self, journal: Journal) -> Recovered:
        return recovery.run(journal, lambda: self._resize_plan(
            journal.uuid, Flavor.from_dict(journal.context['flavor']),
            Destination.from_dict(journal.context['dest']),
            bool(journal.context['power_on']),
            journal.context.get('live'))[0])

    @contextlib.contextmanager
    def _no_resize_running(self, uuid: str) -> Iterator[None]:
        """Wait for a resize of ``uuid`` this command runs to end; refuse
        if one was interrupted (its halves may be half done: only
        ``recover`` knows which way to take it)."""
        with self.engine.locked(uuid, scope='-resize'):
            for journal in self.engine.journals.find(uuid):
                if journal.operation in OUTER_OPERATIONS:
                    raise exception.RecoveryNeeded(
                        f'a resize of {uuid} was interrupted ({journal.path})'
                        f': run "resizedriver recover {uuid}" first')
            yield

    def confirm(self, uuid: str) -> None:
        with self._no_resize_running(uuid):
            self.engine.confirm_migration(uuid)

    def revert(self, uuid: str, power_on: bool = True) -> None:
        """Unlike Nova's (which must be idempotent), an operator's revert
        with nothing to revert is an error: it may be the wrong host or
        instances path.  Dropping the guest on another hypervisor is a
        step of the revert plan, after its journal and lock checks."""
        with self._no_resize_running(uuid):
            interrupted = [j for j in self.engine.journals.find(uuid)
                           if j.operation == 'finish_revert_migration']
            if self._pending(uuid) is None and not interrupted:
                raise exception.NotFound(
                    f'no resize of {uuid} is pending under '
                    f'{self.conf.instances_path}; nothing to revert')
            self.engine.finish_revert_migration(uuid, power_on)
