"""The operator command's orchestration of both halves (review #8)."""

from __future__ import annotations

import os

import pytest

from resizedriver import exception
from resizedriver.engine import ResizeEngine
from resizedriver.model import Destination, Flavor, MiB
from resizedriver.orchestrator import Orchestrator
from tests.unit.fakes import FakeGuest, FakeHost

GROW = Flavor(vcpus=2, memory_mib=512, root_bytes=16 * MiB,
              ephemeral_bytes=4 * MiB, swap_bytes=0)


@pytest.fixture
def migrated(conf, instance, instances):
    """A CLI resize interrupted between its halves: the outer journal
    says migrate began and finished, finish never ran."""
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    engine = ResizeEngine(conf, host=FakeHost([guest]))
    dest = Destination(None, instances, same_hypervisor=True)
    outer = engine.journals.open('resize', instance.uuid, {
        'flavor': GROW.to_dict(), 'dest': dest.to_dict(), 'power_on': True})
    outer.started('migrate_disk_and_power_off', True)
    engine.migrate_disk_and_power_off(instance.uuid, GROW, dest)
    outer.done('migrate_disk_and_power_off')
    outer.started('finish_migration', False)     # ... and the process died
    return engine, guest


def test_confirm_is_refused_while_the_cli_resize_is_interrupted(
        migrated, instance):
    """#8.2: confirm deleted the source while the domain pointed at it."""
    engine, _guest = migrated
    before = instance.hashes(instance.resize_dir)
    with pytest.raises(exception.RecoveryNeeded, match='recover'):
        Orchestrator(engine).confirm(instance.uuid)
    assert instance.hashes(instance.resize_dir) == before


def test_engine_confirm_is_refused_under_an_interrupted_outer_journal(
        migrated, instance):
    engine, _guest = migrated
    with pytest.raises(exception.RecoveryNeeded):
        engine.confirm_migration(instance.uuid)
    assert os.path.isdir(instance.resize_dir)


def test_recover_then_reverts_the_interrupted_resize(migrated, instance):
    engine, guest = migrated
    results = Orchestrator(engine).recover()
    assert [r.error for r in results] == [None]
    assert not os.path.exists(instance.resize_dir)
    assert guest.running
    assert engine.journals.find() == []


class RemoteRecorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, host, *args, stdin=None) -> None:
        self.calls.append((host, *args))


def test_revert_checks_journals_before_it_drops_the_destination_guest(
        conf, instance, instances, monkeypatch):
    """#8.3: with an interrupted confirm, revert undefined the only
    complete copy (the destination guest) before the journal check."""
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    engine = ResizeEngine(conf, host=FakeHost([guest]))
    dest = Destination(None, instances, same_hypervisor=True)
    engine.migrate_disk_and_power_off(instance.uuid, GROW, dest)
    # Make the pending resize look like a move to another hypervisor.
    rec_path = os.path.join(instance.resize_dir, 'resize.json')
    text = open(rec_path).read().replace('"host": null',
                                         '"host": "dest.example"')
    text = text.replace('"same_hypervisor": true',
                        '"same_hypervisor": false')
    with open(rec_path, 'w') as f:
        f.write(text)
    confirm = engine.journals.open('confirm_migration', instance.uuid, {})
    confirm.started('delete _resize', False)       # interrupted confirm
    remote = RemoteRecorder()
    orch = Orchestrator(engine)
    monkeypatch.setattr('resizedriver.remote.run',
                        lambda conf, *a, **k: remote(*a, **k))
    with pytest.raises(exception.RecoveryNeeded):
        orch.revert(instance.uuid)
    assert remote.calls == []
