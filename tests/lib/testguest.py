"""A throwaway guest laid out exactly like a Nova instance.

``<instances>/_base/<sha1>`` is the raw base image, ``<instances>/<uuid>/``
holds a qcow2 overlay ``disk`` over it, ``kernel`` and ``ramdisk`` (direct
kernel boot, as Nova does for AMI-style images) and ``console.log``.  The
guest has one VIF on a Linux bridge and its static IP on the kernel
command line, a read-only CD-ROM image outside the instance directory and
a guest-agent channel socket, as Nova instances often have.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import uuid as uuidlib
from typing import Optional

import libvirt
from lxml import etree

from resizedriver import headroom
from resizedriver.host import Host

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
GUEST_BUILD = os.environ.get('RESIZEDRIVER_GUEST_DIR',
                             os.path.join(REPO, 'build', 'guest'))
IMAGE_ID = 'resizedriver-test-image'
#: the guest's kernel, uncompressed: it boots in half the time under TCG
#: (tools/build-test-guest)
KERNEL = 'vmlinux'
CDROM_DEV = 'hdc'

DOMAIN_XML = """<domain type='{virt_type}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <currentMemory unit='MiB'>{memory_mib}</currentMemory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{dir}/kernel</kernel>
    <initrd>{dir}/ramdisk</initrd>
    <cmdline>console=ttyS0 quiet rdip={ip}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{dir}/disk'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='{mac}'/>
      <source bridge='{bridge}'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <log file='{dir}/console.log' append='on'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='{iso}'/>
      <target dev='{cdrom_dev}' bus='ide'/>
      <readonly/>
    </disk>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/rdga.{uuid}.sock'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""


def build_guest_image() -> str:
    """Build (or reuse) the kernel + initramfs; return the build dir."""
    subprocess.run([os.path.join(REPO, 'tools', 'build-test-guest'),
                    GUEST_BUILD], check=True, stdout=subprocess.DEVNULL)
    return GUEST_BUILD


@dataclasses.dataclass
class TestGuest:
    instances_path: str
    uuid: str
    name: str
    mac: str
    ip: str

    @property
    def dir(self) -> str:
        return os.path.join(self.instances_path, self.uuid)

    def console_log(self, host: Host) -> str:
        """The console log the current definition writes to."""
        xml = host.lookup(self.uuid).xml()
        log = etree.fromstring(xml.encode()).find('./devices/serial/log')
        return log.get('file')


def create(host: Host, instances_path: str, *, name: str, mac: str, ip: str,
           bridge: str, vcpus: int = 1, memory_mib: int = 256,
           disk_mib: int = 64,
           room: Optional[headroom.Headroom] = None) -> TestGuest:
    """Lay out a Nova-style instance and define (not start) its domain,
    with ``room`` to grow live (as the driver gives one at spawn)."""
    build = build_guest_image()
    uuid = str(uuidlib.uuid4())
    base_dir = os.path.join(instances_path, '_base')
    os.makedirs(base_dir, exist_ok=True)
    base = base_image_path(instances_path)
    if not os.path.exists(base):
        subprocess.run(['qemu-img', 'create', '-f', 'raw', base,
                        f'{disk_mib}M'], check=True, stdout=subprocess.DEVNULL)
    inst_dir = os.path.join(instances_path, uuid)
    os.makedirs(inst_dir)
    subprocess.run(['qemu-img', 'create', '-f', 'qcow2', '-F', 'raw', '-b',
                    base, os.path.join(inst_dir, 'disk'), f'{disk_mib}M'],
                   check=True, stdout=subprocess.DEVNULL)
    shutil.copy(os.path.join(build, KERNEL), os.path.join(inst_dir, 'kernel'))
    shutil.copy(os.path.join(build, 'initrd.img'),
                os.path.join(inst_dir, 'ramdisk'))
    xml = DOMAIN_XML.format(
        virt_type=host.virt_type('kvm'), name=name, uuid=uuid,
        memory_mib=memory_mib, vcpus=vcpus, dir=inst_dir, ip=ip, mac=mac,
        bridge=bridge, iso=_iso(os.path.dirname(instances_path)),
        cdrom_dev=CDROM_DEV)
    if room is not None:
        xml = headroom.apply(xml, room, vcpus, memory_mib)
    host.define(xml)
    return TestGuest(instances_path, uuid, name, mac, ip)


def base_image_path(instances_path: str) -> str:
    """Where Nova's image cache keeps the test image: ``_base/<sha1 of
    the image id>``."""
    return os.path.join(instances_path, '_base',
                        hashlib.sha1(IMAGE_ID.encode()).hexdigest())


def _iso(directory: str) -> str:
    """A read-only CD-ROM image outside the instance directory, as an
    operator's ISO would be ("CD001" marks ISO 9660), so that every resize
    proves such host files (and the guest-agent socket) are kept."""
    path = os.path.join(directory, 'rdtest-cdrom.iso')
    if not os.path.exists(path):
        with open(path, 'wb') as f:
            f.truncate(64 * 1024)
            os.pwrite(f.fileno(), b'CD001', 32769)
    return path


def boot_with(host: Host, uuid: str, parameter: str) -> None:
    """Start the guest again (hard off first) with one more kernel
    ``parameter``: the test guest's way of playing another guest OS
    (``tools/guest-init``)."""
    guest = host.lookup(uuid)
    root = etree.fromstring(guest.xml().encode())
    root.find('./os/cmdline').text += f' {parameter}'
    guest.destroy()
    host.define(etree.tostring(root, encoding='unicode'))
    host.lookup(uuid).start()


def remove(host: Host, guest: TestGuest) -> None:
    """Destroy and undefine the domain if it is still there."""
    dom = host.lookup(guest.uuid)
    if dom is not None:
        try:
            dom.destroy()
            dom.undefine()
        except libvirt.libvirtError:
            pass
