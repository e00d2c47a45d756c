"""Shared fixtures: a Nova-style instance directory made of real images.

Everything lives under pytest's tmp_path; qemu-img only touches those
files.  No libvirtd: the domain XML is a string and the "host" is a fake.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid as uuidlib

import pytest
from oslo_config import cfg

from resizedriver import conf as rd_conf
from resizedriver import sparse
from resizedriver.env import HostEnv
from tests.unit import fakes

MiB = 1024 * 1024


def qemu_img(*args: str) -> None:
    subprocess.run(['qemu-img', *args], check=True,
                   stdout=subprocess.DEVNULL)


def write_at(path: str, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def sha256(path: str) -> str:
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


DOMAIN_XML = """<domain type='kvm'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='KiB'>{memory_kib}</memory>
  <currentMemory unit='KiB'>{memory_kib}</currentMemory>
  <vcpu placement='static'>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{dir}/kernel</kernel>
    <cmdline>console=ttyS0</cmdline>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='{root_type}' cache='none'/>
      <source file='{dir}/disk'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source file='{dir}/disk.local'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    {swap}
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='{iso}'/>
      <target dev='hdc' bus='ide'/>
      <readonly/>
    </disk>
    <interface type='bridge'>
      <mac address='fa:16:3e:00:00:01'/>
      <source bridge='br-test'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <log file='{dir}/console.log' append='off'/>
      <target port='0'/>
    </serial>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
</domain>
"""

SWAP_XML = """<disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source file='{dir}/disk.swap'/>
      <target dev='vdc' bus='virtio'/>
    </disk>"""


class Instance:
    """A real instance layout: paths, XML and the bytes it started with."""

    def __init__(self, instances: str, uuid: str, xml: str) -> None:
        self.instances = instances
        self.uuid = uuid
        self.xml = xml

    @property
    def dir(self) -> str:
        return os.path.join(self.instances, self.uuid)

    @property
    def resize_dir(self) -> str:
        return self.dir + '_resize'

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def hashes(self, directory: str | None = None) -> dict[str, str]:
        d = directory or self.dir
        return {n: sha256(os.path.join(d, n)) for n in sorted(os.listdir(d))
                if os.path.isfile(os.path.join(d, n))}


def make_instance(instances: str, *, root_mib: int = 8, eph_mib: int = 4,
                  swap_mib: int = 0, vcpus: int = 1, memory_mib: int = 256,
                  disk_info: bool = True) -> Instance:
    """<instances>/_base/<sha1> raw, <uuid>/disk qcow2 over it, a raw
    disk.local with data, optionally disk.swap, a kernel, disk.info."""
    uuid = str(uuidlib.uuid4())
    base_dir = os.path.join(instances, '_base')
    os.makedirs(base_dir, exist_ok=True)
    base = os.path.join(base_dir, hashlib.sha1(uuid.encode()).hexdigest())
    qemu_img('create', '-f', 'raw', base, f'{root_mib}M')
    write_at(base, 0, b'BASE' * 1024)
    inst_dir = os.path.join(instances, uuid)
    os.makedirs(inst_dir)
    qemu_img('create', '-f', 'qcow2', '-F', 'raw', '-b', base,
             os.path.join(inst_dir, 'disk'), f'{root_mib}M')
    local = os.path.join(inst_dir, 'disk.local')
    qemu_img('create', '-f', 'raw', local, f'{eph_mib}M')
    write_at(local, 0, b'EPHEMERAL-START')
    write_at(local, eph_mib * MiB - 4096, b'EPHEMERAL-END')
    swap = ''
    if swap_mib:
        qemu_img('create', '-f', 'raw', os.path.join(inst_dir, 'disk.swap'),
                 f'{swap_mib}M')
        swap = SWAP_XML.format(dir=inst_dir)
    with open(os.path.join(inst_dir, 'kernel'), 'wb') as f:
        f.write(os.urandom(3000))
    with open(os.path.join(inst_dir, 'console.log'), 'w') as f:
        f.write('boot log\n')
    if disk_info:
        with open(os.path.join(inst_dir, 'disk.info'), 'w') as f:
            f.write('{"%s/disk": "qcow2"}' % inst_dir)
    iso = os.path.join(os.path.dirname(instances), 'isos', 'install.iso')
    os.makedirs(os.path.dirname(iso), exist_ok=True)
    with open(iso, 'wb') as f:           # "CD001" marks an ISO 9660 image
        f.truncate(64 * 1024)
        os.pwrite(f.fileno(), b'CD001', 32769)
    xml = DOMAIN_XML.format(
        name='guest-' + uuid[:8], uuid=uuid, memory_kib=memory_mib * 1024,
        vcpus=vcpus, dir=inst_dir, root_type='qcow2', swap=swap, iso=iso)
    return Instance(instances, uuid, xml)


@pytest.fixture
def instances(tmp_path) -> str:
    path = tmp_path / 'instances'
    path.mkdir()
    return str(path)


@pytest.fixture
def instance(instances) -> Instance:
    return make_instance(instances)


@pytest.fixture
def conf(instances) -> cfg.ConfigOpts:
    c = cfg.ConfigOpts()
    rd_conf.register_opts(c)
    c([])
    c.set_override('instances_path', instances)
    c.set_override('shutdown_timeout', 7, group='resizedriver')
    c.set_override('shutdown_retry_interval', 3, group='resizedriver')
    # one copy at a time: tests that count copies before a failure see
    # them in order (test_migrate's parallel test sets its own)
    c.set_override('parallel_copies', 1, group='resizedriver')
    return c


@pytest.fixture
def make_env(conf):
    def make(*guests: fakes.FakeGuest) -> HostEnv:
        return HostEnv(conf=conf, host=fakes.FakeHost(list(guests)))
    return make


@pytest.fixture
def corrupting_wire(monkeypatch) -> None:
    """Every sparse stream arrives with its first data byte flipped (a bad
    wire): the sender's hash is of the true bytes, what the destination
    holds is not."""
    real = sparse.write_stream

    class Flipping:
        def __init__(self, out) -> None:
            self.out = out
            self.pos = 0

        def write(self, data: bytes) -> None:
            at = sparse.FRAME.size - self.pos
            if 0 <= at < len(data):
                data = data[:at] + bytes([data[at] ^ 0xff]) + data[at + 1:]
            self.pos += len(data)
            self.out.write(data)

        def flush(self) -> None:
            self.out.flush()

    monkeypatch.setattr(sparse, 'write_stream',
                        lambda src, out, progress=None:
                        real(src, Flipping(out), progress))
