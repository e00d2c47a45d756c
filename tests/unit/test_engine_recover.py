"""engine.recover with a damaged journal (review #8.12): nova-compute's
init_host calls it, and one bad file must not keep the service down."""

from __future__ import annotations

import os

from resizedriver.engine import ResizeEngine
from tests.unit.fakes import FakeGuest, FakeHost
from tests.unit.test_recovery import run_until_crash
from resizedriver.model import Destination

BAD_UUID = '99999999-2222-3333-4444-555555555555'


def test_one_unreadable_journal_does_not_stop_the_others(conf, instance,
                                                         instances):
    before = instance.hashes()
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    engine = run_until_crash(conf, guest, instance,
                             Destination(None, instances, True),
                             'copy disks', True)
    bad = os.path.join(engine.journals.dir,
                       f'{BAD_UUID}.migrate_disk_and_power_off.json')
    with open(bad, 'w') as f:
        f.write('{"torn')

    results = ResizeEngine(conf, host=FakeHost([guest])).recover()

    by_uuid = {r.uuid: r for r in results}
    assert by_uuid[instance.uuid].error is None
    assert instance.hashes() == before and guest.running
    assert 'unreadable journal' in by_uuid[BAD_UUID].error
    assert os.path.exists(bad)          # kept for the operator to look at
    # still refused for the damaged instance, and reported again
    again = engine.recover()
    assert [r.uuid for r in again] == [BAD_UUID] and again[0].error
