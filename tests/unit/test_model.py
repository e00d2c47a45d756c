from __future__ import annotations

import pytest

from resizedriver.model import DiskFile, DiskRole, Flavor


def _disk_dict(name, role):
    return {'name': name, 'role': role, 'path': f'/i/{name}', 'type': 'raw',
            'virt_disk_size': 1, 'disk_size': 1}


@pytest.mark.parametrize('name,role', [
    ('disk', 'root'), ('disk.local', 'ephemeral'), ('disk.eph0', 'ephemeral'),
    ('disk.eph12', 'ephemeral'), ('disk.swap', 'swap'),
    ('disk.config', 'config'), ('kernel', 'kernel'), ('ramdisk', 'ramdisk')])
def test_disk_from_dict_accepts_known_names(name, role):
    d = DiskFile.from_dict(_disk_dict(name, role))
    assert (d.name, d.role) == (name, DiskRole(role))
    assert DiskFile.from_dict(d.to_dict()) == d


@pytest.mark.parametrize('name,role', [
    ('../../etc/passwd', 'root'),
    ('disk.eph0/../x', 'ephemeral'),
    ('disk.eph0/../../../etc/shadow', 'ephemeral'),
    ('/etc/passwd', 'kernel'),
    ('disk.local', 'root'),        # known name, wrong role
    ('disk', 'swap'),
    ('disk.ephx', 'ephemeral'),
    ('disk.eph0\n', 'ephemeral'),
    ('', 'root'),
    ('disk.swap', 'nonsense')])
def test_disk_from_dict_refuses_names_not_fitting_role(name, role):
    with pytest.raises(ValueError):
        DiskFile.from_dict(_disk_dict(name, role))


@pytest.mark.parametrize('dest_base', ['../x', '/etc/passwd', 'a/b', '..'])
def test_disk_from_dict_refuses_a_destination_base_that_is_no_name(
        dest_base):
    """It becomes a path in the destination's ``_base``."""
    with pytest.raises(ValueError):
        DiskFile.from_dict(dict(_disk_dict('disk.local', 'ephemeral'),
                                dest_base=dest_base))


def test_flavor_from_dict_ignores_unknown_keys():
    f = Flavor.from_dict({'vcpus': '2', 'memory_mib': 512,
                          'root_bytes': 10, 'extra': 'x'})
    assert f == Flavor(2, 512, 10, 0, 0)


