"""The pre-copy plan: when the chooser takes it, the snapshot it asks
libvirt for, and how its top is taken back whatever a crash left."""

from __future__ import annotations

import functools
import os
import types

from lxml import etree

from resizedriver import chooser
from resizedriver.layout import InstanceLayout
from resizedriver.model import DiskFile, DiskRole, MiB, Topology
from resizedriver.operations import precopy
from tests.unit.fakes import FakeGuest, FakeHost
from tests.unit.test_headroom import XML

QCOW2 = [DiskFile('disk', DiskRole.ROOT, '/i/u/disk', 'qcow2', 64 * MiB,
                  MiB, '/i/_base/x', 'vda')]
UUID = '11111111-2222-3333-4444-555555555555'
RAW = [DiskFile('disk', DiskRole.ROOT, '/i/u/disk', 'raw', 64 * MiB, MiB,
                None, 'vda')]


def _choose(topology=Topology.OTHER_HOST, disks=QCOW2, running=True,
            pre_copy=True, **kw) -> chooser.Choice:
    return chooser.choose(topology, disks, use_cow_images=True,
                          running=running, pre_copy=pre_copy, **kw)


def test_the_chooser_takes_precopy_for_a_running_guest_going_elsewhere():
    assert _choose().plan == chooser.PRECOPY
    for why, choice in (
            ('the guest is not running', _choose(running=False)),
            ('pre_copy is false', _choose(pre_copy=False)),
            ('not a qcow2 disk device', _choose(disks=RAW)),
            ('not another host', _choose(Topology.SHARED_STORAGE)),
            ('does not offer it', _choose(offered=(chooser.COPY,)))):
        assert choice.plan == chooser.COPY, why
        assert why in choice.reason, choice.reason
    # the same host keeps its own plans
    assert _choose(Topology.SAME_HOST).plan == chooser.OVERLAY


def test_the_snapshot_tops_only_root_and_ephemeral_disks():
    inst = InstanceLayout('/i', UUID)
    snap = etree.fromstring(precopy.snapshot_xml(XML, inst, QCOW2).encode())
    assert snap.find('memory').get('snapshot') == 'no'
    disks = {d.get('name'): d for d in snap.iterfind('disks/disk')}
    assert disks['vda'].get('snapshot') == 'external'
    assert disks['vda'].find('source').get('file') == f'/i/{UUID}/disk.top'
    assert disks['vda'].find('driver').get('type') == 'qcow2'
    others = [d for name, d in disks.items() if name != 'vda']
    assert others and all(d.get('snapshot') == 'no' for d in others)


class _Img:
    def __init__(self) -> None:
        self.commits: list[str] = []

    def commit(self, path: str, size: int) -> None:
        self.commits.append(path)


def _env(host: FakeHost, img: _Img):
    conf = types.SimpleNamespace(
        resizedriver=types.SimpleNamespace(fold_timeout=60))
    return types.SimpleNamespace(host=host, conf=conf,
                                 qemu_img=lambda: img)


def _instance(tmp_path, xml_disk: str):
    inst = InstanceLayout(str(tmp_path), UUID)
    os.makedirs(inst.dir)
    for name in ('disk', 'disk.top', 'console.log.top'):
        open(inst.path(name), 'w').close()
    xml = XML.replace('/i/u/disk', inst.path(xml_disk))
    return inst, xml


def test_a_top_a_stopped_definition_reads_is_committed_then_redefined(
        tmp_path):
    inst, xml = _instance(tmp_path, 'disk.top')
    guest = FakeGuest(inst.uuid, 'g', xml, running=False)
    img, redefined = _Img(), []
    precopy.fold_tops_back(_env(FakeHost([guest]), img), inst,
                           lambda: redefined.append(1))
    assert img.commits == [inst.path('disk.top')]
    assert redefined == [1]
    assert not os.path.exists(inst.path('disk.top'))
    # not a disk's top: not ours to touch
    assert os.path.exists(inst.path('console.log.top'))


def test_a_top_nothing_reads_any_more_was_pivoted_and_only_goes(tmp_path):
    # a crash after the pivot: the guest writes to disk; committing the
    # stale top now would overwrite what it wrote since
    inst, xml = _instance(tmp_path, 'disk')
    for running in (True, False):
        open(inst.path('disk.top'), 'w').close()
        img, redefined = _Img(), []
        precopy.fold_tops_back(
            _env(FakeHost([FakeGuest(inst.uuid, 'g', xml, running)]), img),
            inst, functools.partial(redefined.append, 1))
        assert (img.commits, redefined) == ([], [])
        assert not os.path.exists(inst.path('disk.top'))


def test_with_no_domain_the_top_is_committed_and_with_no_top_nothing(
        tmp_path):
    inst, _xml = _instance(tmp_path, 'disk.top')
    img = _Img()
    precopy.fold_tops_back(_env(FakeHost([]), img), inst, None)
    assert img.commits == [inst.path('disk.top')]
    precopy.fold_tops_back(_env(FakeHost([]), img), inst, None)
    assert img.commits == [inst.path('disk.top')]       # nothing more
