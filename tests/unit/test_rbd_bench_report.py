"""The RBD benchmark's reading of what it measured
(``benchmarks/rbd_report.py``): never timings, only what the table and
the 0 s of a live resize are made of."""

from __future__ import annotations

import dataclasses
import re

import pytest

from benchmarks.phases import Call
from benchmarks.probes import Line
from benchmarks.rbd_report import (NEW_SHAPE, RbdResult, downed_steps,
                                   median_rows, new_shape_at, seconds,
                                   steps_table, table)

CPUS, DISK = NEW_SHAPE


def result(driver: str, plan: str, downtime: float,
           topology: str = 'same host', headroom: bool = False) \
        -> RbdResult:
    return RbdResult(topology, driver, headroom, plan, downtime,
                     in_effect=downtime + 1, migrate=1.0, finish=2.0,
                     confirm=0.5, load=1.25)


def test_a_row_per_plan_that_ran_with_the_median_of_its_runs():
    # the same case once ran Nova's path and twice another plan (say an
    # owned cold one after a merge): each plan its row, as the record
    # named it; Nova's own driver has no plan
    rows = median_rows([
        result('ours', 'upstream', 9.0), result('upstream', '', 12.0),
        result('ours', 'cold', 7.0), result('ours', 'cold', 5.0),
        result('upstream', '', 10.0), result('upstream', '', 30.0),
        result('ours', 'live', 0.0, headroom=True)])
    assert [(case, runs, m['downtime']) for case, runs, m in rows] == [
        (('same host', 'resizedriver', 'upstream'), 1, 9.0),
        (('same host', 'Nova 34', '-'), 3, 12.0),
        (('same host', 'resizedriver', 'cold'), 2, 6.0),
        (('same host', 'resizedriver, headroom', 'live'), 1, 0.0)]


def test_the_table_gives_the_medians_and_the_calls_sum():
    text = table([result('ours', 'live', 0.0, 'A -> B', headroom=True),
                  result('upstream', '', 12.25, 'A -> B')], 'the note')
    lines = text.splitlines()        # rule, head, rule, rows, rule
    head, live, nova = (re.split(r'\s{2,}', lines[i]) for i in (1, 3, 4))
    assert head == ['topology', 'driver', 'plan', 'runs', 'downtime s',
                    'in effect s', 'migrate s', 'finish s', 'confirm s',
                    'calls s', 'load']
    assert live == ['A -> B', 'resizedriver, headroom', 'live', '1', '0.0',
                    '1.0', '1.0', '2.0', '0.5', '3.5', '1.2']
    assert nova == ['A -> B', 'Nova 34', '-', '1', '12.2', '13.2', '1.0',
                    '2.0', '0.5', '3.5', '1.2']
    assert text.endswith('\n\nthe note')


def test_a_live_resize_shows_once_both_lines_came_after_it_began():
    lines = [Line(1.0, 0, CPUS), Line(3.0, 0, 'RDGUEST mem_kb=1'),
             Line(4.0, 0, CPUS), Line(6.0, 0, DISK), Line(7.0, 0, CPUS)]
    assert new_shape_at(lines[:3], 2.0) is None      # no disk line yet
    assert new_shape_at(lines, 2.0) == 6.0           # the later of both
    assert new_shape_at(lines, 6.0) is None          # after it: no disk


def test_a_reboot_in_a_live_resize_is_an_error_not_0_s():
    lines = [Line(1.0, 0, 'RDGUEST boot=1'), Line(4.0, 0, CPUS),
             Line(5.0, 0, DISK), Line(6.0, 0, 'RDGUEST boot=2')]
    assert new_shape_at(lines[:3], 2.0) == 5.0       # the boot before it
    with pytest.raises(RuntimeError, match='rebooted'):
        new_shape_at(lines, 2.0)


def test_a_call_takes_the_time_its_node_says_it_called_the_driver():
    assert seconds({'called': [10.0, 12.5], 'seconds': 4.0}) == 2.5
    assert seconds({'seconds': 4.0}) == 4.0


def test_the_steps_with_the_guest_down_are_migrate_s_after_its_power_off():
    migrate = Call(0.0, 9.0, [(1.0, 'write resize record'),
                              (2.0, 'power off'), (6.0, 'unplug VIFs'),
                              (6.5, 'take revert point')])
    finish = Call(10.0, 12.0, [(10.0, 'check copied disks'),
                               (10.5, 'start guest')])
    steps = downed_steps(migrate, finish)
    assert steps == {'unplug VIFs': 0.5, 'take revert point': 2.5,
                     'check copied disks': 0.5, 'start guest': 1.5}
    runs = [dataclasses.replace(result('ours', 'rbd', 5.0), steps=steps),
            dataclasses.replace(result('ours', 'rbd', 5.0), steps={
                **steps, 'take revert point': 0.5})]
    assert steps_table(runs) == (
        'same host, rbd: unplug VIFs 0.50, take revert point 1.50, '
        'check copied disks 0.50, start guest 1.50')
