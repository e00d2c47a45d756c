"""finish_revert_migration: on the source, go back to the kept copy.

The plan of the ``copy`` and ``overlay`` resizes (``live`` has its own,
in ``live.py``).  Each step is idempotent: Nova calls this again for
instances stuck in RESIZE_MIGRATING, sometimes after part of it ran, and
after a crash recovery completes it by running again what the journal
lacks as done:
  drop destination guest   another hypervisor: its own command undefines it
  stop resized guest       on a shared libvirtd it runs from the dest copy
  drop destination copy    when the dest dir is not our own instance dir
  move _resize back        the bytes the guest had when the resize began
  define source domain     the definition saved before the resize
  plug VIFs
  start guest              only when power_on
  remove resize record

``DropDestinationGuest`` is the destination's part when it is another
hypervisor (Nova does it itself with ``destroy`` on the dest).
"""

from __future__ import annotations

import functools
import os
import shutil
from typing import Any, Optional

from resizedriver import domain_xml
from resizedriver import fileutil
from resizedriver import remote
from resizedriver import stepname
from resizedriver import transport
from resizedriver import vif
from resizedriver.env import HostEnv
from resizedriver.layout import RECORD_NAME, InstanceLayout
from resizedriver.operations import live, plans
from resizedriver.plan import Plan, Step
from resizedriver.record import ResizeRecord
from resizedriver.transport import Transport


def restore_source_dir(source: InstanceLayout) -> bool:
    """Put ``<uuid>_resize`` back as ``<uuid>``; False if already back."""
    if not os.path.isdir(source.resize_dir):
        return False                    # a repeated revert: already back
    if os.path.isdir(source.dir):
        shutil.rmtree(source.dir)       # the dest copy (shared path)
    # durable before the record goes: a power cut must not bring back
    # <uuid>_resize with no record saying what it is
    fileutil.rename_durably(source.resize_dir, source.dir)
    return True


def remove_record(source: InstanceLayout) -> None:
    fileutil.remove_durably(source.path(RECORD_NAME))


class FinishRevertMigration:
    def __init__(self, env: HostEnv, record: ResizeRecord,
                 dest_transport: Transport, power_on: bool,
                 decision: Optional[str] = None) -> None:
        self.env = env
        self.record = record
        self.source = record.source
        self.transport = dest_transport
        self.power_on = power_on
        #: a live resize's revert decision (``live.decide_revert``)
        self.decision = decision

    def live_decision(self) -> Optional[str]:
        """The live plan's revert decision, made once (before the
        journal that keeps it is opened), or the journaled one; None for
        the other plans."""
        self.decision = live.decided(self.env, self.record, self.decision)
        return self.decision

    def journal_context(self) -> dict[str, Any]:
        return self.context_for(self.record, self.power_on,
                                self.live_decision())

    @staticmethod
    def context_for(record: ResizeRecord, power_on: bool,
                    decision: Optional[str]) -> dict[str, Any]:
        """What ``from_journal`` reads back (also for Nova's revert)."""
        context = {'record': record.to_dict(), 'power_on': power_on}
        if decision is not None:
            context[live.DECISION] = decision
        return context

    @classmethod
    def from_journal(cls, env: HostEnv,
                     context: dict[str, Any]) -> 'FinishRevertMigration':
        record = ResizeRecord.from_dict(context['record'])
        return cls(env, record,
                   transport.for_host(record.destination.host, env.conf),
                   bool(context['power_on']), context.get(live.DECISION))

    def recovery_plan(self) -> Plan:
        return self.plan()

    def plan(self) -> Plan:
        """The revert of the plan the resize record names."""
        return Plan('finish_revert_migration', self.record.uuid,
                    plans.builders(self.record.plan).revert(self),
                    forward=True)

    def cold_steps(self) -> list[Step]:
        """The ``copy`` and ``overlay`` plans' revert (the table at the
        top of this module)."""
        steps = []
        dest_host = self.record.destination.host
        if dest_host is not None and not self.record.same_hypervisor:
            steps.append(Step(stepname.DROP_DEST_GUEST, functools.partial(
                self.drop_dest_guest, dest_host)))
        if self.record.same_hypervisor:
            steps.append(Step(stepname.STOP_RESIZED, self.stop_resized))
        if not self.record.shared_path:
            steps.append(Step(stepname.DROP_DEST_COPY, self.drop_dest_copy))
        steps += [Step(stepname.MOVE_BACK, self.move_back),
                  Step(stepname.DEFINE_SOURCE, self.define),
                  Step(stepname.PLUG_VIFS, self.plug_vifs)]
        if self.power_on:
            steps.append(Step(stepname.START, self.start))
        steps.append(Step(stepname.REMOVE_RECORD, self.remove_record))
        return steps

    def stop_resized(self) -> None:
        guest = self.env.host.lookup(self.record.uuid)
        if guest is not None:
            guest.destroy()

    def drop_dest_guest(self, host: str) -> None:
        """Another hypervisor runs the resized guest: its own command
        stops and undefines it there (Nova does this with ``destroy``)."""
        remote.run(self.env.conf, host, 'drop-guest', self.record.uuid)

    def drop_dest_copy(self) -> None:
        self.transport.remove_tree(self.record.dest.dir)

    def move_back(self) -> None:
        restore_source_dir(self.source)

    def define(self) -> None:
        self.env.host.define(self.record.source_xml)

    def plug_vifs(self) -> None:
        vif.plug(domain_xml.vifs(self.record.source_xml), self.record.uuid)

    def start(self) -> None:
        live.start_guest(self.env, self.record)

    def remove_record(self) -> None:
        remove_record(self.source)


class DropDestinationGuest:
    """On the destination: stop and undefine the resized guest."""

    def __init__(self, env: HostEnv, uuid: str) -> None:
        self.env = env
        self.uuid = uuid

    def plan(self) -> Plan:
        return Plan('drop_destination_guest', self.uuid,
                    [Step(stepname.DROP_GUEST, self.drop)])

    def drop(self) -> None:
        self.env.host.remove(self.uuid)
