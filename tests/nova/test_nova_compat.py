"""The compatibility module on the tox env's Nova: the range warning at
load, and what it finds this Nova offers (no guest)."""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from importlib import metadata

import pytest
from nova.virt.libvirt import driver as libvirt_driver

from resizedriver.nova import compat

RANGE = '31 (2025.1) to 34 (2026.2)'


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == compat.__name__ and r.levelno == logging.WARNING]


@pytest.fixture
def reload_compat(monkeypatch):
    """Loads the module again (as nova-compute's start does) under the
    Nova version a test makes pip report; under the real one after."""
    yield lambda: importlib.reload(compat)
    monkeypatch.undo()
    importlib.reload(compat)


@pytest.mark.releases
def test_this_nova_loads_without_a_warning(caplog, reload_compat):
    caplog.set_level(logging.WARNING)
    reload_compat()
    assert int(compat.nova_version().split('.')[0]) in (31, 33, 34)
    assert _warnings(caplog) == []


@pytest.mark.releases
@pytest.mark.parametrize('version', ['30.2.0', '35.0.0', '2026.2.dev1'])
def test_a_nova_outside_the_range_logs_one_warning(version, caplog,
                                                   reload_compat,
                                                   monkeypatch):
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(metadata, 'version', lambda name: version)
    reload_compat()
    assert _warnings(caplog) == [
        f'resizedriver supports Nova {RANGE}; this is Nova {version}, '
        f'which it was not tested with: resizes may fail']


class _Driver:
    def _get_existing_guest_config(self, instance):
        return ('config of', instance)


@pytest.mark.releases
def test_what_this_nova_offers_is_found_from_its_methods():
    """33+ builds a revert's XML from the guest it replaces (31 and 32
    have no such parameter: nothing is looked up for it); 34's finish
    methods take share_info."""
    drv = libvirt_driver.LibvirtDriver
    has_old_guest = 'old_guest' in inspect.signature(
        drv._get_guest_xml).parameters
    assert compat.old_guest(_Driver(), 'inst') == (
        {'old_guest': ('config of', 'inst')} if has_old_guest else {})
    for name in ('finish_migration', 'finish_revert_migration'):
        takes = 'share_info' in inspect.signature(
            getattr(drv, name)).parameters
        assert compat.share_info(getattr(drv, name), 'shares') == (
            {'share_info': 'shares'} if takes else {})


@pytest.mark.releases
def test_nova_runs_as_its_nova_compute_starts():
    """Under eventlet's monkey patching on 31 to 33, native threads on 34
    (``novaenv``): the mode nova-compute of that release starts in."""
    major = int(compat.nova_version().split('.')[0])
    patcher = sys.modules.get('eventlet.patcher')
    patched = patcher is not None and patcher.is_monkey_patched('thread')
    assert patched == (major < 34)


@pytest.mark.releases
def test_background_work_runs_as_this_nova_runs_its_own():
    """init_host's folds under running guests (issue 20 item 7): on 34
    Nova's thread pool, before it ``utils.spawn`` (31: a GreenThread,
    which has no ``result``); either way a future."""
    assert compat.spawn(lambda a, b: a + b, 1, 2).result(timeout=30) == 3

    def fails() -> None:
        raise ValueError('the fold failed')
    with pytest.raises(ValueError, match='the fold failed'):
        compat.spawn(fails).result(timeout=30)
