"""Host B scenarios: a guest on this host (A) that moves to host B.

``CrossScenario`` is a ``Scenario`` whose instances path is B's too (the
path tools/host-b gives B its own filesystem at), with B's libvirtd, files
and console at hand.  The fixtures are in ``conftest``.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import subprocess
from typing import Iterator, Optional

from resizedriver.host import Host
from tests.functional import crashcli
from tests.functional.conftest import TEST_ROOT, Scenario, write_config
from tests.lib import guestlog, hostb, hostenv, parallel, testguest

BASE = os.path.basename(testguest.base_image_path(''))


@dataclasses.dataclass
class CrossScenario(Scenario):
    b: hostb.HostB = dataclasses.field(default=None)   # type: ignore

    @property
    def instances(self) -> str:
        return self.b.instances

    @property
    def b_host(self) -> Host:
        return self.b.host()

    def wait_boot_on_b(self, boot: int) -> guestlog.GuestReport:
        log = self.guest.console_log(self.b_host)
        return guestlog.wait_for_boot(self.b.path(log), boot)

    def b_path(self, *parts: str) -> str:
        return self.b.path(os.path.join(self.b.instances, *parts))

    def remove_everywhere(self, guest: testguest.TestGuest) -> None:
        """The guest's domains and directories on A and on B."""
        for host, path in ((self.host, lambda p: p),
                           (self.b_host, self.b.path)):
            testguest.remove(host, guest)
            for d in glob.glob(path(os.path.join(self.b.instances,
                                                 guest.uuid + '*'))):
                shutil.rmtree(d, ignore_errors=True)


def make_cross_scenario(request, host: Host, b: hostb.HostB, transport: str,
                    pre_copy: bool) -> Iterator[CrossScenario]:
    name = parallel.test_name('rdtest', request.node.name)
    root = os.path.join(TEST_ROOT, name)
    for h in (host, b.host()):
        stale = h.lookup(name)
        if stale is not None:
            testguest.remove(h, testguest.TestGuest('', stale.uuid, name,
                                                    '', ''))
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    os.makedirs(b.instances, exist_ok=True)
    extra = f'pre_copy = {pre_copy}\n'
    b_conf = write_config(root, b, transport, instances=b.instances,
                          name='b', extra=extra)
    a_conf = write_config(root, b, transport, instances=b.instances,
                          name='a', remote_conf=b_conf, extra=extra)
    ip, mac = parallel.guest_address()
    guest = testguest.create(host, b.instances, name=name, mac=mac, ip=ip,
                             bridge=hostenv.BRIDGE)
    host.lookup(guest.uuid).start()
    s = CrossScenario(root, a_conf, host, guest, b=b)
    yield s
    s.remove_everywhere(guest)
    shutil.rmtree(root, ignore_errors=True)


def holds_pattern(disk: str, on_b: Optional[CrossScenario] = None,
                  length: int = crashcli.LENGTH) -> bool:
    """Whether the guest sees crashcli's pattern in ``disk`` (``length``
    bytes at its offset), read through its chain, beside the guest that
    runs on it; inside B for ``on_b``, where the chain's paths are
    right."""
    argv = ['qemu-io', '-U', '-r', '-f', 'qcow2', '-c',
            f'read -P {crashcli.PATTERN:#x} {crashcli.OFFSET} {length}',
            disk]
    proc = subprocess.run(on_b.b.command(*argv) if on_b else argv,
                          capture_output=True, text=True)
    if 'Pattern verification failed' in proc.stdout + proc.stderr:
        return False
    assert proc.returncode == 0 and f'read {length}/{length}' in \
        proc.stdout, proc
    return True
