"""``transport.proc`` under eventlet: nova-compute of Nova 31 to 33 runs
monkey-patched, and its green ``subprocess.Popen`` hands out raw pipes
(``GreenFileIO``: no ``read1``), not ``io.BufferedReader``."""

from __future__ import annotations

import os
import subprocess

from resizedriver.transport import proc


class GreenLikePopen(subprocess.Popen):
    """Pipes as eventlet's green Popen makes them: unbuffered."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name in ('stdout', 'stderr'):
            pipe = getattr(self, name)
            if pipe is not None:
                fd = os.dup(pipe.fileno())
                pipe.close()
                setattr(self, name, os.fdopen(fd, 'rb', buffering=0))


def test_a_child_reads_green_pipes(monkeypatch):
    monkeypatch.setattr(proc.subprocess, 'Popen', GreenLikePopen)
    with proc.spawn(['sh', '-c', 'echo out; echo err >&2; exit 3'], 10,
                    stdout=True) as child:
        assert child.stdout.read1(100) == b'out\n'
        assert child.wait() == 3
    assert 'err' in child.stderr
