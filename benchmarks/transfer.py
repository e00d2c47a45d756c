"""Benchmark: does compressing a disk copy to another host pay?

resizedriver copies a disk as a sparse stream over ssh (only allocated
data crosses the wire); ssh can compress that stream
(``[resizedriver] ssh_options = Compression=yes``).  This copies the same
qcow2 images from this host (A) to host B (``tools/host-b``, one veth)
with ssh compression off and on, through resizedriver's own transport,
and reports the copy's wall time (read, send, fsync, read back and
verify on B) and the bytes that crossed the veth.  Three kinds of data:

- ``pattern``: one byte repeated, as the resize benchmarks fill their
  overlays (the best case for compression);
- ``binaries``: this host's shared libraries, end to end (program data);
- ``random``: what encrypted or already compressed guest data looks like.

It measures; it never asserts.  Run it with ``benchmarks/run transfer``
(as root), not directly.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import subprocess
import sys
import time

from benchmarks import report
from benchmarks.cross_host import start_on_host_b
from benchmarks.resize_bench import MiB, parse_size
from resizedriver.transport.proc import Deadlines
from resizedriver.transport.ssh import SshOptions, SshTransport
from tests.lib import hostb

KINDS = ('pattern', 'binaries', 'random')
COLUMNS = ('data', 'size', 'compression', 'copy s', 'MiB/s', 'wire MiB',
           'wire/allocated')


@dataclasses.dataclass
class TransferResult:
    kind: str
    size: int               # bytes of data in the image (all allocated)
    compression: bool
    seconds: float
    wire: int               # bytes across the veth, both ways
    allocated: int          # the image's allocated bytes


def _raw_data(kind: str, size: int, path: str) -> None:
    """``size`` bytes of ``kind`` in the raw file ``path``."""
    with open(path, 'wb') as out:
        if kind == 'random':
            for _ in range(size // MiB):
                out.write(os.urandom(MiB))
        elif kind == 'pattern':
            out.write(b'\x5a' * size)
        else:
            libs = sorted(glob.glob('/usr/lib/x86_64-linux-gnu/**/*.so*',
                                    recursive=True))
            left = size
            while left > 0:
                for lib in libs:
                    if left <= 0 or not os.path.isfile(lib):
                        continue
                    with open(lib, 'rb') as f:
                        data = f.read(left)
                    out.write(data)
                    left -= len(data)


def make_image(kind: str, size: int, directory: str) -> str:
    """A qcow2 image whose every cluster holds ``kind`` data."""
    raw = os.path.join(directory, f'{kind}.raw')
    image = os.path.join(directory, f'{kind}.qcow2')
    _raw_data(kind, size, raw)
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw,
                    image], check=True)
    os.unlink(raw)
    return image


def transport(b: hostb.HostB, compression: bool) -> SshTransport:
    return SshTransport(b.addr, SshOptions(
        port=b.port, identity_file=b.key,
        options=b.client_options() +
        [f'Compression={"yes" if compression else "no"}']),
        Deadlines(command=3600.0))


def run_case(b: hostb.HostB, image: str, kind: str, size: int,
             compression: bool, dest_dir: str) -> TransferResult:
    remote = transport(b, compression)
    dest = os.path.join(dest_dir, os.path.basename(image))
    os.sync()
    subprocess.run(['sh', '-c', 'echo 3 > /proc/sys/vm/drop_caches'],
                   check=True)
    wire, start = b.wire_bytes(), time.monotonic()
    remote.copy_file(image, dest, owner='rdbench')
    seconds = time.monotonic() - start
    result = TransferResult(kind, size, compression, seconds,
                            b.wire_bytes() - wire,
                            os.stat(image).st_blocks * 512)
    remote.execute('rm', '-f', dest)
    return result


def _row(r: TransferResult) -> tuple[str, ...]:
    return (r.kind, report.size_text(r.size), 'on' if r.compression else
            'off', f'{r.seconds:.1f}', f'{r.size / MiB / r.seconds:.0f}',
            f'{r.wire / MiB:.0f}', f'{r.wire / max(r.allocated, 1):.2f}')


def plot(results: list[TransferResult], path: str) -> None:
    """Copy time per kind of data, compression off and on."""
    fig, ax = report.axes()
    kinds = [k for k in KINDS if any(r.kind == k for r in results)]
    for offset, compression, colour in ((-0.2, False, 'tab:blue'),
                                        (0.2, True, 'tab:orange')):
        seconds = [next((r.seconds for r in results if r.kind == k and
                         r.compression == compression), 0) for k in kinds]
        ax.bar([i + offset for i in range(len(kinds))], seconds, 0.4,
               color=colour,
               label=f'ssh compression {"on" if compression else "off"}')
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_ylabel('copy A -> B (s: send, fsync, verify)')
    ax.set_title('a disk copy to host B, with and without compression')
    ax.legend()
    report.save_figure(fig, path)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog='benchmarks/run transfer',
                                description=__doc__)
    p.add_argument('--size', default='1G', type=parse_size)
    p.add_argument('--kinds', default=','.join(KINDS),
                   type=lambda s: s.split(','))
    args, b, root = start_on_host_b(p, argv, 'transfer')
    dest_dir = os.path.join(b.instances, os.path.basename(root))
    results: list[TransferResult] = []
    try:
        transport(b, False).execute('mkdir', '-p', dest_dir)
        for kind in args.kinds:
            print(f'rdbench: transfer {kind} ...', file=sys.stderr,
                  flush=True)
            image = make_image(kind, args.size, root)
            for compression in (False, True):
                results.append(run_case(b, image, kind, args.size,
                                        compression, dest_dir))
            os.unlink(image)
    finally:
        subprocess.run(['rm', '-rf', root], check=False)
        transport(b, False).execute('rm', '-rf', dest_dir)
    note = (f'A -> B over a veth (tools/host-b), resizedriver\'s ssh '
            f'transport, page cache dropped before each copy; '
            f'{os.cpu_count()} host CPUs')
    print(report.format_table(COLUMNS, [_row(r) for r in results], note))
    report.save_named(results, args.results, note, 'transfer')
    plot(results, os.path.join(args.results, 'transfer.png'))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
