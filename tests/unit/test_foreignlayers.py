"""Which instances' disks read a layer Nova cannot resolve as its own
(``resizedriver.foreignlayers``): Nova takes a backing file's name for
an image-cache name, so a hard reboot or a block live migration of such
an instance fetches the Glance image in its place."""

from __future__ import annotations

import os

from resizedriver import foreignlayers
from resizedriver.layout import IN_USE_MARKER, InstanceLayout

UUID = '11111111-2222-3333-4444-555555555555'


def _instance(tmp_path, *names: str) -> InstanceLayout:
    inst = InstanceLayout(str(tmp_path), UUID)
    os.makedirs(inst.dir)
    for name in ('disk', 'disk.info', 'console.log') + names:
        open(inst.path(name), 'w').close()
    return inst


def test_nova_s_own_layout_has_no_foreign_layer(tmp_path):
    assert foreignlayers.reason(_instance(tmp_path)) is None
    # a pending resize's kept source that the guest does not read (yet)
    inst = InstanceLayout(str(tmp_path), UUID)
    os.makedirs(inst.resize_dir)
    assert foreignlayers.reason(inst) is None
    # nor does a file of another disk role count
    assert foreignlayers.reason(
        _instance(tmp_path / 'b', 'console.log.precopy')) is None


def test_a_pre_copied_layer_not_yet_folded_is_foreign(tmp_path):
    for layer in ('disk.precopy', 'disk.local.precopy.2'):
        inst = _instance(tmp_path / layer, layer)
        why = foreignlayers.reason(inst)
        assert why is not None and inst.path(layer) in why, why
        assert f'"resizedriver recover {UUID}"' in why, why


def test_a_kept_resize_dir_the_running_guest_reads_is_foreign(tmp_path):
    inst = _instance(tmp_path)
    os.makedirs(inst.resize_dir)
    open(os.path.join(inst.resize_dir, IN_USE_MARKER), 'w').close()
    why = foreignlayers.reason(inst)
    assert why is not None and inst.resize_dir in why, why
    assert f'"resizedriver recover {UUID}"' in why, why
