"""Hostile disk images, each built from scratch in a test's tmp directory.

Every builder models one attack from the guest, or from a compromised
host sending us an instance, and its docstring says which.  They are made
with ``qemu-img create -u`` (which never opens the backing file it names)
and plain byte writes, so building one never touches the file it points
at: tests point them at a FIFO and prove nobody opened it for reading.
"""

from __future__ import annotations

import os
import struct
import subprocess

MiB = 1024 * 1024

# qcow2 header fields: (offset, struct format), see QEMU docs/interop/qcow2.txt
SIZE = (24, '>Q')
L1_SIZE = (36, '>I')
REFCOUNT_TABLE_CLUSTERS = (56, '>I')
NB_SNAPSHOTS = (60, '>I')
SNAPSHOTS_OFFSET = (64, '>Q')


def _qemu_img(*args: str) -> None:
    subprocess.run(['qemu-img', *args], check=True,
                   stdout=subprocess.DEVNULL)


def _qcow2(path: str, fields: dict[tuple[int, str], int]) -> str:
    """A 1 MiB qcow2 made by qemu-img, then header fields overwritten."""
    _qemu_img('create', '-q', '-f', 'qcow2', path, str(MiB))
    with open(path, 'r+b') as f:
        for (offset, fmt), value in fields.items():
            f.seek(offset)
            f.write(struct.pack(fmt, value))
    return path


def overlay(path: str, backing: str, backing_fmt: str = 'raw',
            size: int = 8 * MiB) -> str:
    """A qcow2 overlay whose header names ``backing`` verbatim.

    Models a disk whose backing file is meant to pull a host file into
    the guest: an absolute path elsewhere, ``../`` out of the instance
    directory, a ``json:`` pseudo-filename, or a symlink in ``_base``.
    """
    _qemu_img('create', '-q', '-f', 'qcow2', '-u', '-F', backing_fmt,
              '-b', backing, path, str(size))
    return path


def qcow2_header_in_raw(path: str, backing: str,
                        size: int = 4 * MiB) -> str:
    """A raw disk whose first bytes are a qcow2 header backed by
    ``backing``.

    Models a guest writing a qcow2 header onto its own raw disk
    (OSSA-2015-014, CVE-2024-32498): if anything lets qemu-img guess the
    format, the host reads ``backing`` (say /etc/shadow) into the guest.
    These bytes are guest data and must stay raw.
    """
    overlay(path, backing)
    os.truncate(path, size)
    return path


def qcow2_data_file(path: str, target: str) -> str:
    """A qcow2 whose guest data lives in the external file ``target``.

    Models CVE-2024-32498: the data file (set here with ``amend``, which
    does not open it) makes the host read or write ``target`` as the
    guest's disk.
    """
    placeholder = path + '.data'
    _qemu_img('create', '-q', '-f', 'qcow2', '-o',
              f'data_file={placeholder}', path, str(MiB))
    _qemu_img('amend', '-q', '-f', 'qcow2', '-o', f'data_file={target}',
              path)
    os.unlink(placeholder)
    return path


def vmdk_extent(path: str, target: str) -> str:
    """A VMDK descriptor whose flat extent is ``target``.

    Models the VMDK flavour of CVE-2024-32498: opened as vmdk, QEMU reads
    the extent, any host file, as the guest's disk.
    """
    with open(path, 'w') as f:
        f.write('# Disk DescriptorFile\nversion=1\nCID=fffffffe\n'
                'parentCID=ffffffff\ncreateType="monolithicFlat"\n\n'
                f'RW 2048 FLAT "{target}" 0\n\n'
                'ddb.adapterType = "ide"\n')
    return path


def absurd_size_qcow2(path: str) -> str:
    """A small qcow2 claiming a 1 PiB virtual size (L1 table to match).

    Models a disk meant to exhaust the destination's space on convert or
    extend, or to overflow size arithmetic.
    """
    return _qcow2(path, {SIZE: 2 ** 50, L1_SIZE: 2 ** 21})


def huge_l1_qcow2(path: str) -> str:
    """A qcow2 whose header announces 2^31 L1 entries (16 GiB).

    Models memory exhaustion of the host process that opens it.
    """
    return _qcow2(path, {L1_SIZE: 0x7fffffff})


def huge_refcount_table_qcow2(path: str) -> str:
    """A qcow2 whose refcount table claims 2^32 - 1 clusters.

    Models memory exhaustion through the refcount table.
    """
    return _qcow2(path, {REFCOUNT_TABLE_CLUSTERS: 0xffffffff})


def snapshot_bomb_qcow2(path: str) -> str:
    """A 200 KiB qcow2 announcing 65536 internal snapshots.

    Models a cheap file that costs ``qemu-img info`` seconds of CPU and
    hundreds of MiB (14 MB of JSON): only the resource limits bound it.
    """
    return _qcow2(path, {NB_SNAPSHOTS: 65536, SNAPSHOTS_OFFSET: 0x50000})


def truncated_qcow2(path: str) -> str:
    """Only a qcow2 magic and version: a header qemu-img cannot parse.

    Models a malformed image that must fail inspection cleanly.
    """
    with open(path, 'wb') as f:
        f.write(b'QFI\xfb\x00\x00\x00\x03')
    return path


def fifo(path: str) -> str:
    """A FIFO: opening it for reading blocks until a writer comes.

    Stands for a host file that must never be read (/etc/shadow).  If
    anything opens it the open hangs, which a test with a timeout sees;
    put in place of a disk it models a file that hangs whoever reads it.
    """
    os.mkfifo(path)
    return path
