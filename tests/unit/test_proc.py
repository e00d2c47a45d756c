"""Children under eventlet (Nova 31-33's nova-compute is monkey-patched):
its green ``Popen`` gives unbuffered pipes unless asked otherwise."""

from __future__ import annotations

from eventlet.green import subprocess as green_subprocess

from resizedriver.transport import proc


def test_a_child_reads_green_pipes(monkeypatch):
    monkeypatch.setattr(proc.subprocess, 'Popen', green_subprocess.Popen)
    with proc.spawn(['sh', '-c', 'printf out; printf err >&2; exit 3'],
                    10, stdout=True) as child:
        assert child.stdout.read1(10) == b'out'
        assert child.wait() == 3
    assert child.stderr == 'err'
