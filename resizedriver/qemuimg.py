"""qemu-img, on whichever host a transport reaches.

``info`` runs with ``--force-share`` (the image may be open by a running
guest) under ``prlimit`` (a crafted image must not eat the host), the way
Nova's images.qemu_img_info does, and refuses what we never handle: formats
other than raw/qcow2, qcow2 external data files, absurd virtual sizes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

from resizedriver import exception
from resizedriver.model import GiB
from resizedriver.transport import Transport

SUPPORTED_FORMATS = ('raw', 'qcow2')
INFO_CPU_SECONDS = 30
INFO_ADDRESS_SPACE = 1 * GiB


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    path: str
    format: str
    virtual_size: int
    actual_size: int
    backing_file: Optional[str]
    backing_format: Optional[str]


class QemuImg:
    def __init__(self, transport: Transport, max_virtual_size: int) -> None:
        self.transport = transport
        self.max_virtual_size = max_virtual_size

    def _run(self, *args: str) -> str:
        return self.transport.execute('qemu-img', *args)

    def info(self, path: str) -> ImageInfo:
        out = self.transport.execute(
            'prlimit', f'--cpu={INFO_CPU_SECONDS}',
            f'--as={INFO_ADDRESS_SPACE}', 'qemu-img', 'info',
            '--force-share', '--output=json', path)
        data = json.loads(out)
        fmt = data.get('format')
        if fmt not in SUPPORTED_FORMATS:
            raise exception.UnsupportedDisk(
                f'{path}: disk format {fmt!r} is not supported '
                f'(only {", ".join(SUPPORTED_FORMATS)})')
        specific = (data.get('format-specific') or {}).get('data') or {}
        if specific.get('data-file'):
            raise exception.UnsupportedDisk(
                f'{path}: qcow2 images with an external data file are '
                f'refused')
        vsize = int(data['virtual-size'])
        if vsize <= 0 or vsize > self.max_virtual_size:
            raise exception.UnsupportedDisk(
                f'{path}: virtual size {vsize} bytes is out of range '
                f'(max {self.max_virtual_size})')
        backing = (data.get('full-backing-filename')
                   or data.get('backing-filename'))
        if backing and not os.path.isabs(backing):
            backing = os.path.join(os.path.dirname(path), backing)
        return ImageInfo(path=path, format=fmt, virtual_size=vsize,
                         actual_size=int(data.get('actual-size', 0)),
                         backing_file=backing,
                         backing_format=data.get('backing-filename-format'))

    def create(self, path: str, fmt: str, size: int) -> None:
        self._run('create', '-f', fmt, path, str(size))

    def resize(self, path: str, fmt: str, size: int) -> None:
        self._run('resize', '-f', fmt, path, str(size))

    def convert(self, src: str, dst: str, src_fmt: str, dst_fmt: str) -> None:
        """Convert into ``dst`` (which must not be the final path yet)."""
        self._run('convert', '-f', src_fmt, '-O', dst_fmt, src, dst)

    def rebase_unsafe(self, path: str, backing: str,
                      backing_fmt: str) -> None:
        """Point an overlay at a byte-identical backing file elsewhere."""
        self._run('rebase', '-u', '-f', 'qcow2', '-F', backing_fmt,
                  '-b', backing, path)
