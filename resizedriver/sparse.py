"""Sparse-aware reading of disk files, and the framed stream used over ssh.

Upstream Nova copies with scp, which turns every hole of a raw disk into
zeros on the wire and on the destination.  We read only the data extents
(``SEEK_DATA``/``SEEK_HOLE``, plus all-zero chunks inside them) and write
them at their offsets, so a 20 GiB raw disk with 1 GiB of data moves 1 GiB
and stays sparse.

The ssh stream is a sequence of frames ``>QQ`` (offset, length) followed by
``length`` bytes; a frame with length 0 ends the stream and carries the
file's total size in ``offset``.  ``RECEIVER`` is the matching program run
by ``python3 -c`` on the destination.

Both writers here write the path they are given -- always a partial name,
see :func:`partial_path` -- fsync it, and remove it if the copy fails.
Giving the file its final name is the transport's job, and only after the
copy was read back and compared (``Transport.copy_file``).
"""

from __future__ import annotations

import errno
import os
import struct
from typing import IO, BinaryIO, Callable, Iterator

CHUNK = 1024 * 1024
FRAME = struct.Struct('>QQ')

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)


#: how every file written under a temporary name ends
PARTIAL_SUFFIX = '.part'


def partial_path(dst: str, owner: str) -> str:
    """Where ``owner`` (an instance UUID) writes ``dst`` until verified.

    Tagged with the owner so that two copies of the same file (two
    instances from one image, each copying ``_base/<name>``) never write,
    truncate or remove each other's partial file.
    """
    if not owner or '/' in owner or owner.startswith('.'):
        raise ValueError(f'bad owner tag {owner!r}')
    return f'{dst}.{owner}{PARTIAL_SUFFIX}'


def _data_ranges(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """Yield (start, end) of the regions that may hold data."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:      # only a hole is left
                return
            if e.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield pos, size             # filesystem cannot tell
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, min(end, size)
        pos = end


def iter_extents(src: BinaryIO, size: int) -> Iterator[tuple[int, bytes]]:
    """Yield (offset, data) for every non-zero chunk of ``src``."""
    fd = src.fileno()
    zero = bytes(CHUNK)
    for start, end in _data_ranges(fd, size):
        offset = start
        while offset < end:
            data = os.pread(fd, min(CHUNK, end - offset), offset)
            if not data:
                return
            if data != zero[:len(data)]:
                yield offset, data
            offset += len(data)


def copy_local(src_path: str, part: str,
               progress: ProgressFn | None = None) -> None:
    """Copy keeping holes into ``part`` (fsynced); removed on failure."""
    size = os.path.getsize(src_path)
    complete = False
    try:
        with open(src_path, 'rb') as src, open(part, 'wb') as dst:
            for offset, data in iter_extents(src, size):
                os.pwrite(dst.fileno(), data, offset)
                if progress:
                    progress(offset + len(data), size)
            dst.truncate(size)
            os.fsync(dst.fileno())    # the data is on disk before we hash
        complete = True
    finally:
        if not complete and os.path.exists(part):
            os.unlink(part)
    if progress:
        progress(size, size)


def write_stream(src_path: str, out: IO[bytes],
                 progress: ProgressFn | None = None) -> None:
    """Write ``src_path`` as a framed extent stream to ``out``."""
    size = os.path.getsize(src_path)
    with open(src_path, 'rb') as src:
        for offset, data in iter_extents(src, size):
            out.write(FRAME.pack(offset, len(data)))
            out.write(data)
            if progress:
                progress(offset + len(data), size)
    out.write(FRAME.pack(size, 0))
    out.flush()
    if progress:
        progress(size, size)


# Runs on the destination as: python3 -c RECEIVER <partial path>.  Kept
# free of anything but the standard library: the destination need not have
# us.  The fsync is there so that the verification that follows can read
# the bytes back from the device, and so that they survive a power cut.
RECEIVER = r'''
import os, struct, sys
part = sys.argv[1]; frame = struct.Struct(">QQ")
inp = sys.stdin.buffer
def read(n):
    buf = b""
    while len(buf) < n:
        got = inp.read(n - len(buf))
        if not got:
            raise SystemExit("stream ended early")
        buf += got
    return buf
fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
complete = False
try:
    while True:
        offset, length = frame.unpack(read(frame.size))
        if length == 0:
            os.ftruncate(fd, offset)
            break
        os.pwrite(fd, read(length), offset)
    os.fsync(fd)
    complete = True
finally:
    os.close(fd)
    if not complete:
        os.unlink(part)
'''
