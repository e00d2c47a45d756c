"""Reading and hashing a disk lets the other green threads of an
eventlet-patched nova-compute (Nova 31-33) run, chunk by chunk."""

from __future__ import annotations

import eventlet
from eventlet.green import time as green_time

from resizedriver import sparse

MiB = 1024 * 1024


def test_hashing_a_sparse_disk_yields_between_chunks(tmp_path,
                                                     monkeypatch):
    # what eventlet.monkey_patch() does to the time module
    monkeypatch.setattr(sparse, 'time', green_time, raising=False)
    disk = tmp_path / 'disk'
    with open(disk, 'wb') as f:
        f.write(b'data' * 1024)
        f.seek(64 * MiB)        # holes, hashed as zeros
        f.write(b'\1' * MiB)    # a data chunk
        f.write(bytes(8 * MiB))  # written zeros, read and skipped
    switches = []

    def other_green_thread():
        while True:
            switches.append(1)
            eventlet.sleep(0)

    other = eventlet.spawn(other_green_thread)
    eventlet.sleep(0)
    switches.clear()
    sparse.sha256(str(disk))
    other.kill()
    # one turn per chunk at least: 64 of holes, 1 + 8 read
    assert len(switches) >= 64 + 9
