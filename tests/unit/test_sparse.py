from __future__ import annotations

import ast
import hashlib
import io
import os
import subprocess
import sys
import time

import pytest

from resizedriver import sparse

MiB = 1024 * 1024
SIZE = 64 * MiB
REGIONS = [(1 * MiB + 100, b'first region ' * 300),
           (40 * MiB, b'second region ' * 300)]


def allocated(path) -> int:
    return os.stat(path).st_blocks * 512


@pytest.fixture
def src(tmp_path) -> str:
    """A 64 MiB file with two small data regions and holes elsewhere."""
    path = str(tmp_path / 'src.raw')
    with open(path, 'wb') as f:
        f.truncate(SIZE)
        for offset, data in REGIONS:
            f.seek(offset)
            f.write(data)
    if allocated(path) > 1 * MiB:
        pytest.skip('this filesystem does not keep holes')
    return path


def read(path) -> bytes:
    with open(path, 'rb') as f:
        return f.read()


def leftovers(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith('.part'))


def receive(src: str, dst: str, prelude: str = '',
            window: int = sparse.VERIFY_WINDOW) -> tuple[str, str]:
    """Stream ``src`` into the receiver writing ``dst`` (``prelude``
    run first, in its process); the sender's and the receiver's hash."""
    proc = subprocess.Popen(
        [sys.executable, '-c', prelude + sparse.RECEIVER, dst, str(window)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    sent = sparse.write_stream(src, proc.stdin)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return sent, out.decode().strip()


def test_stream_keeps_content_and_holes(src, tmp_path):
    dst = str(tmp_path / 'dst.raw')
    seen = []
    proc = subprocess.Popen(
        [sys.executable, '-c', sparse.RECEIVER, dst,
         str(sparse.VERIFY_WINDOW)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    sparse.write_stream(src, proc.stdin, lambda done, total: seen.append(
        (done, total)))
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0
    assert os.path.getsize(dst) == SIZE
    assert read(dst) == read(src)
    assert allocated(dst) < 1 * MiB
    assert leftovers(tmp_path) == []
    assert seen[-1] == (SIZE, SIZE)
    assert all(total == SIZE for _, total in seen)


def test_stream_does_not_allocate_written_zeros(tmp_path):
    src = str(tmp_path / 'zeros.raw')
    with open(src, 'wb') as f:
        f.write(bytes(8 * MiB))          # allocated, but all zeros
        f.write(b'tail')
    dst = str(tmp_path / 'dst.raw')
    receive(src, dst)
    assert read(dst) == read(src)
    assert allocated(dst) < 1 * MiB


def test_stream_of_all_hole_file_keeps_size(tmp_path):
    src = str(tmp_path / 'empty.raw')
    with open(src, 'wb') as f:
        f.truncate(5 * MiB + 7)
    dst = str(tmp_path / 'dst.raw')
    receive(src, dst)
    assert os.path.getsize(dst) == 5 * MiB + 7
    assert read(dst) == bytes(5 * MiB + 7)


def test_receiver_replaces_existing_dst(src, tmp_path):
    dst = tmp_path / 'dst.raw'
    dst.write_bytes(b'x' * (SIZE + 10))
    receive(src, str(dst))
    assert read(dst) == read(src)


def test_failed_write_leaves_no_dst_and_no_part(src, tmp_path):
    dst = str(tmp_path / 'dst.raw')
    no_space = """
import os
real_pwrite, calls = os.pwrite, []
def pwrite(fd, data, offset):
    calls.append(offset)
    if len(calls) > 1:
        raise OSError(28, 'No space left on device')
    return real_pwrite(fd, data, offset)
os.pwrite = pwrite
"""
    with pytest.raises(AssertionError, match='No space'):
        receive(src, dst, no_space)
    assert not os.path.exists(dst)
    assert leftovers(tmp_path) == []


def sparse_and_zeros(path: str, size: int) -> None:
    """Data, a hole, an allocated all-zero run, data, a tail hole."""
    with open(path, 'wb') as f:
        f.write(os.urandom(MiB + 3))
        f.seek(3 * MiB)
        f.write(bytes(2 * MiB) + os.urandom(5))
        f.truncate(size)


@pytest.mark.parametrize('size', [0, 6 * MiB, 9 * MiB + 1])
def test_one_hash_of_a_file_on_every_side(tmp_path, size):
    """What the sender sends, what the receiver reads back, sparse.sha256
    and a plain reader of every byte (sha256sum) agree: holes and
    unsent zeros count as zeros."""
    src = str(tmp_path / 'src.raw')
    if size:
        sparse_and_zeros(src, size)
    else:
        open(src, 'wb').close()
    sent, received = receive(src, str(tmp_path / 'dst.raw'), window=MiB)
    plain = hashlib.sha256(read(src)).hexdigest()
    assert sent == received == sparse.sha256(src) == plain
    assert subprocess.run(['sha256sum', src], capture_output=True,
                          text=True).stdout.split()[0] == plain


def test_receiver_hashes_what_it_wrote_not_what_it_received(src,
                                                            tmp_path):
    """A disk that keeps other bytes than it was given: the read-back
    hash differs from the sender's (hashing the received bytes would
    not)."""
    bad_disk = """
import os
real_pwrite = os.pwrite
os.pwrite = lambda fd, data, offset: real_pwrite(
    fd, bytes([data[0] ^ 1]) + data[1:], offset)
"""
    sent, received = receive(src, str(tmp_path / 'dst.raw'), bad_disk)
    assert sent == sparse.sha256(src)
    assert received != sent


TRACE = """
import os, threading
_lock, _log = threading.Lock(), open(os.environ['TRACE'], 'a')
def _traced(name, show):
    real = getattr(os, name)
    def call(*args):
        result = real(*args)
        with _lock:
            _log.write(repr((name,) + show(result, *args)) + '\\n')
            _log.flush()
        return result
    setattr(os, name, call)
_traced('pwrite', lambda r, fd, data, offset: (offset, len(data)))
_traced('pread', lambda r, fd, n, offset: (offset, len(r)))
_traced('posix_fadvise', lambda r, fd, offset, n, advice: (offset, n, advice))
_traced('fsync', lambda r, fd: ())
_traced('fdatasync', lambda r, fd: ())
"""


def traced(tmp_path) -> tuple[str, str]:
    return str(tmp_path / 'trace'), TRACE


def events(trace: str) -> list[tuple]:
    with open(trace) as f:
        return [ast.literal_eval(line) for line in f]


def test_read_back_is_from_the_device(tmp_path, monkeypatch):
    """Every byte the receiver hashes was written, then synced, then its
    cached page dropped, before it was read: the hash is what the device
    holds, as ``dd iflag=nocache`` + ``sha256sum`` gave before."""
    src = str(tmp_path / 'src.raw')
    sparse_and_zeros(src, 9 * MiB + 1)
    trace, prelude = traced(tmp_path)
    monkeypatch.setenv('TRACE', trace)
    sent, received = receive(src, str(tmp_path / 'dst.raw'), prelude,
                             window=MiB)
    assert sent == received
    log = events(trace)
    reads = [(i, e) for i, e in enumerate(log) if e[0] == 'pread']
    assert sum(e[2] for _, e in reads) == 9 * MiB + 1   # every byte
    for i, (_, offset, n) in reads:
        end = offset + n
        drop = max(j for j, e in enumerate(log[:i])
                   if e[0] == 'posix_fadvise' and e[1] <= offset and
                   (e[2] == 0 or end <= e[1] + e[2]))
        assert log[drop][3] == os.POSIX_FADV_DONTNEED
        last_write = max((j for j, e in enumerate(log[:i])
                          if e[0] == 'pwrite' and e[1] < end and
                          offset < e[1] + e[2]), default=-1)
        assert any(e[0] in ('fsync', 'fdatasync')
                   for e in log[last_write + 1:drop])


def test_read_back_starts_before_the_stream_ends(tmp_path, monkeypatch):
    """The copy is read back behind the writer, not after it: with the
    stream held half-way, the first window is read back already."""
    src = str(tmp_path / 'src.raw')
    with open(src, 'wb') as f:
        f.write(os.urandom(8 * MiB))
    trace, prelude = traced(tmp_path)
    monkeypatch.setenv('TRACE', trace)
    buf = io.BytesIO()
    sent = sparse.write_stream(src, buf)
    stream = buf.getvalue()
    dst = str(tmp_path / 'dst.raw')
    proc = subprocess.Popen(
        [sys.executable, '-c', prelude + sparse.RECEIVER, dst, str(MiB)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.stdin.write(stream[:len(stream) // 2])
    proc.stdin.flush()
    for _ in range(300):
        if os.path.exists(trace) and any(
                e[0] == 'pread' for e in events(trace)):
            break
        time.sleep(0.01)
    else:
        pytest.fail('nothing read back while the stream was held')
    proc.stdin.write(stream[len(stream) // 2:])
    proc.stdin.close()
    assert proc.stdout.read().decode().strip() == sent
    assert proc.wait(timeout=30) == 0


def frames(stream: bytes):
    """Parse a framed stream into [(offset, length)] and the end size."""
    pos, out = 0, []
    while True:
        offset, length = sparse.FRAME.unpack_from(stream, pos)
        pos += sparse.FRAME.size
        if length == 0:
            assert pos == len(stream)
            return out, offset
        out.append((offset, length))
        pos += length


def test_write_stream_sends_only_data(src):
    buf = io.BytesIO()
    seen = []
    sparse.write_stream(src, buf, lambda d, t: seen.append((d, t)))
    data_frames, size = frames(buf.getvalue())
    assert size == SIZE
    assert sum(n for _, n in data_frames) < 2 * MiB + 8 * 1024
    assert sum(n for _, n in data_frames) >= sum(len(d) for _, d in REGIONS)
    for offset, data in REGIONS:
        assert any(o <= offset and offset + len(data) <= o + n
                   for o, n in data_frames)
    assert seen[-1] == (SIZE, SIZE)


def run_receiver(dst: str, stream: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', sparse.RECEIVER, dst,
                           str(sparse.VERIFY_WINDOW)],
                          input=stream, capture_output=True, timeout=30)


@pytest.mark.parametrize('cut', ['end frame', 'inside data', 'inside header',
                                 'half', 'all'])
def test_truncated_stream_leaves_nothing(src, tmp_path, cut):
    buf = io.BytesIO()
    sparse.write_stream(src, buf)
    stream = buf.getvalue()
    first_len = sparse.FRAME.unpack_from(stream, 0)[1]
    keep = {'end frame': len(stream) - sparse.FRAME.size,
            'inside data': sparse.FRAME.size + first_len // 2,
            'inside header': sparse.FRAME.size + first_len + 5,
            'half': len(stream) // 2,
            'all': 0}[cut]
    dst = str(tmp_path / 'received.raw')
    result = run_receiver(dst, stream[:keep])
    assert result.returncode != 0
    assert not os.path.exists(dst)
