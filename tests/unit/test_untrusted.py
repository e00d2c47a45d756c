"""Untrusted input: crafted images, a tampered record, a hostile definition.

Disk contents are the guest's and the record (disk info, source
definition) is the other host's.  Each crafted image (tests/unit/crafted.py)
is refused with a clear message, and where it points at a host file that
file is a FIFO: opening it for reading would block, so a check that
returns within the timeout proves nothing opened it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import threading
import time
from typing import Any, Callable

import pytest

from resizedriver import domain_xml
from resizedriver import exception
from resizedriver import inventory
from resizedriver import qemuimg
from resizedriver.layout import InstanceLayout
from resizedriver.model import Destination, Flavor, GiB, MiB, Topology
from resizedriver.operations.finish import FinishMigration
from resizedriver.qemuimg import QemuImg
from resizedriver.record import ResizeRecord
from resizedriver.transport import LocalTransport
from tests.unit import crafted
from tests.unit.conftest import qemu_img

TIMEOUT = 20


@pytest.fixture
def qimg() -> QemuImg:
    return QemuImg(LocalTransport(), 64 * GiB)


@pytest.fixture
def secret(tmp_path) -> str:
    """A host file no check may read: a FIFO outside every allowed dir."""
    outside = tmp_path / 'outside'
    outside.mkdir()
    return crafted.fifo(str(outside / 'shadow'))


def guarded(fifo: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; fail if it opens ``fifo`` for reading (it would hang)."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result['value'] = fn()
        except BaseException as e:      # handed to the test thread
            result['error'] = e
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # free it
        thread.join(TIMEOUT)
        pytest.fail(f'{fifo} was opened for reading')
    with pytest.raises(OSError) as no_reader:   # nobody holds it open now
        os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    assert no_reader.value.errno == errno.ENXIO
    if 'error' in result:
        raise result['error']
    return result.get('value')


def layout_of(inst) -> InstanceLayout:
    return InstanceLayout(inst.instances, inst.uuid)


def base_of(inst) -> str:
    base_dir = os.path.join(inst.instances, '_base')
    return os.path.join(base_dir, os.listdir(base_dir)[0])


def discover(inst, qimg, xml: str | None = None):
    return inventory.discover(xml or inst.xml, layout_of(inst), qimg)


def retype(xml: str, path: str, fmt: str | None) -> str:
    """``xml`` with the disk at ``path`` declared ``fmt`` (None: no type)."""
    pattern = (r"<driver name='qemu' type='\w+'( cache='none')?/>"
               rf"(\s*<source file='{re.escape(path)}'/>)")
    driver = f"<driver name='qemu' type='{fmt}'/>" if fmt else ''
    new, n = re.subn(pattern, lambda m: driver + m.group(2), xml)
    assert n == 1
    return new


# -- format probing (CVE-2024-32498 class) --------------------------------

@pytest.mark.parametrize('declared', ['raw', None])
def test_raw_disk_holding_a_qcow2_header_stays_raw(instance, qimg, secret,
                                                   declared):
    local = instance.path('disk.local')
    os.unlink(local)
    crafted.qcow2_header_in_raw(local, backing=secret)
    xml = retype(instance.xml, local, declared)
    disks = guarded(secret, lambda: discover(instance, qimg, xml))
    d = {d.name: d for d in disks}['disk.local']
    assert (d.format, d.virtual_size, d.backing_file) == \
        ('raw', 4 * MiB, None)


def test_raw_disk_holding_a_vmdk_descriptor_stays_raw(instance, qimg,
                                                      secret):
    local = instance.path('disk.local')
    os.unlink(local)
    crafted.vmdk_extent(local, secret)
    os.truncate(local, MiB)
    disks = guarded(secret, lambda: discover(instance, qimg))
    d = {d.name: d for d in disks}['disk.local']
    assert (d.format, d.virtual_size) == ('raw', MiB)


@pytest.mark.parametrize('content,what', [
    ('raw', 'raw data'), ('vmdk', 'vmdk'), ('qed', 'qed')])
def test_declared_qcow2_must_have_a_qcow2_header(instance, qimg, secret,
                                                 content, what):
    disk = instance.path('disk')
    os.unlink(disk)
    if content == 'vmdk':
        crafted.vmdk_extent(disk, secret)
    else:
        qemu_img('create', '-f', content, disk, '8M')
    with pytest.raises(exception.UnsupportedDisk,
                       match=f'declared qcow2 but the file is {what}'):
        guarded(secret, lambda: discover(instance, qimg))


def test_vmdk_with_extent_is_refused_unopened(instance, qimg, secret):
    local = instance.path('disk.local')
    os.unlink(local)
    crafted.vmdk_extent(local, secret)
    xml = retype(instance.xml, local, 'vmdk')
    with pytest.raises(exception.UnsupportedDisk,
                       match="disk format 'vmdk' is not supported"):
        guarded(secret, lambda: discover(instance, qimg, xml))


def test_qcow2_data_file_is_refused_before_qemu_img(instance, qimg, secret):
    os.unlink(instance.path('disk'))
    crafted.qcow2_data_file(instance.path('disk'), secret)
    with pytest.raises(exception.UnsupportedDisk,
                       match='external data file: refused before qemu-img'):
        guarded(secret, lambda: discover(instance, qimg))


def test_qemu_img_info_alone_refuses_data_file(tmp_path, qimg, secret):
    path = crafted.qcow2_data_file(str(tmp_path / 'img'), secret)
    with pytest.raises(exception.UnsupportedDisk, match='data file'):
        guarded(secret, lambda: qimg.info(path, 'qcow2'))


# -- backing files ---------------------------------------------------------

def _backing_cases(inst, secret: str) -> dict[str, tuple[str, str]]:
    """name -> (backing as the header names it, expected message)."""
    base = base_of(inst)
    base_dir = os.path.dirname(base)
    return {
        'absolute elsewhere': (secret, 'is not a file in'),
        'relative with ..': (f'../_base/{os.path.basename(base)}',
                             'not a plain absolute path'),
        'absolute with ..': (f'{base_dir}/../../outside/shadow',
                             'not a plain absolute path'),
        'json pseudo-file': (
            'json:{"driver":"raw","file":{"driver":"file",'
            f'"filename":"{secret}"}}}}', 'not a plain absolute path'),
        'in the instance dir': (inst.path('disk.local'),
                                'is not a file in'),
    }


@pytest.mark.parametrize('case', ['absolute elsewhere', 'relative with ..',
                                  'absolute with ..', 'json pseudo-file',
                                  'in the instance dir'])
def test_backing_file_outside_base_is_refused(instance, qimg, secret, case):
    backing, message = _backing_cases(instance, secret)[case]
    os.unlink(instance.path('disk'))
    crafted.overlay(instance.path('disk'), backing)
    with pytest.raises(exception.UnsafePath, match=message):
        guarded(secret, lambda: discover(instance, qimg))


def test_backing_symlink_in_base_pointing_out_is_refused(instance, qimg,
                                                         secret):
    link = os.path.join(instance.instances, '_base', 'evil')
    os.symlink(secret, link)
    os.unlink(instance.path('disk'))
    crafted.overlay(instance.path('disk'), link)
    with pytest.raises(exception.UnsafePath, match='is not a file in'):
        guarded(secret, lambda: discover(instance, qimg))


def test_base_that_is_itself_a_qcow2_is_refused(instance, qimg, secret):
    base = base_of(instance)
    os.unlink(base)
    crafted.overlay(base, secret)            # _base file backed by secret
    with pytest.raises(exception.UnsupportedDisk,
                       match='is itself a qcow2 image: backing chains'):
        guarded(secret, lambda: discover(instance, qimg))


def test_non_raw_backing_format_is_refused(instance, qimg):
    os.unlink(instance.path('disk'))
    crafted.overlay(instance.path('disk'), base_of(instance), 'qcow2')
    with pytest.raises(exception.UnsupportedDisk,
                       match="backing file format 'qcow2' is refused"):
        discover(instance, qimg)


# -- files that are not plain files ------------------------------------------

def test_fifo_as_a_disk_is_refused_unread(instance, qimg):
    local = instance.path('disk.local')
    os.unlink(local)
    crafted.fifo(local)
    with pytest.raises(exception.UnsupportedDisk, match='not a regular file'):
        guarded(local, lambda: discover(instance, qimg))


def test_disk_symlinked_to_a_host_file_is_refused_unread(instance, qimg,
                                                         secret):
    os.unlink(instance.path('disk.local'))
    os.symlink(secret, instance.path('disk.local'))
    with pytest.raises(exception.UnsafePath, match='outside the instance'):
        guarded(secret, lambda: discover(instance, qimg))


def test_read_header_refuses_a_fifo_without_blocking(secret):
    with pytest.raises(exception.UnsupportedDisk, match='not a regular file'):
        guarded(secret, lambda: qemuimg.read_header(secret))


# -- sizes and resource exhaustion -----------------------------------------

def test_absurd_qcow2_virtual_size_is_refused(instance, qimg):
    os.unlink(instance.path('disk'))
    crafted.absurd_size_qcow2(instance.path('disk'))
    with pytest.raises(exception.UnsupportedDisk,
                       match=r'virtual size 1125899906842624 bytes is out '
                             r'of range'):
        discover(instance, qimg)


def test_absurd_sparse_raw_is_refused(instance, qimg):
    os.truncate(instance.path('disk.local'), 1024 * GiB)
    with pytest.raises(exception.UnsupportedDisk, match='out of range'):
        discover(instance, qimg)


@pytest.mark.parametrize('build,message', [
    (crafted.huge_l1_qcow2, 'Active L1 table too large'),
    (crafted.huge_refcount_table_qcow2, 'Reference count table too large'),
    (crafted.truncated_qcow2, 'not readable as qcow2'),
])
def test_malformed_qcow2_fails_cleanly(instance, qimg, build, message):
    os.unlink(instance.path('disk'))
    build(instance.path('disk'))
    with pytest.raises(exception.UnreadableImage, match=message) as e:
        discover(instance, qimg)
    # a refusal (nothing touched) and a failed command alike
    assert isinstance(e.value, exception.ResizeRefused)
    assert isinstance(e.value, exception.CommandFailed)


def test_cpu_limit_kills_inspection_cleanly(tmp_path, qimg, monkeypatch):
    path = crafted.snapshot_bomb_qcow2(str(tmp_path / 'bomb'))
    monkeypatch.setattr(qemuimg, 'INFO_CPU_SECONDS', 1)
    start = time.monotonic()
    with pytest.raises(exception.UnreadableImage,
                       match=r'killed by signal \d+ .*exceeds the limits'):
        qimg.info(path, 'qcow2')
    assert time.monotonic() - start < 10


def test_memory_limit_stops_inspection_cleanly(tmp_path, qimg, monkeypatch):
    path = crafted.snapshot_bomb_qcow2(str(tmp_path / 'bomb'))
    monkeypatch.setattr(qemuimg, 'INFO_ADDRESS_SPACE', 200 * MiB)
    with pytest.raises(exception.UnreadableImage):
        qimg.info(path, 'qcow2')


class _Says(LocalTransport):
    def __init__(self, out: str) -> None:
        self.out = out

    def execute(self, *argv: str, stdin: str | None = None,
                timeout: float | None = None) -> str:
        return self.out


@pytest.mark.parametrize('out', ['', 'not json {', '[]', '{"format": "raw"}',
                                 '{"format": "raw", "virtual-size": "x"}'])
def test_unusable_qemu_img_output_is_a_clear_error(out):
    with pytest.raises(exception.UnreadableImage, match='unusable output'):
        QemuImg(_Says(out), GiB).info('/i/disk', 'raw')


def test_info_passes_the_declared_format(tmp_path):
    calls = []

    class Recording(_Says):
        def execute(self, *argv, stdin=None, timeout=None):
            calls.append(argv)
            return '{"format": "qcow2", "virtual-size": 1}'
    QemuImg(Recording(''), GiB).info('/i/disk', 'qcow2')
    assert calls[0][-3:] == ('-f', 'qcow2', '/i/disk')
    assert '--force-share' in calls[0] and calls[0][0] == 'prlimit'


# -- the destination: copies and record from the other host ---------------

def _without_cdrom(xml: str) -> str:
    return re.sub(r"<disk type='file' device='cdrom'>.*?</disk>", '', xml,
                  flags=re.S)


@pytest.fixture
def dest(tmp_path) -> str:
    path = tmp_path / 'dest-instances'
    path.mkdir()
    return str(path)


def _copied(inst, qimg, dest: str) -> ResizeRecord:
    """The record the source sends (through JSON) and the copies it made."""
    xml = _without_cdrom(inst.xml)
    disks = discover(inst, qimg, xml)
    shutil.copytree(inst.dir, os.path.join(dest, inst.uuid))
    shutil.copytree(os.path.join(inst.instances, '_base'),
                    os.path.join(dest, '_base'), symlinks=True)
    flavor = Flavor(vcpus=1, memory_mib=256, root_bytes=8 * MiB,
                    ephemeral_bytes=4 * MiB)
    record = ResizeRecord(
        uuid=inst.uuid, name='guest', source_host='src',
        source_instances_path=inst.instances,
        destination=Destination('dest', dest, same_hypervisor=False),
        topology=Topology.OTHER_HOST, old_flavor=flavor, new_flavor=flavor,
        source_xml=xml, disks=disks, was_running=False)
    return ResizeRecord.from_json(record.to_json())


def _check(make_env, record: ResizeRecord) -> None:
    FinishMigration(make_env(), record, power_on=False).check_disks()


def test_faithful_copies_pass(instance, qimg, dest, make_env):
    _check(make_env, _copied(instance, qimg, dest))


def test_dest_reads_a_raw_copy_as_raw(instance, qimg, dest, make_env,
                                      secret):
    local = instance.path('disk.local')
    os.unlink(local)
    crafted.qcow2_header_in_raw(local, backing=secret)
    record = _copied(instance, qimg, dest)
    guarded(secret, lambda: _check(make_env, record))


def test_dest_refuses_a_copy_that_is_not_the_claimed_qcow2(
        instance, qimg, dest, make_env):
    record = _copied(instance, qimg, dest)
    copy = record.dest.path('disk')
    os.unlink(copy)
    qemu_img('create', '-f', 'raw', copy, '8M')
    with pytest.raises(exception.UnsupportedDisk,
                       match='declared qcow2 but the file is raw data'):
        _check(make_env, record)


def test_dest_refuses_a_copy_backed_by_another_file(instance, qimg, dest,
                                                    make_env, secret):
    record = _copied(instance, qimg, dest)
    copy = record.dest.path('disk')
    os.unlink(copy)
    crafted.overlay(copy, secret)
    with pytest.raises(exception.UnsafePath,
                       match=f"backing file '{secret}', the source sent"):
        guarded(secret, lambda: _check(make_env, record))


def test_dest_refuses_a_backing_file_the_record_does_not_mention(
        instance, qimg, dest, make_env):
    record = _copied(instance, qimg, dest)
    disk = [d for d in record.disks if d.name == 'disk'][0]
    disk.backing_file = None
    with pytest.raises(exception.UnsafePath, match='the source sent None'):
        _check(make_env, record)


def test_dest_refuses_a_base_symlinked_out(instance, qimg, dest, make_env,
                                           secret):
    record = _copied(instance, qimg, dest)
    base = os.path.join(dest, '_base', os.path.basename(base_of(instance)))
    os.unlink(base)
    os.symlink(secret, base)
    with pytest.raises(exception.UnsafePath, match='is not a file in'):
        guarded(secret, lambda: _check(make_env, record))


def test_dest_refuses_a_base_that_is_a_qcow2(instance, qimg, dest, make_env,
                                            secret):
    record = _copied(instance, qimg, dest)
    base = os.path.join(dest, '_base', os.path.basename(base_of(instance)))
    os.unlink(base)
    crafted.overlay(base, secret)
    with pytest.raises(exception.UnsupportedDisk, match='is itself a qcow2'):
        guarded(secret, lambda: _check(make_env, record))


def test_dest_refuses_a_missing_base(instance, qimg, dest, make_env):
    record = _copied(instance, qimg, dest)
    shutil.rmtree(os.path.join(dest, '_base'))
    with pytest.raises(exception.UnsafePath, match='is not a file in'):
        _check(make_env, record)


def test_dest_refuses_a_copy_with_a_data_file(instance, qimg, dest,
                                              make_env, secret):
    record = _copied(instance, qimg, dest)
    copy = record.dest.path('disk')
    os.unlink(copy)
    crafted.qcow2_data_file(copy, secret)
    with pytest.raises(exception.UnsupportedDisk,
                       match='external data file'):
        guarded(secret, lambda: _check(make_env, record))


def test_dest_refuses_a_virtual_size_mismatch(instance, qimg, dest,
                                              make_env):
    record = _copied(instance, qimg, dest)
    qemu_img('resize', '-f', 'raw', record.dest.path('disk.local'), '5M')
    with pytest.raises(exception.UnsupportedDisk,
                       match='raw/5242880, the source sent raw/4194304'):
        _check(make_env, record)


@pytest.mark.parametrize('name,fmt', [('kernel', 'qcow2'), ('disk', 'file')])
def test_dest_refuses_a_format_that_does_not_fit_the_role(
        instance, qimg, dest, make_env, name, fmt):
    record = _copied(instance, qimg, dest)
    [d for d in record.disks if d.name == name][0].format = fmt
    with pytest.raises(exception.UnsupportedDisk, match='does not fit'):
        _check(make_env, record)


def test_dest_refuses_a_fifo_copy(instance, qimg, dest, make_env):
    record = _copied(instance, qimg, dest)
    copy = record.dest.path('disk.local')
    os.unlink(copy)
    crafted.fifo(copy)
    with pytest.raises(exception.UnsupportedDisk, match='not a regular file'):
        guarded(copy, lambda: _check(make_env, record))


@pytest.mark.parametrize('name', ['../../../etc/passwd', '/etc/passwd',
                                  'disk/../../x'])
def test_record_with_a_path_as_disk_name_is_refused(instance, qimg, dest,
                                                    name):
    record = _copied(instance, qimg, dest)
    text = record.to_json().replace('"name": "disk"', f'"name": "{name}"')
    with pytest.raises(exception.ResizeRefused, match='malformed'):
        ResizeRecord.from_json(text)


# -- the source definition from the other host ------------------------------

FOREIGN = {
    'kernel': ('<os>', '<os><kernel>/etc/shadow</kernel>'),
    'loader': ('<os>', "<os><loader readonly='yes'>/etc/shadow</loader>"),
    'nvram': ('<os>', '<os><nvram>/etc/shadow</nvram>'),
    'cdrom': ('<devices>', "<devices><disk type='file' device='cdrom'>"
              "<source file='/etc/shadow'/><target dev='hdd'/></disk>"),
    'disk via ..': ('<devices>', "<devices><disk type='file'>"
                    "<source file='{dir}/../../../etc/shadow'/>"
                    "<target dev='vdz'/></disk>"),
    'serial file': ('<devices>', "<devices><serial type='file'>"
                    "<source path='/etc/shadow'/></serial>"),
    'console dev': ('<devices>', "<devices><console type='dev'>"
                    "<source path='/etc/shadow'/></console>"),
    'log': ('<devices>', "<devices><serial type='pty'>"
            "<log file='/etc/shadow'/></serial>"),
    'filesystem': ('<devices>', "<devices><filesystem type='mount'>"
                   "<source dir='/etc/shadow'/><target dir='t'/>"
                   "</filesystem>"),
    'tap script': ('<devices>', "<devices><interface type='ethernet'>"
                   "<script path='/etc/shadow'/></interface>"),
    'qemu passthrough': ('</domain>', "<qemu:commandline xmlns:qemu="
                         "'http://libvirt.org/schemas/domain/qemu/1.0'>"
                         "<qemu:arg value='/etc/shadow'/>"
                         "</qemu:commandline></domain>"),
}


@pytest.mark.parametrize('case', sorted(FOREIGN))
def test_dest_refuses_a_definition_with_foreign_files(instance, qimg, dest,
                                                      make_env, case):
    record = _copied(instance, qimg, dest)
    old, new = FOREIGN[case]
    record.source_xml = record.source_xml.replace(
        old, new.format(dir=instance.dir), 1)
    with pytest.raises(exception.UnsafePath,
                       match=r'refers to files outside the instance '
                             r'directory .*/etc/shadow'):
        _check(make_env, record)


def test_foreign_files_leaves_volumes_chains_and_own_files():
    d = '/srv/i/00000000-0000-0000-0000-000000000001'
    xml = f"""<domain type='kvm'><os><kernel>{d}/kernel</kernel>
      <initrd>{d}/ramdisk</initrd></os><devices>
      <emulator>/usr/bin/qemu-system-x86_64</emulator>
      <disk type='file'><source file='{d}/disk'/>
        <backingStore type='file'><source file='/srv/i/_base/abc'/>
        </backingStore></disk>
      <disk type='block'><source dev='/dev/mapper/volume-1'/></disk>
      <disk type='network'><source protocol='rbd' name='p/v'/></disk>
      <disk type='file' device='cdrom'><target dev='hdc'/></disk>
      <serial type='pty'><source path='/dev/pts/3'/>
        <log file='{d}/console.log'/></serial>
      <console type='pty'><source path='/dev/pts/3'/></console>
      <interface type='vhostuser'>
        <source type='unix' path='/run/vhu0' mode='server'/></interface>
      <rng model='virtio'><backend model='random'>/dev/urandom</backend>
      </rng></devices></domain>"""
    assert domain_xml.foreign_files(xml, d) == []
    assert domain_xml.foreign_files(xml, d + '_other') == [
        f'{d}/kernel', f'{d}/ramdisk', f'{d}/disk', f'{d}/console.log']
    dots = xml.replace(f'{d}/disk', f'{d}/..')
    assert domain_xml.foreign_files(dots, d) == [f'{d}/..']


def test_the_default_fixture_cdrom_is_foreign(instance):
    # the shared fixture's ISO lives outside the instance dir
    assert domain_xml.foreign_files(instance.xml, instance.dir) == [
        os.path.join(os.path.dirname(instance.instances), 'isos',
                     'install.iso')]
