"""What every tier shares: the real tiers' resource groups.

Tests that use host B (the ``host_b`` fixture, directly or through
another fixture) have it alone: they run on one pytest-xdist worker
(``--dist loadgroup``) and hold B's lock (``parallel.exclusive``) for
their whole run, so that a test filling B's filesystem or recovering
every journal there never meets another test's guest on B.
"""

from __future__ import annotations

import pytest

from tests.lib import parallel

#: the fixture that hands a test host B, and the group and lock it takes
HOST_B_FIXTURE, HOST_B = 'host_b', 'hostb'


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'long: runs for minutes; scheduled first, so that the '
                   'workers finish together instead of one running it '
                   'alone at the end')
    config.addinivalue_line(
        'markers', 'releases: the Nova tier\'s subset that runs on every '
                   'supported Nova release, not only the newest')


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    # pytest-xdist hands tests out in this order (stable: the rest keep
    # theirs); long ones first, host B's lane (one worker) before them
    items.sort(key=lambda item: (
        item.get_closest_marker('long') is None,
        HOST_B_FIXTURE not in getattr(item, 'fixturenames', ())))
    # tryfirst: xdist reads the group in its own hook, after this one
    for item in items:
        if HOST_B_FIXTURE in getattr(item, 'fixturenames', ()):
            item.add_marker(pytest.mark.xdist_group(HOST_B))


@pytest.fixture(autouse=True)
def _host_b_alone(request):
    if HOST_B_FIXTURE in request.fixturenames:
        if request.config.getoption('dist', 'no') == 'loadgroup' and \
                not request.node.nodeid.endswith('@' + HOST_B):
            pytest.fail('host B tests must share one worker, but pytest-'
                        'xdist did not group them (pytest 9?)')
        with parallel.exclusive(HOST_B):
            yield
    else:
        yield
