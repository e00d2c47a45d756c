from __future__ import annotations

import json
import os

import pytest

from resizedriver import exception
from resizedriver import layout
from resizedriver import record as rd_record
from resizedriver.model import (Destination, DiskFile, DiskRole, Flavor, MiB,
                                Topology)
from resizedriver.record import ResizeRecord

UUID = '0f8e3c1a-9b2d-4e5f-8a7b-6c5d4e3f2a1b'


def make_record(instances='/srv/instances') -> ResizeRecord:
    d = f'{instances}/{UUID}'
    return ResizeRecord(
        uuid=UUID, name='guest-1', source_host='src.example',
        source_instances_path=instances,
        destination=Destination('dst.example', '/srv/dest', False),
        topology=Topology.OTHER_HOST,
        old_flavor=Flavor(1, 256, 8 * MiB, 4 * MiB, 0),
        new_flavor=Flavor(2, 512, 16 * MiB, 4 * MiB, 2 * MiB),
        source_xml='<domain><name>guest-1</name></domain>',
        disks=[DiskFile('disk', DiskRole.ROOT, f'{d}/disk', 'qcow2',
                        8 * MiB, 200_000, f'{instances}/_base/abc', 'vda'),
               DiskFile('disk.local', DiskRole.EPHEMERAL, f'{d}/disk.local',
                        'raw', 4 * MiB, 8192, None, 'vdb'),
               DiskFile('kernel', DiskRole.KERNEL, f'{d}/kernel', 'file',
                        3000, 3000)],
        was_running=True)


def test_json_round_trip():
    rec = make_record()
    back = ResizeRecord.from_json(rec.to_json())
    assert back == rec
    assert back.disks[1].backing_file is None
    assert back.destination.same_hypervisor is False
    assert back.source.resize_dir == f'/srv/instances/{UUID}_resize'
    assert back.dest.dir == f'/srv/dest/{UUID}'


def test_to_dict_uses_nova_disk_info_keys():
    d = make_record().to_dict()['disks'][0]
    assert d['type'] == 'qcow2'
    assert d['virt_disk_size'] == 8 * MiB
    assert d['disk_size'] == 200_000
    assert d['backing_file'] == '/srv/instances/_base/abc'


def test_write_is_atomic_and_reads_back(tmp_path):
    rec = make_record()
    path = str(tmp_path / 'resize.json')
    rec.write(path)
    assert os.listdir(tmp_path) == ['resize.json']
    assert ResizeRecord.read(path) == rec
    # a second write replaces the first, again leaving no temp file
    rec.was_running = False
    rec.write(path)
    assert os.listdir(tmp_path) == ['resize.json']
    assert ResizeRecord.read(path).was_running is False


def _mutated(**changes) -> str:
    d = make_record().to_dict()
    for key, value in changes.items():
        if value is KeyError:
            del d[key]
        else:
            d[key] = value
    return json.dumps(d)


@pytest.mark.parametrize('text', [
    '',
    '{not json',
    '[]',
    '"a string"',
    '{}',
    _mutated(uuid=KeyError),
    _mutated(disks=KeyError),
    _mutated(new_flavor=KeyError),
    _mutated(destination=KeyError),
    _mutated(uuid='../../etc'),
    _mutated(uuid=f'{UUID}/../x'),
    _mutated(new_flavor={'vcpus': 1}),
    _mutated(new_flavor={'vcpus': 'many', 'memory_mib': 1,
                         'root_bytes': 1}),
    _mutated(destination={'host': None}),
    _mutated(disks=[{'name': 'disk'}]),
    _mutated(disks=[{'name': '../../etc/passwd', 'role': 'root',
                     'path': '/x', 'type': 'raw', 'virt_disk_size': 1,
                     'disk_size': 1}]),
    _mutated(disks=[{'name': 'disk', 'role': 'bogus', 'path': '/x',
                     'type': 'raw', 'virt_disk_size': 1, 'disk_size': 1}]),
], ids=lambda t: t[:40])
def test_malformed_record_is_refused(text):
    with pytest.raises(exception.ResizeRefused):
        ResizeRecord.from_json(text)


def test_record_with_numeric_uuid_is_refused():
    with pytest.raises(exception.ResizeRefused):
        ResizeRecord.from_json(_mutated(uuid=12345))


def test_load_pending_and_all_pending(tmp_path):
    inst = layout.InstanceLayout(str(tmp_path), UUID)
    with pytest.raises(exception.NotFound):
        rd_record.load_pending(inst)
    assert rd_record.all_pending(str(tmp_path)) == []
    os.makedirs(inst.resize_dir)
    rec = make_record(str(tmp_path))
    rec.write(inst.in_resize_dir(layout.RECORD_NAME))
    assert rd_record.load_pending(inst) == rec
    assert rd_record.all_pending(str(tmp_path)) == [rec]


def test_the_topology_is_kept_and_read_back():
    rec = make_record()
    again = ResizeRecord.from_json(rec.to_json())
    assert again.topology is Topology.OTHER_HOST
    assert (again.same_hypervisor, again.shared_path) == (False, False)


@pytest.mark.parametrize('same,shared,topology', [
    (True, True, Topology.SAME_HOST), (True, False, Topology.SAME_HYPERVISOR),
    (False, True, Topology.SHARED_STORAGE),
    (False, False, Topology.OTHER_HOST)])
def test_a_record_from_before_the_topology_reads_as_one(same, shared,
                                                        topology):
    d = make_record().to_dict()
    del d['topology']
    d['shared_path'] = shared
    d['destination']['same_hypervisor'] = same
    assert ResizeRecord.from_dict(d).topology is topology


def test_the_plan_that_ran_is_kept():
    assert ResizeRecord.from_json(make_record().to_json()).plan == 'copy'
    d = make_record().to_dict()
    del d['plan']                      # written before plans were chosen
    assert ResizeRecord.from_dict(d).plan == 'copy'


def test_a_plan_this_version_does_not_know_is_refused_clearly():
    d = dict(make_record().to_dict(), plan='teleport')
    with pytest.raises(exception.ResizeRefused,
                       match="'teleport' plan, which this version"):
        ResizeRecord.from_dict(d)
