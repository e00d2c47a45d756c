"""Waiting for a guest's QEMU process to be gone after power off."""

from __future__ import annotations

import subprocess
import sys
import time

from resizedriver import qemuprocess

UUID = '4a1c37a2-8f3e-4d55-9d7f-0c6f1f0a0001'


def _fake_qemu(seconds: float) -> subprocess.Popen:
    """A process whose command line names the guest as QEMU's does (once
    it has exec'd: waited for)."""
    proc = subprocess.Popen([sys.executable, '-c',
                             f'import time; time.sleep({seconds})',
                             '-uuid', UUID])
    for _ in range(100):
        if qemuprocess.find(proc.pid, UUID):
            return proc
        time.sleep(0.05)
    raise AssertionError('the fake QEMU did not start')


def test_pid_is_read_from_libvirts_pid_file_and_checked(tmp_path):
    proc = _fake_qemu(5)
    try:
        (tmp_path / 'guest.pid').write_text(str(proc.pid))
        assert qemuprocess.pid_of('guest', UUID, str(tmp_path)).pid == proc.pid
        # another guest's (or a reused) PID is not ours
        assert qemuprocess.pid_of('guest', UUID.replace('1', '2'),
                                  str(tmp_path)) is None
        assert qemuprocess.pid_of('other', UUID, str(tmp_path)) is None
        (tmp_path / 'bad.pid').write_text('garbage')
        assert qemuprocess.pid_of('bad', UUID, str(tmp_path)) is None
    finally:
        proc.kill()
        proc.wait()


def test_wait_returns_once_the_process_is_gone_even_unreaped():
    proc = _fake_qemu(0.6)
    process = qemuprocess.find(proc.pid, UUID)
    # not reaped by us while waiting: a zombie holds no fds, it is gone
    assert qemuprocess.wait_gone(process, timeout=10)
    assert proc.poll() == 0      # it had exited (and is reaped only now)


def test_wait_gives_up_after_its_timeout():
    proc = _fake_qemu(30)
    try:
        process = qemuprocess.find(proc.pid, UUID)
        assert not qemuprocess.wait_gone(process, timeout=0.5)
    finally:
        proc.kill()
        proc.wait()
    assert qemuprocess.wait_gone(process, timeout=1)
    # a later process given the same PID is not the one waited for
    assert qemuprocess.is_gone(process._replace(start='1'))


def test_stop_waits_for_the_process_after_libvirt_says_off(tmp_path,
                                                          monkeypatch):
    proc = _fake_qemu(0.6)
    (tmp_path / 'guest.pid').write_text(str(proc.pid))
    monkeypatch.setattr(qemuprocess, 'RUN_DIR', str(tmp_path))
    stopped = []
    qemuprocess.stop_and_wait('guest', UUID, lambda: stopped.append(1))
    # returned only once the process had gone, after the stop ran
    assert stopped == [1]
    assert proc.poll() == 0


def test_a_process_on_its_way_out_is_not_gone_until_it_has_exited(
        monkeypatch):
    # The kernel releases an exiting process's memory (its cmdline then
    # reads empty) before it closes its files -- the tap device and image
    # locks a start that follows needs.  Seen in CI: the wait returned
    # while the process still ran.
    proc = _fake_qemu(30)
    try:
        process = qemuprocess.find(proc.pid, UUID)
        assert process is not None
        monkeypatch.setattr(qemuprocess, '_argv', lambda pid: [])
        assert not qemuprocess.wait_gone(process, timeout=0.3)
    finally:
        proc.kill()
        proc.wait()
    # gone (reaped) and zombie both count as gone
    assert qemuprocess.wait_gone(process, timeout=1)
