"""Another host, files copied by rsync (over the same ssh options).

rsync keeps holes (``--sparse``), writes to a temporary name and renames
when done, and reports progress we pass on.  Commands still go over ssh.

rsync reads the source in its own process and writes the whole copy
before it names it, so neither side can be hashed while streaming as the
stream transports do (:mod:`resizedriver.sparse`): the source is hashed
again here and the copy read back from the device after rsync ends --
the two at once, on their two hosts.  rsync's own whole-file checksum
only proves what it received, not what the device holds.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import re
import shlex
from typing import Iterator, Optional

from resizedriver import sparse
from resizedriver.sparse import ProgressFn, partial_path
from resizedriver.transport import ssh
from resizedriver.transport.proc import spawn

_PROGRESS = re.compile(rb'^\s*([\d,]+)\s+\d+%')
_RECORD_END = re.compile(rb'\d+:\d\d:\d\d\s*$')


class RsyncTransport(ssh.SshTransport):
    copy_programs = ('rsync',)

    def _send(self, src: str, part: str,
              progress: Optional[ProgressFn]) -> tuple[str, str]:
        """rsync to ``part`` (its own ``.<part name>.XXXXXX`` temp file
        thus carries the owner too).  ``--fsync``: the data is on disk
        before we hash it and before the record relies on it."""
        size = os.path.getsize(src)
        # -e is split by rsync itself (quotes, no backslashes): shlex.join
        # keeps a key path with spaces one argument.  Our ssh argv ends
        # with "--", so the host rsync appends cannot be an option.
        cmd = ['rsync', '--sparse', '--times', '--fsync',
               '--info=progress2', '--no-inc-recursive',
               '-e', shlex.join(self.ssh_argv()), '--', src,
               f'{self.host}:{part}']
        with spawn(cmd, self.deadlines.for_size(size),
                   stdout=True) as child:
            for line in iter_lines(child.stdout):
                m = _PROGRESS.match(line)
                if m and progress:
                    progress(int(m.group(1).replace(b',', b'')), size)
            rc = child.wait()
        if rc != 0:
            raise child.failure(f'rsync of {src} to {self.host}:{part}', rc)
        if progress:
            progress(size, size)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            sent = pool.submit(sparse.sha256, src)
            written = self.sha256_from_disk(part)
            return sent.result(), written

    def remove_partial(self, dst: str, owner: str) -> None:
        """Our partial file and rsync's ``.<partial name>.XXXXXX``."""
        super().remove_partial(dst, owner)
        part = partial_path(dst, owner)
        self.execute('sh', '-c', 'rm -f -- "$1"/."$2".??????', 'sh',
                     os.path.dirname(part), os.path.basename(part))


def iter_lines(stream: io.BufferedIOBase) -> Iterator[bytes]:
    """rsync *starts* progress updates with CR (``\\r  32,768  0% ...
    0:00:00``): split on CR and LF, and pass on a pending record once it
    has its elapsed time, not only when the next update arrives."""
    buf = b''
    while True:
        chunk = stream.read1(4096)
        if not chunk:
            break
        buf += chunk
        *lines, buf = re.split(rb'[\r\n]', buf)
        yield from lines
        if _RECORD_END.search(buf):
            yield buf
            buf = b''
    if buf:
        yield buf
