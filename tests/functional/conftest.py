"""Fixtures for the real tests: a real libvirtd, a real guest, real ssh.

Nothing here is faked.  The session fixture installs and starts what is
missing (tools/setup-host), builds the test guest from Debian packages,
makes an isolated bridge and a loopback sshd.  Each scenario gets its own
instances paths and config file and boots its guest once.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from typing import Iterator, Optional

import pytest

from resizedriver import headroom
from resizedriver.host import Host
from tests.lib import guestlog, hostb, hostenv, parallel, testguest

TEST_ROOT = '/var/lib/resizedriver-tests'
MiB = 1024 * 1024
HERE = os.path.dirname(os.path.abspath(__file__))
#: the command killed (or otherwise broken) at a chosen point
CRASHCLI = os.path.join(HERE, 'crashcli.py')


@pytest.fixture(scope='session')
def host() -> Host:
    if os.geteuid() != 0:
        pytest.fail('functional tests drive the system libvirtd: run as root')
    hostenv.setup_host()
    hostenv.ensure_bridge()
    testguest.build_guest_image()
    return Host('qemu:///system')


@pytest.fixture(scope='session')
def sshd():
    # One per test session: two sessions at once (a developer's and a
    # scratch clone's) must not stop or replace each other's sshd.
    workdir = os.path.join(TEST_ROOT, f'sshd-{os.getpid()}')
    server = hostenv.LoopbackSshd(workdir)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope='session')
def host_b(host) -> hostb.HostB:
    """Host B, made (or found up) by tools/host-b."""
    return hostb.HostB.setup()


@dataclasses.dataclass
class Scenario:
    """One guest, its config file, and a way to run the CLI against it."""

    root: str
    conf_file: str
    host: Host
    guest: testguest.TestGuest

    @property
    def instances(self) -> str:
        return os.path.join(self.root, 'instances')

    @property
    def dest_instances(self) -> str:
        return os.path.join(self.root, 'dest-instances')

    def cli(self, *args: str, expect_rc: int = 0,
            conf_file: Optional[str] = None,
            crash_at: Optional[str] = None) -> subprocess.CompletedProcess:
        """The command with this scenario's config (or ``conf_file``)."""
        return run_cli(conf_file or self.conf_file, args, crash_at,
                       expect_rc)

    def wait_boot(self, boot: int) -> guestlog.GuestReport:
        return guestlog.wait_for_boot(self.guest.console_log(self.host), boot)

    def domains_named(self) -> list[str]:
        return [d.UUIDString() for d in self.host.conn.listAllDomains()
                if d.name() == self.guest.name]

    def disk_paths(self) -> list[str]:
        """The instance's own disks (not the host's read-only CD-ROM,
        which stays where it is)."""
        from resizedriver import domain_xml
        return [d.path for d in domain_xml.file_disks(
            self.host.lookup(self.guest.uuid).xml())
            if d.target_dev != testguest.CDROM_DEV]


def run_cli(conf_file: str, args: tuple[str, ...],
            crash_at: Optional[str] = None, expect_rc: Optional[int] = 0,
            env: Optional[dict[str, str]] = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """``resizedriver --config-file conf_file ARGS`` (as ``crashcli`` with
    ``RD_CRASH_AT=crash_at`` if that is given, with ``env`` for its
    environment), its exit code checked unless ``expect_rc`` is None."""
    env = dict(env or os.environ)
    program = ['-m', 'resizedriver.cmd.cli']
    if crash_at:
        env['RD_CRASH_AT'] = crash_at
        program = [CRASHCLI]
    proc = subprocess.run(
        [sys.executable, *program, '--config-file', conf_file, *args],
        capture_output=True, text=True, timeout=timeout, env=env,
        cwd=os.path.dirname(os.path.dirname(HERE)))
    if expect_rc is not None:
        assert proc.returncode == expect_rc, (
            f'resizedriver {" ".join(args)} exited {proc.returncode}, '
            f'wanted {expect_rc}\nstdout:\n{proc.stdout}\n'
            f'stderr:\n{proc.stderr}')
    return proc


def with_options(conf_file: str, name: str, options: dict[str, object]
                 ) -> str:
    """A copy of ``conf_file`` (as ``<name>.conf`` beside it) with more
    ``[resizedriver]`` options; returns its path."""
    with open(conf_file) as f:
        text = f.read()
    lines = ''.join(f'{k} = {v}\n' for k, v in options.items())
    assert '[resizedriver]\n' in text, text
    path = os.path.join(os.path.dirname(conf_file), f'{name}.conf')
    with open(path, 'w') as f:
        f.write(text.replace('[resizedriver]\n', '[resizedriver]\n' + lines))
    return path


def write_config(root: str, sshd: 'hostenv.LoopbackSshd | hostb.HostB',
                 transport: str = 'ssh', instances: str = '',
                 name: str = 'resizedriver', remote_conf: str = '',
                 extra: str = '') -> str:
    """The config file ``<root>/<name>.conf`` of a scenario rooted at
    ``root``: instances path ``instances`` (default ``<root>/instances``),
    ``sshd`` as the "second host", the destination half run by this same
    interpreter with ``remote_conf`` (default: this file), locks of its
    own, ``extra`` lines in ``[resizedriver]``.  Returns its path."""
    conf_file = os.path.join(root, f'{name}.conf')
    remote = (f'{sys.executable} -m resizedriver.cmd.cli '
              f'--config-file {remote_conf or conf_file}')
    with open(conf_file, 'w') as f:
        f.write(f"""[DEFAULT]
instances_path = {instances or os.path.join(root, 'instances')}
use_cow_images = true
[libvirt]
virt_type = kvm
remote_filesystem_transport = {transport}
[resizedriver]
shutdown_timeout = 60
shutdown_retry_interval = 2
ssh_user = root
ssh_port = {sshd.port}
ssh_identity_file = {sshd.key}
ssh_options = {','.join(sshd.client_options())}
remote_command = {remote}
lock_path = {root}/locks-{name}
{extra}""")
    return conf_file


def make_scenario(request, host: Host, sshd: hostenv.LoopbackSshd,
                  room: Optional[headroom.Headroom] = None):
    """A scenario's guest (with ``room`` to grow live), booted; yields
    the scenario and removes it afterwards."""
    name = parallel.test_name('rdtest', request.node.name)
    root = os.path.join(TEST_ROOT, name)
    stale = host.lookup(name)
    if stale is not None:
        testguest.remove(host, testguest.TestGuest('', stale.uuid, name,
                                                   '', ''))
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(root, 'instances'))
    os.makedirs(os.path.join(root, 'dest-instances'))
    conf_file = write_config(root, sshd,
                             getattr(request, 'param', 'ssh'))
    ip, mac = parallel.guest_address()
    guest = testguest.create(
        host, os.path.join(root, 'instances'), name=name, mac=mac, ip=ip,
        bridge=hostenv.BRIDGE, room=room)
    host.lookup(guest.uuid).start()
    yield Scenario(root, conf_file, host, guest)
    testguest.remove(host, guest)
    try:
        shutil.rmtree(root)
    except OSError:
        pass


@pytest.fixture
def scenario(request, host, sshd) -> Iterator[Scenario]:
    yield from make_scenario(request, host, sshd)


@pytest.fixture
def cross(request, host, host_b):
    """A guest on A that moves to host B cold (the copy plan:
    ``pre_copy = false``), over ``request.param`` (default ssh)."""
    from tests.functional import crosshost
    yield from crosshost.make_cross_scenario(
        request, host, host_b, getattr(request, 'param', 'ssh'), False)


@pytest.fixture
def precopy(request, host, host_b):
    """A guest on A that moves to host B as configured by default:
    pre-copy, it runs."""
    from tests.functional import crosshost
    yield from crosshost.make_cross_scenario(request, host, host_b, 'ssh',
                                             True)


#: the headroom of the live scenarios' guests (1 vCPU, 256 MiB at first)
LIVE_ROOM = headroom.Headroom(max_vcpus=4, max_memory_mib=1024)


@pytest.fixture
def live_scenario(request, host, sshd) -> Iterator[Scenario]:
    """A guest started with headroom, as the driver defines one when the
    operator asks for it."""
    yield from make_scenario(request, host, sshd, LIVE_ROOM)


def pytest_sessionfinish(session):
    """A pytest-xdist worker hands its rows of the fault table to the
    controller, which prints the table."""
    from tests.functional import faultbench
    output = getattr(session.config, 'workeroutput', None)
    if output is not None:
        output['fault_rows'] = [dataclasses.asdict(row)
                                for row in faultbench.TABLE]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """(pytest-xdist, on the controller) a worker's rows."""
    from tests.functional import faultbench
    rows = getattr(node, 'workeroutput', {}).get('fault_rows', [])
    faultbench.TABLE.extend(faultbench.Row(**row) for row in rows)


def pytest_terminal_summary(terminalreporter):
    """The step x fault -> outcome table of the fault tests that ran."""
    from tests.functional import faultbench
    if not faultbench.TABLE:
        return
    terminalreporter.write_sep('=', 'fault injection: step x fault -> '
                                    'outcome')
    for line in faultbench.format_table(faultbench.TABLE):
        terminalreporter.write_line(line)


def sha256(path: str) -> str:
    out = subprocess.run(['sha256sum', path], check=True, capture_output=True,
                         text=True).stdout
    return out.split()[0]


