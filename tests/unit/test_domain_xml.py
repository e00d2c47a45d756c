from __future__ import annotations

import pytest
from lxml import etree

from resizedriver import domain_xml
from resizedriver import headroom
from resizedriver.model import DiskFile, DiskRole, Flavor, MiB

OLD = '/srv/instances/11111111-2222-3333-4444-555555555555'
NEW = '/srv/other/11111111-2222-3333-4444-555555555555'

SOURCE = f"""<domain type='kvm'>
  <name>guest</name>
  <uuid>11111111-2222-3333-4444-555555555555</uuid>
  <memory unit='MiB'>512</memory>
  <currentMemory unit='MiB'>256</currentMemory>
  <vcpu placement='static' current='1'>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{OLD}/kernel</kernel>
    <initrd>{OLD}/ramdisk</initrd>
    <cmdline>console=ttyS0</cmdline>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='{OLD}/disk'/>
      <backingStore type='file'>
        <format type='raw'/>
        <source file='/srv/instances/_base/abc'/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source file='{OLD}/disk.local'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none'/>
      <source file='{OLD}/disk.swap'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/mapper/volume-1'/>
      <target dev='vdd' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/isos/install.iso'/>
      <target dev='hda' bus='ide'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/volumes/disk'/>
      <backingStore type='file'><source file='/var/lib/volumes/b'/>
      </backingStore>
      <target dev='vde' bus='virtio'/>
    </disk>
    <interface type='bridge'>
      <mac address='fa:16:3e:11:22:33'/>
      <source bridge='br100'/>
      <model type='virtio'/>
    </interface>
    <interface type='network'>
      <mac address='fa:16:3e:44:55:66'/>
      <source network='default'/>
    </interface>
    <serial type='file'>
      <source path='{OLD}/console.log'/>
      <log file='{OLD}/console.log' append='on'/>
      <target port='0'/>
    </serial>
    <serial type='pty'>
      <log file='/var/log/elsewhere.log'/>
      <target port='1'/>
    </serial>
    <video><model type='cirrus' vram='16384' heads='1'/></video>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <controller type='usb' index='0' model='piix3-uhci'/>
  </devices>
</domain>
"""


def parse(xml: str):
    return etree.fromstring(
        xml.encode(), etree.XMLParser(remove_blank_text=True))


def disk(name, role, fmt='raw', size=MiB, directory=NEW):
    return DiskFile(name=name, role=role, path=f'{directory}/{name}',
                    format=fmt, virtual_size=size, actual_size=0)


FLAVOR = Flavor(vcpus=4, memory_mib=2048, root_bytes=0)
DISKS = [disk('disk', DiskRole.ROOT, 'qcow2'),
         disk('disk.local', DiskRole.EPHEMERAL, 'qcow2'),
         disk('disk.swap', DiskRole.SWAP, 'raw'),
         disk('kernel', DiskRole.KERNEL, 'file'),
         disk('ramdisk', DiskRole.RAMDISK, 'file')]


def resized(source=SOURCE, disks=DISKS, flavor=FLAVOR, virt_type='qemu'):
    return parse(domain_xml.for_flavor(
        source, flavor=flavor, virt_type=virt_type, old_dir=OLD,
        new_dir=NEW, disks=disks))


def disk_by_dev(root, dev):
    found = [d for d in root.iterfind('./devices/disk')
             if d.find('target').get('dev') == dev]
    assert len(found) <= 1
    return found[0] if found else None


def canon(el) -> bytes:
    return etree.tostring(el, method='c14n')


# -- for_flavor -----------------------------------------------------------

def test_for_flavor_sets_vcpus_memory_and_type():
    root = resized()
    assert root.get('type') == 'qemu'
    vcpu = root.find('vcpu')
    assert vcpu.text == '4'
    assert 'current' not in vcpu.attrib
    assert vcpu.get('placement') == 'static'
    for tag in ('memory', 'currentMemory'):
        el = root.find(tag)
        assert el.get('unit') == 'KiB'
        assert el.text == str(2048 * 1024)
    assert root.findtext('name') == 'guest'
    assert root.findtext('uuid') == '11111111-2222-3333-4444-555555555555'


def test_for_flavor_result_reads_back_as_the_new_flavor():
    xml = domain_xml.for_flavor(SOURCE, flavor=FLAVOR, virt_type='kvm',
                                old_dir=OLD, new_dir=NEW, disks=DISKS)
    assert _vcpus_and_memory(xml) == (4, 2048)


def test_for_flavor_without_current_memory_does_not_add_one():
    src = SOURCE.replace("<currentMemory unit='MiB'>256</currentMemory>", '')
    root = resized(src)
    assert root.find('currentMemory') is None
    assert root.find('memory').text == str(2048 * 1024)


def test_for_flavor_remaps_instance_disks_only():
    root = resized()
    vda, vdb = disk_by_dev(root, 'vda'), disk_by_dev(root, 'vdb')
    assert vda.find('source').get('file') == f'{NEW}/disk'
    assert vda.find('driver').get('type') == 'qcow2'
    assert vda.find('driver').get('cache') == 'none'
    assert vda.find('backingStore') is None
    # the format comes from the new disk list, not the source definition
    assert vdb.find('source').get('file') == f'{NEW}/disk.local'
    assert vdb.find('driver').get('type') == 'qcow2'
    # swap is in the list: it stays, at its new place
    assert disk_by_dev(root, 'vdc').find('source').get('file') == \
        f'{NEW}/disk.swap'


def test_for_flavor_leaves_volumes_and_isos_alone():
    src = parse(SOURCE)
    root = resized()
    for dev in ('vdd', 'hda', 'vde'):
        assert canon(disk_by_dev(root, dev)) == canon(disk_by_dev(src, dev))
    # a file named like ours but outside the instance dir keeps its
    # backing store and format
    vde = disk_by_dev(root, 'vde')
    assert vde.find('source').get('file') == '/var/lib/volumes/disk'
    assert vde.find('backingStore') is not None


def test_for_flavor_drops_swap_not_in_disks():
    without_swap = [d for d in DISKS if d.role is not DiskRole.SWAP]
    root = resized(disks=without_swap)
    assert disk_by_dev(root, 'vdc') is None
    sources = [s.get('file') for s in root.iterfind('./devices/disk/source')]
    assert not any(s and s.endswith('disk.swap') for s in sources)
    assert disk_by_dev(root, 'vda') is not None
    assert disk_by_dev(root, 'vdd') is not None


def test_for_flavor_adds_new_swap_on_next_free_dev():
    src = parse(SOURCE)
    swap_el = disk_by_dev(src, 'vdc')
    swap_el.getparent().remove(swap_el)
    source = etree.tostring(src, encoding='unicode')
    root = resized(source=source)
    swaps = [d for d in root.iterfind('./devices/disk')
             if d.find('source').get('file') == f'{NEW}/disk.swap']
    assert len(swaps) == 1
    swap = swaps[0]
    # vda, vdb, vdd, vde are taken: vdc is the first free one
    assert swap.find('target').get('dev') == 'vdc'
    assert swap.find('target').get('bus') == 'virtio'
    assert swap.get('type') == 'file' and swap.get('device') == 'disk'
    assert swap.find('driver').get('type') == 'raw'


def test_for_flavor_new_swap_skips_every_used_dev():
    src = parse(SOURCE)
    swap_el = disk_by_dev(src, 'vdc')
    swap_el.find('target').set('dev', 'vdf')   # not a swap any more:
    swap_el.find('source').set('file', '/isos/other.img')  # not ours
    root = resized(source=etree.tostring(src, encoding='unicode'))
    devs = [d.find('target').get('dev') for d in root.iterfind(
        './devices/disk')]
    assert len(devs) == len(set(devs))
    new = [d for d in root.iterfind('./devices/disk')
           if d.find('source').get('file') == f'{NEW}/disk.swap']
    assert [d.find('target').get('dev') for d in new] == ['vdc']


def test_for_flavor_no_swap_added_when_flavor_has_none():
    root = resized(disks=[d for d in DISKS if d.role is not DiskRole.SWAP])
    assert len(root.findall('./devices/disk')) == 5


def test_for_flavor_disk_without_driver_gains_one():
    src = parse(SOURCE)
    vdb = disk_by_dev(src, 'vdb')
    vdb.remove(vdb.find('driver'))
    root = resized(source=etree.tostring(src, encoding='unicode'))
    driver = disk_by_dev(root, 'vdb').find('driver')
    assert driver is not None
    assert driver.get('type') == 'qcow2'
    assert driver.get('name') == 'qemu'


def test_for_flavor_relocates_kernel_initrd_and_logs():
    root = resized()
    assert root.findtext('./os/kernel') == f'{NEW}/kernel'
    assert root.findtext('./os/initrd') == f'{NEW}/ramdisk'
    assert root.findtext('./os/cmdline') == 'console=ttyS0'
    serials = root.findall('./devices/serial')
    assert serials[0].find('log').get('file') == f'{NEW}/console.log'
    assert serials[0].find('log').get('append') == 'on'
    assert serials[0].find('source').get('path') == f'{NEW}/console.log'
    assert serials[1].find('log').get('file') == '/var/log/elsewhere.log'


def test_for_flavor_keeps_unrelated_devices():
    src = parse(SOURCE)
    root = resized()
    for xpath in ('./devices/video', './devices/rng', './devices/controller',
                  './devices/interface', './os/type', './name'):
        before = [canon(e) for e in src.iterfind(xpath)]
        after = [canon(e) for e in root.iterfind(xpath)]
        assert before and after == before, xpath


def test_for_flavor_does_not_touch_same_dir_prefix():
    # /srv/instances/<uuid>x/disk only shares a prefix with the old dir
    src = SOURCE.replace('/var/lib/volumes/disk', OLD + 'x/disk')
    root = resized(source=src)
    assert disk_by_dev(root, 'vde').find('source').get('file') == \
        OLD + 'x/disk'


def test_for_flavor_keeps_cpu_topology_consistent_with_vcpus():
    src = SOURCE.replace(
        '<devices>', "<cpu mode='host-model'><topology sockets='2' "
        "cores='1' threads='1'/></cpu>\n  <devices>", 1)
    root = resized(source=src)
    topo = root.find('./cpu/topology')
    if topo is not None:
        product = 1
        for attr in ('sockets', 'dies', 'cores', 'threads'):
            product *= int(topo.get(attr, '1'))
        assert product == int(root.findtext('vcpu'))


# -- readers --------------------------------------------------------------

def test_file_disks_in_definition_order():
    got = domain_xml.file_disks(SOURCE)
    assert got == [
        domain_xml.DomainDisk('vda', f'{OLD}/disk', 'qcow2'),
        domain_xml.DomainDisk('vdb', f'{OLD}/disk.local', 'raw'),
        domain_xml.DomainDisk('vdc', f'{OLD}/disk.swap', 'raw'),
        domain_xml.DomainDisk('hda', '/isos/install.iso', 'raw'),
        domain_xml.DomainDisk('vde', '/var/lib/volumes/disk', 'qcow2'),
    ]


def test_file_disks_skips_empty_cdrom_and_missing_driver_is_none():
    xml = """<domain><devices>
      <disk type='file' device='cdrom'><target dev='hda'/></disk>
      <disk type='file' device='disk'><source file='/x/disk'/>
        <target dev='vda'/></disk>
      <disk type='network' device='disk'><source protocol='rbd' name='p/v'/>
        <target dev='vdb'/></disk>
    </devices></domain>"""
    assert domain_xml.file_disks(xml) == [
        domain_xml.DomainDisk('vda', '/x/disk', None)]


def test_boot_files():
    assert domain_xml.boot_files(SOURCE) == {'kernel': f'{OLD}/kernel',
                                             'ramdisk': f'{OLD}/ramdisk'}
    assert domain_xml.boot_files(
        "<domain><os><type>hvm</type><kernel>/k</kernel></os></domain>") == \
        {'kernel': '/k'}
    assert domain_xml.boot_files(
        "<domain><os><type>hvm</type><boot dev='hd'/></os></domain>") == {}


def test_vifs():
    assert domain_xml.vifs(SOURCE) == [
        domain_xml.DomainVif('fa:16:3e:11:22:33', 'br100', 'bridge'),
        domain_xml.DomainVif('fa:16:3e:44:55:66', None, 'network')]
    ovs = ("<domain><devices><interface type='bridge'>"
           "<mac address='fa:16:3e:00:00:09'/><source bridge='br-int'/>"
           "<virtualport type='openvswitch'/></interface></devices>"
           "</domain>")
    assert domain_xml.vifs(ovs) == [domain_xml.DomainVif(
        'fa:16:3e:00:00:09', 'br-int', 'bridge', 'openvswitch')]
    assert domain_xml.vifs('<domain><devices/></domain>') == []


@pytest.mark.parametrize('unit,amount', [
    (None, 1048576), ('KiB', 1048576), ('k', 1048576),
    ('MiB', 1024), ('M', 1024), ('GiB', 1), ('G', 1),
    ('b', 1024 ** 3), ('bytes', 1024 ** 3)])
def test_vcpus_and_memory_units(unit, amount):
    attr = f" unit='{unit}'" if unit else ''
    xml = (f"<domain><vcpu>3</vcpu>"
           f"<memory{attr}>{amount}</memory></domain>")
    assert _vcpus_and_memory(xml) == (3, 1024)


def test_vcpus_are_the_online_ones():
    """``current`` is how many the guest has; the element's text is the
    most it may grow to."""
    xml = "<domain><vcpu current='1'>3</vcpu><memory>1024</memory></domain>"
    assert _vcpus_and_memory(xml) == (1, 1)


def test_memory_only_resize_keeps_online_vcpus():
    """Review #8.10: a memory-only resize dropped ``current``."""
    xml = domain_xml.for_flavor(
        SOURCE, flavor=Flavor(vcpus=1, memory_mib=1024, root_bytes=0),
        virt_type='kvm', old_dir=OLD, new_dir=OLD, disks=[])
    vcpu = etree.fromstring(xml.encode()).find('vcpu')
    assert (vcpu.get('current'), vcpu.text) == ('1', '2')


def test_vcpus_grow_within_the_maximum_keeps_the_maximum():
    xml = domain_xml.for_flavor(
        SOURCE, flavor=Flavor(vcpus=2, memory_mib=256, root_bytes=0),
        virt_type='kvm', old_dir=OLD, new_dir=OLD, disks=[])
    vcpu = etree.fromstring(xml.encode()).find('vcpu')
    assert (vcpu.get('current'), vcpu.text) == (None, '2')
    assert _vcpus_and_memory(xml)[0] == 2


@pytest.mark.parametrize('unit,amount,mib', [('TiB', 1, 1024 * 1024),
                                             ('MB', 1048576, 1000000)])
def test_vcpus_and_memory_other_libvirt_units(unit, amount, mib):
    xml = (f"<domain><vcpu>1</vcpu>"
           f"<memory unit='{unit}'>{amount}</memory></domain>")
    assert _vcpus_and_memory(xml) == (1, mib)


def _vcpus_and_memory(xml: str) -> tuple[int, int]:
    now = headroom.of_domain(xml)
    return now.vcpus, now.memory_mib
