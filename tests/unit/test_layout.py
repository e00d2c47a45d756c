from __future__ import annotations

import pytest

from resizedriver import exception
from resizedriver import layout

UUID = '0f8e3c1a-9b2d-4e5f-8a7b-6c5d4e3f2a1b'


@pytest.mark.parametrize('value', [UUID, UUID.upper()])
def test_check_uuid_accepts_canonical(value):
    assert layout.check_uuid(value) == value


@pytest.mark.parametrize('value', [
    '', 'abc', '..', '../' + UUID, UUID + '/..', UUID + '/../../etc',
    UUID + '_resize', '/' + UUID, UUID + '/', f'{{{UUID}}}',
    f'urn:uuid:{UUID}', UUID.replace('-', ''), UUID + '\n', ' ' + UUID,
    UUID[:-1], UUID[:-1] + 'g', UUID.replace('-', '/'), '_base'])
def test_check_uuid_refuses(value):
    with pytest.raises(exception.ResizeRefused):
        layout.check_uuid(value)


@pytest.mark.parametrize('value', [12345, None])
def test_check_uuid_refuses_non_strings(value):
    with pytest.raises(exception.ResizeRefused):
        layout.check_uuid(value)


def test_instance_layout_paths():
    inst = layout.InstanceLayout('/srv/i', UUID)
    assert inst.dir == f'/srv/i/{UUID}'
    assert inst.resize_dir == f'/srv/i/{UUID}_resize'
    assert inst.base_dir == '/srv/i/_base'
    assert inst.path('disk') == f'/srv/i/{UUID}/disk'
    assert inst.in_resize_dir('resize.json') == \
        f'/srv/i/{UUID}_resize/resize.json'
    with pytest.raises(exception.ResizeRefused):
        layout.InstanceLayout('/srv/i', '../etc')
