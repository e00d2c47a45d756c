"""The host side of the functional tests: daemons, a bridge, an sshd.

Everything the tests need is started here (``tools/setup-host`` installs
and starts libvirt), so a bare machine needs nothing done by hand.  The
bridge has no uplink and uses link-local addresses: guest traffic cannot
leave this machine.  The sshd listens on 127.0.0.1 only and accepts one
key made for the run; it is the "second host" of cross-host tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

from tests.lib.testguest import REPO

BRIDGE = 'rdbr0'
HOST_IP = '169.254.77.1/24'


def setup_host() -> None:
    subprocess.run([os.path.join(REPO, 'tools', 'setup-host')], check=True)


def set_up(script: str) -> dict[str, str]:
    """``SCRIPT setup`` (a tool that makes something this machine lacks:
    ``tools/host-b``, ``tools/ceph``), then what its ``info`` says
    (``KEY=VALUE`` lines)."""
    subprocess.run([script, 'setup'], check=True)
    return dict(line.split('=', 1) for line in subprocess.run(
        [script, 'info'], check=True, capture_output=True,
        text=True).stdout.splitlines())


def ensure_bridge() -> None:
    if not os.path.exists(f'/sys/class/net/{BRIDGE}'):
        subprocess.run(['ip', 'link', 'add', 'name', BRIDGE, 'type',
                        'bridge'], check=True)
    subprocess.run(['ip', 'link', 'set', BRIDGE, 'up'], check=True)
    addrs = subprocess.run(['ip', '-o', 'addr', 'show', 'dev', BRIDGE],
                           check=True, capture_output=True, text=True).stdout
    if HOST_IP not in addrs:
        subprocess.run(['ip', 'addr', 'add', HOST_IP, 'dev', BRIDGE],
                       check=True)


def ping(ip: str, attempts: int = 20) -> bool:
    """Whether ``ip`` answers on the bridge (retrying while it comes up)."""
    for _ in range(attempts):
        if subprocess.run(['ping', '-c', '1', '-W', '1', '-I', BRIDGE, ip],
                          stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0:
            return True
        time.sleep(0.5)
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class LoopbackSshd:
    """An sshd on 127.0.0.1 accepting a key of its own, as root."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.key = os.path.join(workdir, 'id_ed25519')
        self.pidfile = os.path.join(workdir, 'sshd.pid')

    def start(self) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        os.makedirs('/run/sshd', exist_ok=True)
        hostkey = os.path.join(self.workdir, 'hostkey')
        for key in (hostkey, self.key):
            if not os.path.exists(key):
                subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '',
                                '-f', key], check=True)
        authorized = os.path.join(self.workdir, 'authorized_keys')
        with open(self.key + '.pub') as src, open(authorized, 'w') as dst:
            dst.write(src.read())
        config = os.path.join(self.workdir, 'sshd_config')
        with open(config, 'w') as f:
            f.write(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {hostkey}
PidFile {self.pidfile}
AuthorizedKeysFile {self.workdir}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
""")
        subprocess.run(['/usr/sbin/sshd', '-f', config], check=True)
        for _ in range(50):
            if subprocess.run(['ssh'] + self.client_args() +
                              ['root@127.0.0.1', 'true'],
                              capture_output=True).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError('loopback sshd did not come up')

    def client_options(self) -> list[str]:
        return ['BatchMode=yes', 'StrictHostKeyChecking=no',
                'UserKnownHostsFile=/dev/null', 'LogLevel=ERROR']

    def client_args(self) -> list[str]:
        args = ['-p', str(self.port), '-i', self.key]
        for opt in self.client_options():
            args += ['-o', opt]
        return args

    def pid(self) -> int:
        """The listener's PID."""
        with open(self.pidfile) as f:
            return int(f.read().strip())

    def stop(self) -> None:
        if os.path.exists(self.pidfile):
            try:
                os.kill(self.pid(), 15)
            except ProcessLookupError:
                pass
