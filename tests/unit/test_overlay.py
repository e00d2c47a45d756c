"""The overlay plan's offline fold at confirm (real qemu-img)."""

from __future__ import annotations

import os
import subprocess
import types

from resizedriver.layout import InstanceLayout
from resizedriver.model import DiskFile, DiskRole, MiB
from resizedriver.operations import overlay
from tests.unit.conftest import qemu_img, write_at

UUID = '11111111-2222-3333-4444-555555555555'


def _read(path: str, offset: int, n: int) -> bytes:
    out = subprocess.run(
        ['qemu-io', '-f', 'qcow2', '-r', '-c',
         f'read -v {offset} {n}', path], check=True, capture_output=True,
        text=True).stdout
    return out.encode()


def test_confirm_folds_offline_even_when_the_header_already_names_base(
        tmp_path, make_env):
    """A pull killed as it completed: the header names _base, the copied
    data is only in _resize.  The offline fold must not trust the header
    (it used to return "folded already" and confirm deleted the data)."""
    layout = InstanceLayout(str(tmp_path), UUID)
    os.makedirs(layout.base_dir)
    os.makedirs(layout.resize_dir)
    os.makedirs(layout.dir)
    base = layout.base_path('sha')
    qemu_img('create', '-f', 'raw', base, '8M')
    write_at(base, 0, b'A' * 4096)
    kept = layout.in_resize_dir('disk')
    qemu_img('create', '-f', 'qcow2', '-F', 'raw', '-b', base, kept, '8M')
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c',
                    'write -P 0x42 0 4096', kept], check=True,
                   capture_output=True)
    active = layout.path('disk')
    qemu_img('create', '-f', 'qcow2', '-F', 'qcow2', '-b', kept, active,
             '16M')
    # the crash window: the header already points at _base
    qemu_img('rebase', '-u', '-f', 'qcow2', '-F', 'raw', '-b', base, active)
    assert b'41 41 41 41' in _read(active, 0, 16)      # "A": data lost
    record = types.SimpleNamespace(uuid=UUID, dest=layout, source=layout)
    op = types.SimpleNamespace(record=record)
    disk = DiskFile('disk', DiskRole.ROOT, kept, 'qcow2', 8 * MiB, 0,
                    base, 'vda')

    overlay._rebase_offline(op, disk, make_env().qemu_img())

    assert b'42 42 42 42' in _read(active, 0, 16)      # "B": kept
    info = subprocess.run(['qemu-img', 'info', '-f', 'qcow2', active],
                          check=True, capture_output=True, text=True).stdout
    assert f'backing file: {base}' in info

