"""What a pending resize must remember until confirm or revert.

The record lives in the source's ``<uuid>_resize`` directory (so it goes
exactly where the kept source copy goes, and disappears with it at
confirm), is written atomically, and is also what ``finish_migration`` on
the destination is handed: it carries the source definition, the disks
as found and the new flavor.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any

from resizedriver import chooser
from resizedriver import exception
from resizedriver import fileutil
from resizedriver import layout
from resizedriver.model import Destination, DiskFile, Flavor, Topology
from resizedriver.summary import Summary


@dataclasses.dataclass
class ResizeRecord:
    uuid: str
    name: str
    source_host: str
    source_instances_path: str
    destination: Destination
    topology: Topology
    old_flavor: Flavor
    new_flavor: Flavor
    source_xml: str
    disks: list[DiskFile]
    was_running: bool
    #: every copy was read back on the destination and matched the source
    copies_verified: bool = False
    #: the plan that ran (``resizedriver.chooser``); the later halves and
    #: recovery follow it
    plan: str = chooser.COPY
    #: a live plan's revert, decided up front: 'live' (the guest keeps
    #: running) or 'reboot' (once, into the old flavor)
    live_revert: str = ''
    #: what the operator's summary line says (``resizedriver.summary``)
    summary: Summary = dataclasses.field(default_factory=Summary)

    @property
    def shared_path(self) -> bool:
        return self.topology.shared_path

    @property
    def same_hypervisor(self) -> bool:
        return self.topology.same_hypervisor

    @property
    def source(self) -> layout.InstanceLayout:
        return layout.InstanceLayout(self.source_instances_path, self.uuid)

    @property
    def dest(self) -> layout.InstanceLayout:
        return layout.InstanceLayout(self.destination.instances_path,
                                     self.uuid)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d['destination'] = self.destination.to_dict()
        d['topology'] = self.topology.value
        d['old_flavor'] = self.old_flavor.to_dict()
        d['new_flavor'] = self.new_flavor.to_dict()
        d['disks'] = [disk.to_dict() for disk in self.disks]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> 'ResizeRecord':
        try:
            d = json.loads(text)
        except ValueError as e:
            raise exception.ResizeRefused(
                f'malformed resize record: {e}') from e
        return cls.from_dict(d)

    @classmethod
    def from_dict(cls, d: Any) -> 'ResizeRecord':
        try:
            destination = Destination.from_dict(d['destination'])
            # Records written before the topology was kept say shared_path.
            topology = Topology(d['topology']) if 'topology' in d else \
                Topology.of(destination.same_hypervisor,
                            bool(d['shared_path']))
            return cls(
                uuid=layout.check_uuid(d['uuid']), name=d['name'],
                source_host=d['source_host'],
                source_instances_path=d['source_instances_path'],
                destination=destination, topology=topology,
                old_flavor=Flavor.from_dict(d['old_flavor']),
                new_flavor=Flavor.from_dict(d['new_flavor']),
                source_xml=d['source_xml'],
                disks=[DiskFile.from_dict(x) for x in d['disks']],
                was_running=bool(d['was_running']),
                copies_verified=bool(d.get('copies_verified', False)),
                plan=chooser.check_known(str(d.get('plan', chooser.COPY))),
                live_revert=str(d.get('live_revert', '')),
                summary=Summary.from_dict(d.get('summary', {})))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise exception.ResizeRefused(
                f'malformed resize record: {e}') from e

    def write(self, path: str) -> None:
        fileutil.write_atomic(path, self.to_json(), fileutil.PRIVATE)

    @classmethod
    def read(cls, path: str) -> 'ResizeRecord':
        with open(path) as f:
            return cls.from_json(f.read())


def load_pending(inst: layout.InstanceLayout) -> ResizeRecord:
    """The record of the pending resize of an instance, or NotFound."""
    path = inst.in_resize_dir(layout.RECORD_NAME)
    if not os.path.exists(path):
        raise exception.NotFound(
            f'no resize of {inst.uuid} is pending on this host '
            f'({inst.resize_dir} has no {layout.RECORD_NAME})')
    return ResizeRecord.read(path)


def all_pending(instances_path: str) -> list[ResizeRecord]:
    """Every pending resize whose source copy is on this host."""
    pattern = os.path.join(instances_path, '*' + layout.RESIZE_SUFFIX,
                           layout.RECORD_NAME)
    return [ResizeRecord.read(p) for p in sorted(glob.glob(pattern))]
