"""qemu-img, on whichever host a transport reaches.

``info`` runs with ``--force-share`` (the image may be open by a running
guest) under ``prlimit`` (a crafted image must not eat the host), the way
Nova's images.qemu_img_info does, and refuses what we never handle: formats
other than raw/qcow2, qcow2 external data files, absurd virtual sizes.
Every other qemu-img command runs under the same memory limit, with CPU
and wall-clock limits that grow with the image only for ``convert`` (the
one that reads it all).

Disk contents are guest-controlled, so qemu-img must never guess a format
(CVE-2024-32498): callers pass the format the definition or record claims,
and ``read_header`` lets them look at a local file's first bytes before
qemu-img opens it at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import stat
import struct
from typing import Any, Optional, Sequence

from resizedriver import exception
from resizedriver.model import GiB
from resizedriver.transport import Transport

SUPPORTED_FORMATS = ('raw', 'qcow2')
#: what every command here runs on its transport's host
PROGRAMS = ('prlimit', 'qemu-img')
INFO_CPU_SECONDS = 30
INFO_ADDRESS_SPACE = 1 * GiB


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    path: str
    format: str
    virtual_size: int
    actual_size: int
    backing_file: Optional[str]     # as written in the header: untrusted
    backing_format: Optional[str]


#: First bytes of the image formats QEMU recognises when probing and that
#: can name other files (backing files, data files, extents).
_MAGICS = ((b'QFI\xfb', 'qcow2'), (b'QED\x00', 'qed'), (b'KDMV', 'vmdk'),
           (b'COWD', 'vmdk'), (b'# Disk DescriptorFile', 'vmdk'))
#: qcow2 v3 incompatible feature bit: the guest data lives in another file.
_QCOW2_INCOMPAT_DATA_FILE = 1 << 2


@dataclasses.dataclass(frozen=True)
class Header:
    """What a file's first bytes claim, read without qemu-img."""

    format: Optional[str]    # 'qcow2', 'qcow' (v1), 'qed', 'vmdk' or None
    data_file: bool = False  # qcow2 with an external data file


def _read_start(path: str, size: int) -> bytes:
    """The first ``size`` bytes of a local regular file, zero-padded.
    Opened non-blocking and checked to be a regular file: a FIFO or
    device in place of an image is refused, not waited on or read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise exception.UnsupportedDisk(f'{path}: not a regular file')
        return os.pread(fd, size, 0).ljust(size, b'\0')
    finally:
        os.close(fd)


def read_header(path: str) -> Header:
    """The image format a local file's first bytes claim, if any.

    Read before qemu-img opens the file, so that what qemu-img would follow
    (a qcow2 data file: QEMU before the CVE-2024-4467 fix opens it even for
    ``info``) is refused first.
    """
    head = _read_start(path, 512)     # as QEMU reads it to probe
    fmt = next((name for magic, name in _MAGICS if head.startswith(magic)),
               None)
    if fmt != 'qcow2':
        return Header(fmt)
    version, = struct.unpack_from('>I', head, 4)
    if version < 2:
        return Header('qcow')
    features = struct.unpack_from('>Q', head, 72)[0] if version >= 3 else 0
    return Header('qcow2', bool(features & _QCOW2_INCOMPAT_DATA_FILE))


@dataclasses.dataclass(frozen=True)
class Qcow2Chain:
    """What a qcow2 header says of the image's size and backing file."""

    virtual_size: int
    backing_file: Optional[str]     # as written: untrusted
    backing_format: Optional[str]


#: qcow2 header extension naming the backing file's format
_QCOW2_EXT_BACKING_FORMAT = 0xE2792ACA


def read_qcow2_chain(path: str) -> Qcow2Chain:
    """Size and backing file of the local qcow2 ``path``, read from its
    header as QEMU reads them (``qcow2_do_open``: the extensions from the
    header's end up to the backing file's name, all in the first
    cluster), with no process: for a check made with the guest off, of
    an image this host made (the overlay plan's, by ``qemu-img
    create``).  Anything else is refused (``UnsupportedDisk``)."""
    head = _read_start(path, 104)
    version, boff, bsize, cbits, size = struct.unpack_from('>IQIIQ',
                                                           head, 4)
    if not head.startswith(b'QFI\xfb') or version not in (2, 3) or \
            not 9 <= cbits <= 21:
        raise exception.UnsupportedDisk(f'{path}: not a qcow2 header')
    cluster = 1 << cbits
    data = _read_start(path, cluster)
    ext = 72 if version == 2 else struct.unpack_from('>I', head, 100)[0]
    end = boff or cluster
    if boff + bsize > cluster or not 72 <= ext <= end:
        raise exception.UnsupportedDisk(f'{path}: a qcow2 header past its '
                                        f'first cluster')
    fmt = None
    while ext + 8 <= end:
        kind, length = struct.unpack_from('>II', data, ext)
        if kind == 0:
            break
        if ext + 8 + length > end:
            raise exception.UnsupportedDisk(
                f'{path}: a qcow2 header extension past its end')
        if kind == _QCOW2_EXT_BACKING_FORMAT:
            fmt = _text(path, data[ext + 8:ext + 8 + length])
        ext += 8 + (length + 7) // 8 * 8
    backing = _text(path, data[boff:boff + bsize]) if boff else None
    return Qcow2Chain(size, backing, fmt)


def _text(path: str, raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise exception.UnsupportedDisk(
            f'{path}: a qcow2 header name that is not UTF-8') from None


def _check_supported(path: str, fmt: Optional[str]) -> None:
    if fmt not in SUPPORTED_FORMATS:
        raise exception.UnsupportedDisk(
            f'{path}: disk format {fmt!r} is not supported '
            f'(only {", ".join(SUPPORTED_FORMATS)})')


def _rebase_unsafe_args(path: str, backing: str,
                        backing_fmt: str) -> list[str]:
    return ['rebase', '-u', '-f', 'qcow2', '-F', backing_fmt, '-b', backing,
            path]


class QemuImg:
    def __init__(self, transport: Transport, max_virtual_size: int) -> None:
        self.transport = transport
        self.max_virtual_size = max_virtual_size

    def _run(self, *args: str, size: int = 0) -> str:
        """qemu-img under prlimit, bounded by the transport's deadline for
        a file of ``size`` bytes (0: a metadata-only command)."""
        timeout = self.transport.deadlines.for_size(size)
        cpu = INFO_CPU_SECONDS if not size else int(timeout)
        return self.transport.execute(*self._argv(args, cpu),
                                      timeout=timeout)

    @staticmethod
    def _argv(args: Sequence[str], cpu: int = INFO_CPU_SECONDS) -> list[str]:
        """``qemu-img args`` under prlimit, at most ``cpu`` s of CPU."""
        prlimit, qemu_img = PROGRAMS
        return [prlimit, f'--cpu={cpu}', f'--as={INFO_ADDRESS_SPACE}',
                qemu_img, *args]

    def info(self, path: str, fmt: Optional[str] = None) -> ImageInfo:
        """Inspect ``path`` as ``fmt`` (give it for anything untrusted).

        Without ``fmt`` qemu-img probes, and a guest that wrote a qcow2
        header into its raw disk would have it read as an image.  The
        backing file is returned as the header names it, unresolved: only
        the caller knows where backing files may be.
        """
        if fmt is not None:
            _check_supported(path, fmt)   # before qemu-img reads a byte
        data = self._info_json(path, fmt)
        try:
            found = data.get('format')
            vsize = int(data['virtual-size'])
            specific = (data.get('format-specific') or {}).get('data') or {}
            backing = data.get('backing-filename')
            info = ImageInfo(path=path, format=found, virtual_size=vsize,
                             actual_size=int(data.get('actual-size', 0)),
                             backing_file=backing,
                             backing_format=data.get(
                                 'backing-filename-format'))
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise exception.UnreadableImage(
                f'{path}: qemu-img info gave unusable output ({e!r})') from e
        _check_supported(path, found)
        if specific.get('data-file'):
            raise exception.UnsupportedDisk(
                f'{path}: qcow2 images with an external data file are '
                f'refused')
        if vsize <= 0 or vsize > self.max_virtual_size:
            raise exception.UnsupportedDisk(
                f'{path}: virtual size {vsize} bytes is out of range '
                f'(max {self.max_virtual_size})')
        return info

    def _info_json(self, path: str, fmt: Optional[str]) -> Any:
        """Run ``qemu-img info`` under limits; a failure is a refusal."""
        try:
            out = self._run(
                'info', '--force-share', '--output=json',
                *(('-f', fmt) if fmt else ()), path)
        except exception.CommandFailed as e:
            code = getattr(e.__cause__, 'exit_code', None)
            if isinstance(code, int) and code < 0:
                raise exception.UnreadableImage(
                    f'{path}: qemu-img info was killed by signal {-code} '
                    f'({signal.strsignal(-code)}): inspecting the image '
                    f'exceeds the limits ({INFO_CPU_SECONDS} s of CPU, '
                    f'{INFO_ADDRESS_SPACE} bytes of memory)') from e
            raise exception.UnreadableImage(
                f'{path}: not readable as {fmt or "any image"}: {e}') from e
        try:
            return json.loads(out)
        except ValueError as e:
            raise exception.UnreadableImage(
                f'{path}: qemu-img info gave unusable output ({e})') from e

    def create(self, path: str, fmt: str, size: int) -> None:
        self._run('create', '-f', fmt, path, str(size))

    def create_overlay(self, path: str, backing: str, backing_fmt: str,
                       size: int) -> None:
        """A new qcow2 overlay of ``size`` bytes over ``backing``.

        Unsafe (``-u``): ``backing`` need not exist yet (an overlay resize
        stages the overlay over ``<uuid>_resize/disk`` before the source
        is renamed there), so qemu-img never opens it; the size is
        explicit instead of read from it, and the format is given, never
        probed.  Growing this way writes only the new header.
        """
        self._run('create', '-f', 'qcow2', '-u', '-F', backing_fmt,
                  '-b', backing, path, str(size))

    def resize(self, path: str, fmt: str, size: int) -> None:
        self._run('resize', '-f', fmt, path, str(size))

    def convert(self, src: str, dst: str, src_fmt: str, dst_fmt: str) -> None:
        """Convert into ``dst`` (which must not be the final path yet)."""
        self._run('convert', '-f', src_fmt, '-O', dst_fmt, src, dst,
                  size=self.transport.file_size(src))

    def rebase_unsafe(self, path: str, backing: str,
                      backing_fmt: str) -> None:
        """Point an overlay at a byte-identical backing file elsewhere."""
        self._run(*_rebase_unsafe_args(path, backing, backing_fmt))

    def rebase_unsafe_argv(self, path: str, backing: str,
                           backing_fmt: str) -> list[str]:
        """The command of :meth:`rebase_unsafe`, for a caller that runs it
        with others in one round trip (``Transport.copy_file``'s
        ``prepare``): a header rewrite, metadata only."""
        return self._argv(_rebase_unsafe_args(path, backing, backing_fmt))

    def commit(self, path: str, base: str, size: int) -> None:
        """Write what the qcow2 overlay ``path`` and every image between
        it and ``base`` hold into ``base`` (an image its chain must reach:
        the formats are those the headers record, never probed), leaving
        them all as they are (``-d``): idempotent until they are gone."""
        self._run('commit', '-f', 'qcow2', '-d', '-b', base, path, size=size)

    def commit_into_layer(self, path: str, layer: str,
                          backing: Optional[str], size: int) -> None:
        """Write the qcow2 ``path``'s data into the qcow2 ``layer`` below
        it.  The layer's header still names the other host's backing file
        (the finish rebases it), which need not exist here; ``backing``
        (this host's copy of it, raw, or None for a layer over nothing)
        is opened in its place.  It must be: where a cluster of the layer
        is larger than what the commit writes into it (larger clusters,
        or a part allocated in subclusters), QEMU fills the rest from
        below -- with zeros if nothing were there."""
        below: Optional[dict[str, Any]] = None
        if backing is not None:
            below = {'driver': 'raw', 'read-only': True,
                     'file': {'driver': 'file', 'filename': backing}}
        spec = {'driver': 'qcow2',
                'file': {'driver': 'file', 'filename': path},
                'backing': {'driver': 'qcow2',
                            'file': {'driver': 'file', 'filename': layer},
                            'backing': below}}
        self._run('commit', '-d', 'json:' + json.dumps(spec), size=size)

    def rebase_safe(self, path: str, backing: Optional[str],
                    backing_fmt: str, size: int) -> None:
        """Make the qcow2 ``path`` read the same data backed by ``backing``
        (None: by nothing), copying into it what the current chain holds
        above ``backing``: the offline twin of a block pull.  The current
        chain's formats are those its headers record (ours: never
        probed); ``size`` bounds how long it may take."""
        self._run('rebase', '-f', 'qcow2',
                  *(('-F', backing_fmt) if backing else ()),
                  '-b', backing or '', path, size=size)
