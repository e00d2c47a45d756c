"""``NovaImplementation``: what the engine's entry points build for one
compute-manager call (``resizedriver.engine.Implementation``), from the
Nova plans in :mod:`resizedriver.nova.operations`."""

from __future__ import annotations

from typing import Any, Optional

from resizedriver import recovery
from resizedriver.engine import Implementation, Operation
from resizedriver.env import HostEnv
from resizedriver.journal import Journal
from resizedriver.model import Destination, Flavor
from resizedriver.nova.operations import (NovaCall, NovaConfirm, NovaFinish,
                                          NovaMigrate, NovaRevert)
from resizedriver.nova.progress import InstanceProgress
from resizedriver.record import ResizeRecord
from resizedriver.recovery import Recovered
from resizedriver.transport import Transport


class NovaImplementation(Implementation):
    """The operations above for one compute-manager call, made by the
    engine's entry points under the instance's lock.

    It holds what the call brings beyond the engine's arguments: its Nova
    objects and, for the one operation that uses each, migrate's timeouts,
    new flavor object and progress, finish's migration, image metadata
    and allocations, and the share info of finish and revert.
    """

    def __init__(self, call: NovaCall, *, timeout: int = 0,
                 retry_interval: int = 0, nova_flavor: Any = None,
                 migration: Any = None, image_meta: Any = None,
                 allocations: Any = None, share_info: Any = None) -> None:
        self.call = call
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.nova_flavor = nova_flavor
        self.migration = migration
        self.image_meta = image_meta
        self.allocations = allocations
        self.share_info = share_info
        #: the call's own: two instances may be resizing at once
        self.progress = InstanceProgress(call.instance)

    def migrate(self, env: HostEnv, uuid: str, new_flavor: Flavor,
                dest: Destination, dest_transport: Transport,
                live: Optional[str]) -> NovaMigrate:
        return NovaMigrate(env, uuid, new_flavor, dest, dest_transport,
                           live, self.call, self.timeout,
                           self.retry_interval, self.progress,
                           nova_flavor=self.nova_flavor)

    def finish(self, env: HostEnv, record: ResizeRecord,
               power_on: bool) -> NovaFinish:
        return NovaFinish(env, record, power_on, self.call, self.migration,
                          self.image_meta, self.allocations, self.share_info)

    def confirm(self, env: HostEnv, record: ResizeRecord) -> NovaConfirm:
        return NovaConfirm(env, record, self.call)

    def revert(self, env: HostEnv, record: ResizeRecord,
               power_on: bool) -> NovaRevert:
        return NovaRevert(env, record.uuid, record, self.call, power_on,
                          self.share_info)

    def nothing_to_revert(self, env: HostEnv, uuid: str,
                          power_on: bool) -> None:
        """Nova calls revert again at start-up for an instance stuck mid-
        resize, whose guest it may have destroyed: with no kept copy to
        move back, define and start it from Nova's XML (no journal:
        there is nothing a crash could leave half done)."""
        NovaRevert(env, uuid, None, self.call, power_on,
                   self.share_info).plan().run()

    def resume(self, env: HostEnv, journal: Journal,
               power_on: bool) -> Recovered:
        """A repeated call has Nova's objects: complete the interrupted
        confirm or revert with Nova's full plan, not the disk work only
        that recovery at start-up can do, whichever implementation wrote
        the journal."""
        def rebuild() -> Operation:
            if journal.operation == 'confirm_migration':
                return NovaConfirm.from_journal(env, journal.context,
                                                self.call)
            return NovaRevert.from_journal(env, journal.context, self.call,
                                           power_on, self.share_info)
        return recovery.run(journal, lambda: rebuild().plan())
