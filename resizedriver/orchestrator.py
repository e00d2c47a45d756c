"""Driving both halves of a resize from the source host.

Under Nova the compute manager calls the source and the destination
drivers in turn.  The operator CLI has no manager, so this plays its part:
the source half runs here; the destination half runs here too when the
destination is this host, else through the destination's own
``resizedriver`` command over ssh.  A failed finish is reverted at once, so
the instance is never left half-resized.
"""

from __future__ import annotations

import shlex

from oslo_log import log as logging

from resizedriver import exception
from resizedriver import transport
from resizedriver.engine import ResizeEngine
from resizedriver.model import Destination, Flavor
from resizedriver.record import ResizeRecord

LOG = logging.getLogger(__name__)


class Orchestrator:
    def __init__(self, engine: ResizeEngine) -> None:
        self.engine = engine
        self.conf = engine.conf

    def destination(self, host: str | None,
                    instances_path: str | None) -> Destination:
        """Describe the destination, asking it whether it is us."""
        path = instances_path or self.conf.instances_path
        if host is None:
            return Destination(None, path, same_hypervisor=True)
        remote = transport.for_host(host, self.conf)
        same = remote.machine_id() == self.engine.env.local.machine_id()
        return Destination(host, path, same_hypervisor=same)

    def _remote(self, host: str, *args: str, stdin: str | None = None) -> \
            None:
        cmd = shlex.split(self.conf.resizedriver.remote_command) + list(args)
        transport.for_host(host, self.conf).execute(*cmd, stdin=stdin)

    def resize(self, uuid: str, flavor: Flavor, dest: Destination,
               power_on: bool = True) -> ResizeRecord:
        record = self.engine.migrate_disk_and_power_off(uuid, flavor, dest)
        try:
            if dest.host is None:
                self.engine.finish_migration(record, power_on)
            else:
                self._remote(dest.host, 'finish',
                             *([] if power_on else ['--no-start']),
                             stdin=record.to_json())
        except Exception as e:
            LOG.error('Finishing on the destination failed, reverting: %s',
                      e, instance_uuid=uuid)
            self.revert(uuid, power_on=record.was_running)
            raise exception.ResizeFailed(
                f'resize failed on the destination and was reverted: {e}',
                step='finish_migration', rolled_back=True) from e
        return record

    def confirm(self, uuid: str) -> None:
        self.engine.confirm_migration(uuid)

    def revert(self, uuid: str, power_on: bool = True) -> None:
        pending = {r.uuid: r for r in self.engine.pending()}
        record = pending.get(uuid)
        if (record is not None and record.destination.host is not None
                and not record.destination.same_hypervisor):
            self._remote(record.destination.host, 'drop-guest', uuid)
        self.engine.finish_revert_migration(uuid, power_on)
