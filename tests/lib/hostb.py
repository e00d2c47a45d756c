"""Host B (``tools/host-b``) as the tests and the benchmark see it.

B is a second compute host on this machine: its own network namespace
behind one veth pair, its own mount namespace (instances filesystem,
machine-id, libvirt directories), its own libvirtd and sshd.  From here
(host A) it is reached the way another compute host is: over ssh, or its
libvirtd through its socket, its files through its mount namespace.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time

from resizedriver.host import Host
from tests.lib import hostenv
from tests.lib.hostenv import BRIDGE
from tests.lib.testguest import REPO

SCRIPT = os.path.join(REPO, 'tools', 'host-b')


@dataclasses.dataclass(frozen=True)
class HostB:
    addr: str
    veth: str
    instances: str
    key: str
    known_hosts: str
    sshd_pid_file: str
    port: int = 22

    @classmethod
    def setup(cls) -> 'HostB':
        info = hostenv.set_up(SCRIPT)
        return cls(addr=info['ADDR_B'], veth=info['VETH_A'],
                   instances=info['INSTANCES'], key=info['KEY'],
                   known_hosts=info['KNOWN_HOSTS'],
                   sshd_pid_file=info['SSHD_PID_FILE'])

    def _pid(self) -> int:
        """A process living in B's namespaces (its sshd listener)."""
        with open(self.sshd_pid_file) as f:
            return int(f.read().strip())

    def path(self, path: str) -> str:
        """``path`` as B sees it, opened from A."""
        return f'/proc/{self._pid()}/root{path}'

    def host(self) -> Host:
        """B's libvirtd."""
        return Host('qemu+unix:///system?socket=' +
                    self.path('/run/libvirt/libvirt-sock'))

    def command(self, *argv: str) -> list[str]:
        """``argv`` as a command that runs inside B."""
        return [SCRIPT, 'run', *argv]

    def run(self, *argv: str) -> str:
        """Run a command inside B; its stdout."""
        return subprocess.run(self.command(*argv), check=True,
                              capture_output=True, text=True).stdout

    def client_options(self) -> list[str]:
        return ['BatchMode=yes', 'StrictHostKeyChecking=yes',
                f'UserKnownHostsFile={self.known_hosts}', 'LogLevel=ERROR']

    def wire_bytes(self) -> int:
        """Bytes that crossed the veth between A and B so far (both
        ways)."""
        total = 0
        for way in ('rx_bytes', 'tx_bytes'):
            with open(f'/sys/class/net/{self.veth}/statistics/{way}') as f:
                total += int(f.read())
        return total

    def ping(self, ip: str, attempts: int = 20) -> bool:
        """Whether ``ip`` answers on B's bridge."""
        for _ in range(attempts):
            if subprocess.run([SCRIPT, 'run', 'ping', '-c', '1', '-W', '1',
                               '-I', BRIDGE, ip], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0:
                return True
            time.sleep(0.5)
        return False
