from __future__ import annotations

import io
import os
import subprocess
import sys

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


def test_copy_local_keeps_content_and_holes(src, tmp_path):
    dst = str(tmp_path / 'dst.raw')
    seen = []
    sparse.copy_local(src, dst, lambda done, total: seen.append(
        (done, total)))
    assert os.path.getsize(dst) == SIZE
    assert read(dst) == read(src)
    assert allocated(dst) < 1 * MiB
    assert leftovers(tmp_path) == []
    assert seen[-1] == (SIZE, SIZE)
    assert all(total == SIZE for _, total in seen)


def test_copy_local_does_not_allocate_written_zeros(tmp_path):
    src = str(tmp_path / 'zeros.raw')
    with open(src, 'wb') as f:
        f.write(bytes(8 * MiB))          # allocated, but all zeros
        f.write(b'tail')
    dst = str(tmp_path / 'dst.raw')
    sparse.copy_local(src, dst)
    assert read(dst) == read(src)
    assert allocated(dst) < 1 * MiB


def test_copy_local_of_all_hole_file_keeps_size(tmp_path):
    src = str(tmp_path / 'empty.raw')
    with open(src, 'wb') as f:
        f.truncate(5 * MiB + 7)
    dst = str(tmp_path / 'dst.raw')
    sparse.copy_local(src, dst)
    assert os.path.getsize(dst) == 5 * MiB + 7
    assert read(dst) == bytes(5 * MiB + 7)


def test_copy_local_replaces_existing_dst(src, tmp_path):
    dst = tmp_path / 'dst.raw'
    dst.write_bytes(b'x' * (SIZE + 10))
    sparse.copy_local(src, str(dst))
    assert read(dst) == read(src)


def test_failed_copy_leaves_no_dst_and_no_part(src, tmp_path, monkeypatch):
    dst = str(tmp_path / 'dst.raw')
    real_pwrite = os.pwrite
    calls = []

    def pwrite(fd, data, offset):
        calls.append(offset)
        if len(calls) > 1:
            raise OSError(28, 'No space left on device')
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, 'pwrite', pwrite)
    with pytest.raises(OSError, match='No space'):
        sparse.copy_local(src, dst)
    assert len(calls) == 2
    assert not os.path.exists(dst)
    assert leftovers(tmp_path) == []


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
    return subprocess.run([sys.executable, '-c', sparse.RECEIVER, dst],
                          input=stream, capture_output=True, timeout=30)


def test_stream_round_trip_through_receiver(src, tmp_path):
    dst = str(tmp_path / 'received.raw')
    proc = subprocess.Popen([sys.executable, '-c', sparse.RECEIVER, dst],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    sparse.write_stream(src, proc.stdin)
    proc.stdin.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=30) == 0, err
    assert read(dst) == read(src)
    assert allocated(dst) < 1 * MiB
    assert leftovers(tmp_path) == []


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
