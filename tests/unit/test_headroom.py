"""Headroom: what a definition gets so that it can grow live, and what
is read back from one."""

from __future__ import annotations

import pytest
from lxml import etree

from resizedriver import headroom
from resizedriver.headroom import Headroom
from tests.unit.conftest import DOMAIN_XML

XML = DOMAIN_XML.format(name='g', uuid='11111111-2222-3333-4444-555555555555',
                        memory_kib=256 * 1024, vcpus=1, dir='/i/u',
                        root_type='qcow2', swap='', iso='/iso')


def _root(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode())


def test_apply_gives_hot_pluggable_vcpus_and_a_virtio_mem_device():
    xml = headroom.apply(XML, Headroom(4, 1024), 1, 256)
    root = _root(xml)
    assert (root.find('vcpu').get('current'), root.find('vcpu').text) == \
        ('1', '4')
    cell = root.find('./cpu/numa/cell')
    assert (cell.get('id'), cell.get('cpus'), cell.get('memory')) == \
        ('0', '0-3', str(256 * 1024))
    assert root.find('maxMemory').text == str(1024 * 1024)
    target = root.find('./devices/memory[@model="virtio-mem"]/target')
    assert target.findtext('size') == str(768 * 1024)
    assert target.findtext('requested') == '0'
    now = headroom.of_domain(xml)
    assert (now.vcpus, now.max_vcpus) == (1, 4)
    assert (now.boot_memory_mib, now.memory_mib, now.max_memory_mib) == \
        (256, 256, 1024)


def test_apply_again_for_a_bigger_flavor_keeps_the_maximum():
    xml = headroom.apply(XML, Headroom(4, 1024), 1, 256)
    xml = headroom.apply(xml, Headroom(4, 1024), 2, 512)
    now = headroom.of_domain(xml)
    assert (now.vcpus, now.max_vcpus, now.memory_mib, now.max_memory_mib) \
        == (2, 4, 512, 1024)
    assert len(_root(xml).findall('./devices/memory')) == 1


def test_a_flavor_at_or_above_the_maximum_loses_that_headroom():
    xml = headroom.apply(XML, Headroom(4, 1024), 1, 256)
    xml = headroom.apply(xml, Headroom(4, 1024), 4, 2048)
    root = _root(xml)
    assert root.find('vcpu').get('current') is None
    assert root.find('./devices/memory') is None
    assert root.find('maxMemory') is None
    assert headroom.of_domain(xml).memory_mib == 2048


def test_the_live_xml_counts_what_virtio_mem_plugged():
    xml = headroom.apply(XML, Headroom(0, 1024), 1, 256)
    root = _root(xml)
    target = root.find('./devices/memory/target')
    target.find('requested').text = str(256 * 1024)
    etree.SubElement(target, 'current', unit='KiB').text = str(128 * 1024)
    live = etree.tostring(root, encoding='unicode')
    now = headroom.of_domain(live)
    assert (now.memory_mib, now.virtio_mem.requested_mib) == (384, 256)
    update = _root(headroom.requested_xml(live, 512))
    assert update.find('./target/requested').text == str(512 * 1024)
    assert update.find('./target/current') is None    # not ours to set


def test_wanted_config_flavor_and_image():
    class Conf:
        class resizedriver:
            headroom_max_vcpus = 0
            headroom_vcpus_factor = 2.0
            headroom_max_memory_mb = 1024
            headroom_memory_factor = 0.0
    assert headroom.wanted(Conf, 2, 512) == Headroom(4, 1024)
    # the operator's extra specs replace the config ...
    assert headroom.wanted(Conf, 2, 512, {headroom.SPEC_VCPUS: '8'}) == \
        Headroom(8, 1024)
    # ... the user's image may only lower it (0: off)
    assert headroom.wanted(Conf, 2, 512, {}, {
        headroom.IMAGE_VCPUS: '64', headroom.IMAGE_MEMORY: '0'}) == \
        Headroom(4, 0)
    with pytest.raises(ValueError, match='whole number'):
        headroom.wanted(Conf, 2, 512, {headroom.SPEC_MEMORY: 'lots'})


def test_memory_headroom_comes_in_whole_guest_memory_blocks():
    # Linux adds hot-plugged memory 128 MiB at a time: 64 MiB of room
    # would be a device the guest never uses
    assert Headroom(0, 320).device_mib(256) == 0
    assert Headroom(0, 1000).device_mib(256) == 640
    root = _root(headroom.apply(XML, Headroom(2, 320), 1, 256))
    assert root.find('./devices/memory') is None
    # the limit stays what was granted: redefined for 320 MiB, then for
    # 384, the device shrinks to whole blocks but the limit does not
    xml = headroom.apply(XML, Headroom(0, 1024), 1, 320)
    now = headroom.of_domain(xml)
    assert (now.max_memory_mib, now.memory_limit_mib) == (960, 1024)
    from resizedriver.model import Flavor
    again = headroom.of_domain(headroom.resized(
        xml, flavor=Flavor(1, 384, 0), virt_type='kvm', old_dir='/i/u',
        new_dir='/i/u', disks=[], wanted=Headroom()))
    assert (again.max_memory_mib, again.memory_limit_mib) == (1024, 1024)


def test_a_cold_resize_keeps_only_headroom_the_source_really_had():
    from resizedriver.model import Flavor
    kw = dict(virt_type='kvm', old_dir='/i/u', new_dir='/i/u', disks=[])
    # a 2 vCPU, 320 MiB guest without headroom resized down: none appears
    two = headroom.apply(XML, Headroom(), 2, 320)
    down = headroom.resized(two, flavor=Flavor(1, 256, 0),
                            wanted=Headroom(), **kw)
    root = _root(down)
    assert root.find('vcpu').get('current') is None
    assert root.find('./devices/memory') is None
    # one that had headroom keeps it
    roomy = headroom.apply(XML, Headroom(4, 1024), 2, 512)
    now = headroom.of_domain(headroom.resized(
        roomy, flavor=Flavor(1, 256, 0), wanted=Headroom(), **kw))
    assert (now.vcpus, now.max_vcpus, now.max_memory_mib) == (1, 4, 1024)


def test_headroom_over_a_topology_that_does_not_divide_it():
    """Review: lxml's attrib.update takes no keywords; a topology of 1
    socket x 4 cores under a maximum of 6 crashed every define."""
    xml = XML.replace("<devices>", "<cpu><topology sockets='1' dies='1' "
                      "cores='4' threads='1'/></cpu><devices>")
    root = _root(headroom.apply(xml, Headroom(6, 0), 4, 256))
    topo = root.find('./cpu/topology')
    assert (topo.get('sockets'), topo.get('cores'), topo.get('threads')) == \
        ('6', '1', '1')
    assert root.find('vcpu').text == '6'
