"""Waiting for a guest's QEMU process to be gone after power off."""

from __future__ import annotations

import os
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
        if qemuprocess._runs_guest(proc.pid, UUID):
            return proc
        time.sleep(0.05)
    raise AssertionError('the fake QEMU did not start')


def test_pid_is_read_from_libvirts_pid_file_and_checked(tmp_path):
    proc = _fake_qemu(5)
    try:
        (tmp_path / 'guest.pid').write_text(str(proc.pid))
        assert qemuprocess.pid_of('guest', UUID, str(tmp_path)) == proc.pid
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
    # not reaped by us while waiting: a zombie holds no fds, it is gone
    assert qemuprocess.wait_gone(proc.pid, UUID, timeout=10)
    assert proc.poll() == 0      # it had exited (and is reaped only now)


def test_wait_gives_up_after_its_timeout():
    proc = _fake_qemu(30)
    try:
        assert not qemuprocess.wait_gone(proc.pid, UUID, timeout=0.5)
    finally:
        proc.kill()
        proc.wait()
    assert qemuprocess.wait_gone(os.getpid() + 10 ** 6, UUID, timeout=1)


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
