"""Sparse-aware reading of disk files, and the framed stream every copy
but rsync's is made of.

Upstream Nova copies with scp, which turns every hole of a raw disk into
zeros on the wire and on the destination.  We read only the data extents
(``SEEK_DATA``/``SEEK_HOLE``, plus all-zero chunks inside them) and write
them at their offsets, so a 20 GiB raw disk with 1 GiB of data moves 1 GiB
and stays sparse.

The stream is a sequence of frames ``>QQ`` (offset, length) followed by
``length`` bytes, in increasing offset order; a frame with length 0 ends
the stream and carries the file's total size in ``offset``.  ``RECEIVER``
is the matching program run by ``python3 -c`` on the destination -- over
ssh, or directly for a copy on this host -- and it is the only writer of
copies: it writes the path it is given (always a partial name, see
:func:`partial_path`), fsyncs it, and removes it if the copy fails.
Giving the file its final name is the transport's job, and only after the
copy was compared (``Transport.copy_file``).

How a copy is verified, and why so (the guest is down meanwhile):

* The hash of a file is the sha256 of its bytes with holes read as zeros
  -- what ``sha256sum`` prints.  :class:`ContentDigest` computes it from
  (offset, data) extents by hashing the skipped holes as zeros, so the
  sender and :func:`sha256` give the same digest as a reader of every
  byte.
* The source is read once: :func:`write_stream` hashes the very bytes it
  sends (the old second ``sha256`` pass over the source is gone).
* The copy is hashed by the receiver from the device, not from what it
  received nor from the page cache: behind the writer, window by window,
  it fdatasyncs, drops the window's now clean cached pages
  (``POSIX_FADV_DONTNEED``, what ``dd iflag=nocache`` did for the whole
  file before) and reads it back.  Frames only go forward, so a window
  below the writer's position is never written again and its read-back
  bytes are final.  The read-back thus overlaps the transfer instead of
  following it: once the stream ends only the last window (after the
  final fsync) is left to read.  The receiver prints its digest and the
  sender compares; the copy gets its name, and ``copies_verified`` goes
  on record, only if they match.
* Deferring the check past the guest's start (to finish or confirm) is
  not sound: the guest boots from the copy and changes it, so no later
  read-back could tell a bad copy from a guest write; and checking in
  finish before the start would still be downtime.  Hashing the received
  bytes instead of reading them back would prove only the wire, not the
  disk.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
import time
from typing import IO, BinaryIO, Callable, Iterator

CHUNK = 1024 * 1024
FRAME = struct.Struct('>QQ')
#: how far the receiver's read-back trails its writes at most (besides
#: its own lag): the part of a copy still to be read once the stream ends
VERIFY_WINDOW = 32 * CHUNK
#: bytes, not a memoryview: comparing bytes is a memcmp, a view's is not
_ZEROS = bytes(CHUNK)

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)


#: how every file written under a temporary name ends
PARTIAL_SUFFIX = '.part'


def _let_others_run() -> None:
    """Called once a chunk by every loop that reads or hashes a disk.

    Under eventlet (Nova 31-33's nova-compute is monkey-patched) one OS
    thread runs every green thread, and a loop that never waits on a
    pipe -- the holes of a sparse disk hashed as zeros, all-zero chunks
    read and skipped -- would hold them all (RPC, the service heartbeat,
    other instances' operations) until it ends: 11 s for an 8 GiB raw
    disk here.  ``time.sleep`` is the hub's there; under native threads
    this only lets the GIL go.
    """
    time.sleep(0)


def partial_path(dst: str, owner: str) -> str:
    """Where ``owner`` (an instance UUID) writes ``dst`` until verified.

    Tagged with the owner so that two copies of the same file (two
    instances from one image, each copying ``_base/<name>``) never write,
    truncate or remove each other's partial file.
    """
    if not owner or '/' in owner or owner.startswith('.'):
        raise ValueError(f'bad owner tag {owner!r}')
    return f'{dst}.{owner}{PARTIAL_SUFFIX}'


class ContentDigest:
    """The sha256 of a file from its extents, holes hashed as zeros.

    Extents must come in offset order (as :func:`iter_extents` yields
    them); the gaps between them -- holes and skipped all-zero chunks --
    are hashed as the zeros a reader of the whole file would see.
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._pos = 0

    def add(self, offset: int, data: bytes) -> None:
        self._zeros_to(offset)
        self._sha.update(data)
        self._pos += len(data)

    def hexdigest(self, size: int) -> str:
        """The digest of the file once it is ``size`` bytes long."""
        self._zeros_to(size)
        return self._sha.hexdigest()

    def _zeros_to(self, offset: int) -> None:
        if offset < self._pos:
            raise ValueError(f'extent at {offset} before {self._pos}')
        while self._pos < offset:
            n = min(CHUNK, offset - self._pos)
            self._sha.update(_ZEROS[:n])
            self._pos += n
            _let_others_run()


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
    for start, end in _data_ranges(fd, size):
        offset = start
        while offset < end:
            _let_others_run()
            data = os.pread(fd, min(CHUNK, end - offset), offset)
            if not data:
                return
            if data != _ZEROS[:len(data)]:
                yield offset, data
            offset += len(data)


def sha256(path: str) -> str:
    """The hash of local file ``path`` (see :class:`ContentDigest`),
    reading only its data extents."""
    size = os.path.getsize(path)
    digest = ContentDigest()
    with open(path, 'rb') as src:
        for offset, data in iter_extents(src, size):
            digest.add(offset, data)
    return digest.hexdigest(size)


def write_stream(src_path: str, out: IO[bytes],
                 progress: ProgressFn | None = None) -> str:
    """Write ``src_path`` as a framed extent stream to ``out``; return
    the hash of what was sent -- of the source, read this once."""
    size = os.path.getsize(src_path)
    digest = ContentDigest()
    with open(src_path, 'rb') as src:
        for offset, data in iter_extents(src, size):
            digest.add(offset, data)
            out.write(FRAME.pack(offset, len(data)))
            out.write(data)
            if progress:
                progress(offset + len(data), size)
    out.write(FRAME.pack(size, 0))
    out.flush()
    if progress:
        progress(size, size)
    return digest.hexdigest(size)


# Runs on the destination as: python3 -c RECEIVER <partial path> <window>
# and prints the sha256 of the copy as read back from the device (see the
# module docstring).  Kept free of anything but the standard library: the
# destination need not have us.  The fsyncs are there so that the dropped
# pages are clean, the read-back comes from the device, and the copy
# survives a power cut.
RECEIVER = r'''
import hashlib, os, struct, sys, threading
part, window = sys.argv[1], int(sys.argv[2])
frame = struct.Struct(">QQ")
inp = sys.stdin.buffer
def read(n):
    buf = b""
    while len(buf) < n:
        got = inp.read(n - len(buf))
        if not got:
            raise SystemExit("stream ended early")
        buf += got
    return buf
fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
lock = threading.Condition()
# written: every byte below it is final; size: the stream ended and the
# file is fsynced; failed: why the read-back stopped
state = {"written": 0, "size": None, "failed": None}
digest = hashlib.sha256()
def read_back():
    pos = 0
    try:
        while True:
            with lock:
                while (state["size"] is None and
                       state["written"] < pos + window):
                    lock.wait()
                size = state["size"]
                end = (size if size is not None
                       else state["written"] // window * window)
            if size is None:
                os.fdatasync(fd)
            os.posix_fadvise(fd, pos, end - pos, os.POSIX_FADV_DONTNEED)
            while pos < end:
                data = os.pread(fd, min(1 << 20, end - pos), pos)
                if not data:
                    raise OSError("the copy ends at %d" % pos)
                digest.update(data)
                pos += len(data)
            if size is not None:
                return
    except Exception as e:
        state["failed"] = e
reader = threading.Thread(target=read_back, daemon=True)
reader.start()
complete = False
try:
    while True:
        offset, length = frame.unpack(read(frame.size))
        if offset < state["written"]:
            raise SystemExit("frames out of order")
        if state["failed"] is not None:
            break
        if length == 0:
            os.ftruncate(fd, offset)
            os.fsync(fd)
            with lock:
                state["size"] = offset
                lock.notify()
            reader.join()
            break
        os.pwrite(fd, read(length), offset)
        with lock:
            state["written"] = offset + length
            lock.notify()
    if state["failed"] is not None:
        raise SystemExit("reading the copy back failed: %s" % state["failed"])
    complete = True
finally:
    os.close(fd)
    if not complete:
        os.unlink(part)
print(digest.hexdigest())
'''
