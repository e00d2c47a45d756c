"""The CLI's VIF plugging (review #8.9): only Linux bridges nobody made."""

from __future__ import annotations

import pytest

from resizedriver import vif
from resizedriver.domain_xml import DomainVif

UUID = '11111111-2222-3333-4444-555555555555'


@pytest.fixture
def commands(monkeypatch):
    ran: list[tuple[str, ...]] = []
    monkeypatch.setattr('oslo_concurrency.processutils.execute',
                        lambda *argv, **kw: ran.append(argv) or ('', ''))
    return ran


def test_an_open_vswitch_bridge_is_left_to_open_vswitch(commands):
    vif.plug([DomainVif('fa:16:3e:00:00:09', 'br-rdtest-ovs', 'bridge',
                        'openvswitch')], UUID)
    assert commands == []


def test_an_existing_device_that_is_not_a_linux_bridge_is_left_alone(
        commands):
    vif.plug([DomainVif('fa:16:3e:00:00:09', 'lo', 'bridge')], UUID)
    assert commands == []


def test_a_missing_linux_bridge_is_created(commands):
    vif.plug([DomainVif('fa:16:3e:00:00:09', 'br-rdtest-none', 'bridge')],
             UUID)
    assert commands == [
        ('ip', 'link', 'add', 'name', 'br-rdtest-none', 'type', 'bridge'),
        ('ip', 'link', 'set', 'br-rdtest-none', 'up')]
