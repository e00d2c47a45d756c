"""Crash-safe small files: what the record and the journal are made of."""

from __future__ import annotations

import contextlib
import os


def fsync_dir(path: str) -> None:
    """Make a rename or unlink in ``path`` survive a power cut."""
    fsync_file(path, os.O_DIRECTORY)


def fsync_file(path: str, flags: int = 0) -> None:
    """Make what was written to ``path`` survive a power cut."""
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename_durably(src: str, dst: str) -> None:
    """Rename and make the rename survive a power cut: a rename lives in
    the directories of both names, so those are fsynced before anyone
    relies on the new name (a resize record, a deleted source)."""
    os.rename(src, dst)
    for directory in {os.path.dirname(src), os.path.dirname(dst)}:
        fsync_dir(directory or '.')


#: who may read a file holding a domain's definition with its secrets
#: (VNC and SPICE passwords: libvirt's SECURE XML): its owner only
PRIVATE = 0o600


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text``: readers see the old or the new
    content, never a torn one (temp file, fsync, rename, fsync the dir).
    The file has ``mode`` from its first byte on, and the owner of its
    directory when root writes it (an operator's ``resizedriver recover``
    must leave files nova-compute can still read)."""
    tmp = path + '.tmp'
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)          # a crash's leftover, never followed
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                 mode)
    os.fchmod(fd, mode)         # whatever the umask
    owner = os.stat(os.path.dirname(path) or '.')
    if os.geteuid() == 0 and (owner.st_uid, owner.st_gid) != (0, 0):
        os.fchown(fd, owner.st_uid, owner.st_gid)
    with os.fdopen(fd, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)
    fsync_dir(os.path.dirname(path) or '.')


def remove_durably(path: str) -> None:
    """Unlink ``path`` (if there) and make that survive a power cut."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    fsync_dir(os.path.dirname(path) or '.')
