"""Fixtures for the Nova integration tests (``tox -e nova``).

A real ``LibvirtResizeDriver`` in the tox env's Nova (31, 33 or 34),
loaded the way nova-compute loads it, on the real local libvirtd,
spawning the real test guest.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.lib import guestlog, hostenv, parallel
from tests.nova import novaenv

#: this worker's Nova: its cell database, instances, state and lock paths
ROOT = f'/var/lib/resizedriver-tests/nova-{parallel.worker()}'
#: lvcreate/lvremove stand-ins (test_nova_upstream says why), first on
#: the PATH of every privsep daemon Nova starts from here on
os.environ['PATH'] = os.path.join(os.path.dirname(__file__), 'lvmbin') + \
    os.pathsep + os.environ['PATH']


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'releases: what CI runs on every Nova release, not only '
                   'the newest (tools/run-tests: nova31, nova33)')


def prepare(root: str) -> None:
    """As root: the host set up, an empty ``root`` for this session."""
    if os.geteuid() != 0:
        pytest.fail('the Nova tests drive the system libvirtd: run as root')
    hostenv.setup_host()
    hostenv.ensure_bridge()
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)


@pytest.fixture(scope='session')
def driver():
    prepare(ROOT)
    novaenv.configure(ROOT, name_prefix=f'rdtest-{parallel.worker()}')
    drv = novaenv.load_driver()
    drv.init_host(host=novaenv.CONF.host)
    novaenv.seed_images(novaenv.CONF.instances_path)
    yield drv
    # Nova's thread pool and libvirt event threads are not daemons.
    drv.cleanup_host(host=novaenv.CONF.host)


class Server:
    """One spawned instance and what a test needs to drive and watch it."""

    def __init__(self, driver, flavor, local_bdms: bool = False,
                 **image_properties) -> None:
        self.driver = driver
        #: block device mappings for its ephemeral disk and swap, as
        #: Nova's API makes them (else none: the flavor alone says)
        self.local_bdms = local_bdms
        self.ctx = novaenv.admin_context()
        self.ip, self.mac = parallel.guest_address()
        self.nw = novaenv.network_info(self.mac)
        self.image_meta = novaenv.image_meta(self.ip, **image_properties)
        self.instance = novaenv.instance(self.ctx, flavor, self.ip, self.nw,
                                         **image_properties)

    def bdi(self):
        """The block device info the compute manager would pass now."""
        if not self.local_bdms:
            return None
        return novaenv.block_device_info(self.instance)

    @property
    def dir(self) -> str:
        return os.path.join(novaenv.CONF.instances_path, self.instance.uuid)

    def wait_boot(self, boot: int) -> guestlog.GuestReport:
        report = guestlog.wait_for_boot(
            os.path.join(self.dir, 'console.log'), boot)
        novaenv.wire_taps(self.nw)
        return report

    def ping(self) -> bool:
        return hostenv.ping(self.ip.split('/')[0])


@pytest.fixture
def make_server(driver):
    servers = []

    def make(flavor, local_bdms: bool = False,
             **image_properties) -> Server:
        server = Server(driver, flavor, local_bdms, **image_properties)
        if local_bdms:
            novaenv.create_local_bdms(server.ctx, driver, server.instance)
        driver.spawn(server.ctx, server.instance, server.image_meta, [],
                     None, {}, network_info=server.nw,
                     block_device_info=server.bdi())
        servers.append(server)
        return server
    yield make
    for server in servers:
        driver.destroy(server.ctx, server.instance, server.nw,
                       server.bdi())


_EXIT_STATUS = {'code': 0}


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS['code'] = int(exitstatus)


def pytest_unconfigure(config):
    """End the process once pytest is done reporting.

    Nova's libvirt Host runs a connection-event thread that loops forever
    (``Host._conn_event_thread``) in a futurist pool that joins its workers
    at exit, and ``cleanup_host`` does not stop it: nova-compute itself
    leaves by its service's shutdown, which a test process does not have.
    Without this the test run would hang after printing its results.
    """
    import sys
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS['code'])
