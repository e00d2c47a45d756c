"""Another host, files copied by rsync (over the same ssh options).

rsync keeps holes (``--sparse``), writes to a temporary name and renames
when done, and reports progress we pass on.  Commands still go over ssh.
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Optional

from resizedriver import exception
from resizedriver.sparse import ProgressFn
from resizedriver.transport import ssh

_PROGRESS = re.compile(rb'^\s*([\d,]+)\s+\d+%')


class RsyncTransport(ssh.SshTransport):
    def copy_file(self, src: str, dst: str,
                  progress: Optional[ProgressFn] = None) -> None:
        size = os.path.getsize(src)
        rsh = ' '.join(self.options.argv())
        cmd = ['rsync', '--sparse', '--times', '--info=progress2',
               '--no-inc-recursive', '-e', rsh, src,
               f'{self.options.target(self.host)}:{dst}']
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        for line in iter_lines(proc.stdout):
            m = _PROGRESS.match(line)
            if m and progress:
                progress(int(m.group(1).replace(b',', b'')), size)
        err = proc.stderr.read().decode(errors='replace').strip()
        rc = proc.wait()
        if rc != 0:
            raise exception.CommandFailed(
                f'rsync of {src} to {self.host}:{dst} failed (exit {rc}): '
                f'{err[-2000:]}')
        if progress:
            progress(size, size)

    def remove_partial(self, dst: str) -> None:
        """rsync writes ``.<name>.XXXXXX`` next to ``dst``."""
        self.execute('sh', '-c', 'rm -f -- "$1"/."$2".??????', 'sh',
                     os.path.dirname(dst), os.path.basename(dst))


def iter_lines(stream):
    """rsync ends progress updates with CR, not LF: split on both."""
    buf = b''
    while True:
        chunk = stream.read1(4096)
        if not chunk:
            break
        buf += chunk
        *lines, buf = re.split(rb'[\r\n]', buf)
        yield from lines
    if buf:
        yield buf
