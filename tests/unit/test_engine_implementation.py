"""The engine's entry points run the operations of the ``Implementation``
they are given (issue #9): the integration supplies the steps, the engine
keeps the lock, the resume, the record and the journal."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from resizedriver.engine import Implementation, ResizeEngine
from resizedriver.model import Destination, Flavor, MiB
from tests.unit.fakes import FakeGuest, FakeHost

GROW = Flavor(vcpus=2, memory_mib=512, root_bytes=16 * MiB,
              ephemeral_bytes=4 * MiB, swap_bytes=0)
HELD = 3
#: in another process, as a concurrent nova-compute or CLI would: the
#: instance's lock, without waiting
TRY_LOCK = f"""
import sys
from oslo_concurrency import lockutils
try:
    with lockutils.lock(sys.argv[1], external=True, lock_path=sys.argv[2],
                        blocking=False):
        pass
except lockutils.AcquireLockFailedException:
    sys.exit({HELD})
"""


def lock_held(conf, uuid: str) -> bool:
    done = subprocess.run(
        [sys.executable, '-c', TRY_LOCK, f'resizedriver-{uuid}',
         os.path.join(conf.instances_path, 'locks')], check=False)
    assert done.returncode in (0, HELD), done
    return done.returncode == HELD


class Recording(Implementation):
    """The engine's own operations, noting each factory called and
    whether the instance's lock was held then."""

    def __init__(self, conf, uuid: str) -> None:
        self.conf = conf
        self.uuid = uuid
        self.calls: list[tuple[str, bool]] = []

    def _note(self, name: str) -> None:
        self.calls.append((name, lock_held(self.conf, self.uuid)))

    def migrate(self, *args):
        self._note('migrate')
        return super().migrate(*args)

    def finish(self, *args):
        self._note('finish')
        return super().finish(*args)

    def confirm(self, *args):
        self._note('confirm')
        return super().confirm(*args)

    def revert(self, *args):
        self._note('revert')
        return super().revert(*args)

    def nothing_to_revert(self, *args):
        self._note('nothing_to_revert')
        return super().nothing_to_revert(*args)

    def resume(self, *args):
        self._note('resume')
        return super().resume(*args)


@pytest.fixture
def setup(conf, instance, instances, monkeypatch):
    monkeypatch.setattr('resizedriver.vif.plug', lambda vifs, uuid: None)
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    engine = ResizeEngine(conf, host=FakeHost([guest]))
    return (engine, Recording(conf, instance.uuid),
            Destination(None, instances, same_hypervisor=True))


def test_each_entry_point_builds_its_operation_under_the_lock(setup,
                                                              instance):
    engine, impl, dest = setup
    record = engine.migrate_disk_and_power_off(instance.uuid, GROW, dest,
                                               impl=impl)
    engine.finish_migration(record, power_on=False, impl=impl)
    engine.confirm_migration(instance.uuid, impl=impl)
    assert not os.path.exists(instance.resize_dir)      # it really ran
    engine.migrate_disk_and_power_off(instance.uuid, GROW, dest, impl=impl)
    engine.finish_revert_migration(instance.uuid, impl=impl)
    engine.finish_revert_migration(instance.uuid, impl=impl)   # a repeat

    assert impl.calls == [('migrate', True), ('finish', True),
                          ('confirm', True), ('migrate', True),
                          ('revert', True), ('nothing_to_revert', True)]
    assert not lock_held(engine.conf, instance.uuid)    # and let go
    assert engine.journals.find() == []


def test_a_repeated_confirm_is_resumed_by_the_implementation(setup,
                                                             instance):
    engine, impl, dest = setup
    record = engine.migrate_disk_and_power_off(instance.uuid, GROW, dest)
    interrupted = engine.journals.open('confirm_migration', instance.uuid,
                                       {'record': record.to_dict()})
    interrupted.started('check copies verified', False)

    engine.confirm_migration(instance.uuid, impl=impl)

    assert impl.calls == [('resume', True)]             # not confirm again
    assert not os.path.exists(instance.resize_dir)
    assert engine.journals.find() == []
