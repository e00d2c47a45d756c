"""A thin object over a libvirt connection (cf. Nova's virt/libvirt/host.py).

Besides lookups and defines it decides the domain type: ``kvm`` only where
KVM really works.  Machines that have ``/dev/kvm`` but a CPU without
vmx/svm exist (nested clouds); there we must ask for TCG (``qemu``).
"""

from __future__ import annotations

import os
from typing import Optional

import libvirt

from resizedriver.guest import Guest

DEFAULT_URI = 'qemu:///system'


def kvm_usable(cpuinfo: str = '/proc/cpuinfo',
               device: str = '/dev/kvm') -> bool:
    """Whether this host can run KVM guests."""
    if not os.path.exists(device):
        return False
    with open(cpuinfo) as f:
        flags = {w for line in f if line.startswith('flags')
                 for w in line.split()}
    return bool(flags & {'vmx', 'svm'})


class Host:
    def __init__(self, uri: str = '',
                 conn: Optional['libvirt.virConnect'] = None) -> None:
        """Open ``uri`` when first needed, or use an open ``conn`` (under
        Nova: the connection Nova's own Host already manages)."""
        self.uri = uri or DEFAULT_URI
        self._conn = conn

    @property
    def conn(self) -> 'libvirt.virConnect':
        if self._conn is None:
            # libvirt prints every error to stderr by default; ours are
            # raised as exceptions and reported once, by the caller.
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
            self._conn = libvirt.open(self.uri)
        return self._conn

    @staticmethod
    def virt_type(requested: str) -> str:
        """``requested`` unless it is kvm and KVM does not work here."""
        if requested == 'kvm' and not kvm_usable():
            return 'qemu'
        return requested

    def lookup(self, uuid_or_name: str) -> Optional[Guest]:
        """The domain with this UUID (or name), None if there is none."""
        for lookup in (self.conn.lookupByUUIDString, self.conn.lookupByName):
            try:
                return Guest(lookup(uuid_or_name))
            except libvirt.libvirtError as e:
                if e.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN,
                                              libvirt.VIR_ERR_INVALID_ARG):
                    raise
        return None

    def remove(self, uuid: str) -> None:
        """Stop and undefine the domain, if there is one."""
        guest = self.lookup(uuid)
        if guest is not None:
            guest.destroy()
            guest.undefine()

    def hypervisor_version(self) -> tuple[int, int, int]:
        """QEMU's version (major, minor, micro), as libvirt reports it."""
        v = int(self.conn.getVersion())
        return v // 1000000, v // 1000 % 1000, v % 1000

    def define(self, xml: str) -> Guest:
        """Define (or redefine) a domain.  A running domain keeps running
        as it is; the new definition applies from its next start."""
        return Guest(self.conn.defineXML(xml))
