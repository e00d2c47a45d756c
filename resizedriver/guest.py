"""A thin object over one libvirt domain (cf. Nova's virt/libvirt/guest.py).

It knows libvirt, not resizes: power it off cleanly, start it, wait for it,
read and drop its definition.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

import libvirt
from oslo_log import log as logging

from resizedriver import exception

LOG = logging.getLogger(__name__)
#: how often a wait looks at the guest's state: libvirt answers in well
#: under a millisecond, and in a power off every interval is downtime
#: added to a cold resize (Nova's own ``_clean_shutdown`` looks once a
#: second)
POLL_SECONDS = 0.02


@dataclasses.dataclass(frozen=True)
class BlockJob:
    type: int     # libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_*
    cur: int      # progress, in units of end (bytes, roughly)
    end: int


class Guest:
    def __init__(self, domain: 'libvirt.virDomain') -> None:
        self._domain = domain

    @property
    def uuid(self) -> str:
        return self._domain.UUIDString()

    @property
    def name(self) -> str:
        return self._domain.name()

    def xml(self) -> str:
        """The persistent definition (what a redefine must reproduce)."""
        return self._domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE |
                                    libvirt.VIR_DOMAIN_XML_SECURE)

    def live_xml(self) -> str:
        return self._domain.XMLDesc(0)

    def is_running(self) -> bool:
        state, _reason = self._domain.state()
        return state not in (libvirt.VIR_DOMAIN_SHUTOFF,
                             libvirt.VIR_DOMAIN_CRASHED,
                             libvirt.VIR_DOMAIN_NOSTATE)

    def power_off(self, timeout: float, retry_interval: float) -> bool:
        """Shut down cleanly within ``timeout`` s, else hard; True if clean.

        The ACPI request is repeated every ``retry_interval`` seconds (at
        least every second, as Nova's own): a guest whose init is not up
        yet ignores the first one.
        """
        retry_interval = max(retry_interval, 1.0)
        deadline = time.monotonic() + timeout
        next_request = 0.0
        while self.is_running() and time.monotonic() < deadline:
            if time.monotonic() >= next_request:
                LOG.debug('Requesting ACPI shutdown', instance_uuid=self.uuid)
                try:
                    self._domain.shutdown()
                except libvirt.libvirtError as e:
                    if self.is_running():
                        LOG.warning('Shutdown request failed: %s', e,
                                    instance_uuid=self.uuid)
                next_request = time.monotonic() + retry_interval
            time.sleep(POLL_SECONDS)
        if not self.is_running():
            return True
        LOG.warning('Guest did not shut down within %ss, powering off',
                    timeout, instance_uuid=self.uuid)
        self.destroy()
        return False

    def is_paused(self) -> bool:
        return self._domain.state()[0] == libvirt.VIR_DOMAIN_PAUSED

    def pause(self) -> None:
        """Stop the vCPUs; QEMU drains and flushes every disk first."""
        self._domain.suspend()

    def resume(self) -> None:
        self._domain.resume()

    def destroy(self) -> None:
        if self.is_running():
            self._domain.destroy()

    def start(self) -> None:
        self._domain.create()

    def ensure_running(self, timeout: float) -> None:
        """Start unless running already, then wait (bounded) until it is."""
        if not self.is_running():
            self.start()
        self.wait_running(timeout)

    def wait_running(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.is_running():
            if time.monotonic() >= deadline:
                raise exception.ResizeDriverError(
                    f'guest {self.name} did not start within {timeout}s')
            time.sleep(POLL_SECONDS)

    def block_pull(self, target_dev: str, base: Optional[str],
                   bandwidth: int = 0) -> None:
        """Start pulling the backing chain above ``base`` (all of it if
        None) into the active image of ``target_dev``, at most
        ``bandwidth`` bytes/s (0: unlimited).  Flags 0: QEMU records
        ``base`` by its absolute name, as Nova's overlays name ``_base``."""
        flags = libvirt.VIR_DOMAIN_BLOCK_REBASE_BANDWIDTH_BYTES \
            if bandwidth else 0
        self._domain.blockRebase(target_dev, base, bandwidth, flags)

    def block_job(self, target_dev: str) -> Optional[BlockJob]:
        """The block job running on ``target_dev``, None if none."""
        info = self._domain.blockJobInfo(target_dev, 0)
        if not info:
            return None
        return BlockJob(int(info['type']), int(info['cur']),
                        int(info['end']))

    def block_commit_active(self, target_dev: str, base: str) -> None:
        """Start committing the active image of ``target_dev`` and every
        image above ``base`` into ``base`` (named: never into a shared
        ``_base``); it then mirrors until pivoted."""
        self._domain.blockCommit(target_dev, base, None, 0,
                                 libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE)

    def pivot_block_job(self, target_dev: str) -> None:
        """End a ready active commit by switching the guest to its base."""
        self._domain.blockJobAbort(target_dev,
                                   libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)

    def snapshot_disks(self, snapshot_xml: str) -> None:
        """An external disk-only snapshot, atomic across the disks, kept
        in no libvirt metadata (the files are the whole state): each
        named disk goes on writing to a new overlay over its current
        image, in the live and the persistent definition."""
        self._domain.snapshotCreateXML(
            snapshot_xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY |
            libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA |
            libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)

    def abort_block_job(self, target_dev: str) -> None:
        """Cancel it and wait until QEMU has (a pull leaves the backing
        pointer as it was: what it copied up is the same data)."""
        self._domain.blockJobAbort(target_dev, 0)

    def flush_disks(self) -> None:
        """Make QEMU write its cached image metadata out: pausing a guest
        drains and flushes every disk (QEMU's vm_stop), with no help from
        the guest.  The guest is frozen for the pause (~0.05 s here)."""
        self.pause()
        self.resume()

    # -- live changes (a running guest; each is read back by the caller) --

    def set_vcpus_live(self, vcpus: int) -> None:
        """Hot-plug (or unplug) vCPUs up to the definition's maximum."""
        self._domain.setVcpusFlags(vcpus, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def update_device_live(self, device_xml: str) -> None:
        """Change a device of the running guest (a virtio-mem device's
        ``<requested>`` size, for one)."""
        self._domain.updateDeviceFlags(device_xml,
                                       libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def block_resize(self, target_dev: str, size: int) -> None:
        """Grow the image behind ``target_dev`` to ``size`` bytes while
        the guest runs; QEMU tells the guest's driver of the new size."""
        self._domain.blockResize(target_dev, size,
                                 libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)

    def block_capacity(self, target_dev: str) -> int:
        """The virtual size QEMU reports for ``target_dev``, in bytes."""
        return int(self._domain.blockInfo(target_dev, 0)[0])

    def undefine(self) -> None:
        self._domain.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
            libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
