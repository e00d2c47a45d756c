"""The operator's summary of a resize: one line at its end, and status."""

from __future__ import annotations

import json
import logging
import os

import pytest

from resizedriver import record as rd_record
from resizedriver.engine import ResizeEngine
from resizedriver.layout import InstanceLayout
from resizedriver.model import Destination
from resizedriver.summary import Summary, line
from tests.unit.fakes import FakeGuest, FakeHost
from tests.unit.test_migrate import GROW

UUID = '0f8e3c1a-9b2d-4e5f-8a7b-6c5d4e3f2a1b'


def test_downtime_is_power_off_done_to_start_returned():
    s = Summary(reason='why', started_at=100.0, powered_off_at=102.0,
                bytes_copied=5, precopy_rounds=2, started_again_at=105.52,
                finished_at=110.0)
    assert (s.downtime, s.duration) == (pytest.approx(3.52), 10.0)
    assert line(UUID, 'precopy', 'other-host', s) == (
        f'Resize summary: instance={UUID} plan=precopy '
        f'topology=other-host bytes_copied=5 precopy_rounds=2 '
        f'downtime_s=3.5 duration_s=10.0 reason="why"')


def test_a_guest_never_powered_off_was_down_for_0_and_unknowns_say_so():
    live = Summary(started_at=1.0, started_again_at=2.0, finished_at=3.0)
    assert live.downtime == 0.0
    pending = Summary(started_at=1.0, powered_off_at=2.0)
    assert (pending.downtime, pending.duration) == (None, None)
    assert 'downtime_s=- duration_s=-' in line(UUID, 'copy', 'same-host',
                                               pending)


def test_a_record_without_a_summary_still_loads():
    """Records written before the summary (a resize pending across an
    upgrade) and after (a newer version's extra keys) load."""
    from tests.unit.test_record import make_record
    d = make_record().to_dict()
    del d['summary']
    assert rd_record.ResizeRecord.from_dict(d).summary == Summary()
    d['summary'] = {'bytes_copied': 7, 'from_a_newer_version': 1}
    assert rd_record.ResizeRecord.from_dict(d).summary.bytes_copied == 7


def _allocated(path: str) -> int:
    st = os.stat(path)
    return min(st.st_blocks * 512, st.st_size)


def test_a_resize_ends_with_one_summary_line_and_status_has_it(
        conf, instance, tmp_path, caplog):
    """A cold copy to another path of the same libvirtd: the line names
    the plan, why, the topology, the data of every file copied (the
    backing file the other path lacked included) and the downtime; the
    pending record keeps it for ``status``."""
    guest = FakeGuest(instance.uuid, 'guest-1', instance.xml)
    engine = ResizeEngine(conf, host=FakeHost([guest]))
    other = tmp_path / 'other'
    other.mkdir()
    [base] = os.listdir(os.path.join(instance.instances, '_base'))
    copied = sum(_allocated(p) for p in
                 [os.path.join(instance.instances, '_base', base)] +
                 [instance.path(n) for n in
                  ('disk', 'disk.local', 'kernel', 'disk.info')])
    caplog.set_level(logging.INFO, logger='resizedriver')
    rec = engine.migrate_disk_and_power_off(
        instance.uuid, GROW, Destination(None, str(other), True))
    pending = rd_record.load_pending(InstanceLayout(instance.instances,
                                                    instance.uuid))
    assert pending.summary.powered_off_at is not None
    assert pending.summary.bytes_copied == copied
    assert pending.summary.started_again_at is None
    engine.finish_migration(rec)

    [summary] = [r for r in caplog.records
                 if r.getMessage().startswith('Resize summary:')]
    assert summary.levelname == 'INFO'
    text = summary.getMessage()
    assert text.startswith(
        f'Resize summary: instance={instance.uuid} plan=copy '
        f'topology=same-hypervisor bytes_copied={copied} '
        f'precopy_rounds=0 downtime_s=')
    assert 'downtime_s=-' not in text and 'duration_s=-' not in text
    assert text.endswith(f'reason="{rec.summary.reason}"')
    assert rec.summary.reason
    kept = rd_record.load_pending(InstanceLayout(instance.instances,
                                                 instance.uuid)).summary
    assert kept == rec.summary and kept.downtime is not None
    assert kept.downtime <= kept.duration


def test_status_json_has_each_pending_resizes_summary(instance, conf,
                                                      tmp_path):
    from resizedriver.cmd import cli
    guest = FakeGuest(instance.uuid, 'guest-1', instance.xml)
    engine = ResizeEngine(conf, host=FakeHost([guest]))
    rec = engine.migrate_disk_and_power_off(
        instance.uuid, GROW, Destination(None, instance.instances, True))
    engine.finish_migration(rec)
    doc = cli._status_document(engine.pending(), engine.journals.find())
    [one] = doc['pending']
    assert one['instance'] == instance.uuid
    assert one['name'] == 'guest-1'
    assert (one['plan'], one['topology']) == ('copy', 'same-host')
    assert one['reason'] == rec.summary.reason
    assert one['precopy_rounds'] == 0
    assert isinstance(one['downtime_s'], float)
    assert one['still_read_after_confirm'] is False
    assert doc['interrupted'] == []
    json.dumps(doc)


def _tree_allocated(top: str) -> int:
    return sum(_allocated(os.path.join(d, n))
               for d, _dirs, names in os.walk(top) for n in names)


def _resized_on_another_path(conf, instance, tmp_path):
    """A cold copy to another path of the same libvirtd, finished: the
    kept source copy waits for a confirm or a revert."""
    guest = FakeGuest(instance.uuid, 'guest-1', instance.xml)
    engine = ResizeEngine(conf, host=FakeHost([guest]))
    other = tmp_path / 'other'
    other.mkdir()
    rec = engine.migrate_disk_and_power_off(
        instance.uuid, GROW, Destination(None, str(other), True))
    engine.finish_migration(rec)
    return engine, rec


def _one_line(caplog, title: str) -> str:
    [one] = [r for r in caplog.records
             if r.getMessage().startswith(f'{title} summary:')]
    assert one.levelname == 'INFO'
    return one.getMessage()


def test_a_confirm_ends_with_one_summary_line(conf, instance, tmp_path,
                                              caplog):
    """The line names what the confirm removed: its steps, and the data
    of the kept copy it deleted."""
    engine, rec = _resized_on_another_path(conf, instance, tmp_path)
    kept = _tree_allocated(instance.resize_dir)
    assert kept > 0
    caplog.set_level(logging.INFO, logger='resizedriver')
    engine.confirm_migration(instance.uuid)
    text = _one_line(caplog, 'Confirm')
    assert text.startswith(
        f'Confirm summary: instance={instance.uuid} plan=copy '
        f'topology=same-hypervisor outcome=done freed_bytes={kept} '
        f'duration_s=')
    assert text.endswith(
        'steps="check copies were verified, delete _resize"')


def test_a_revert_ends_with_one_summary_line(conf, instance, tmp_path,
                                             caplog):
    """The line names what the revert removed and restored: its steps,
    and the data of the kept copy put back in place."""
    engine, rec = _resized_on_another_path(conf, instance, tmp_path)
    kept = _tree_allocated(instance.resize_dir)
    caplog.set_level(logging.INFO, logger='resizedriver')
    engine.finish_revert_migration(instance.uuid)
    text = _one_line(caplog, 'Revert')
    assert text.startswith(
        f'Revert summary: instance={instance.uuid} plan=copy '
        f'topology=same-hypervisor restored_bytes={kept} duration_s=')
    assert text.endswith(
        'steps="stop resized guest, drop destination copy, move _resize '
        'back, define source domain, plug VIFs, start guest, remove resize '
        'record"')
