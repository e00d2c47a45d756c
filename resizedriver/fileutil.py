"""Crash-safe small files: what the record and the journal are made of."""

from __future__ import annotations

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


def write_atomic(path: str, text: str) -> None:
    """Replace ``path`` with ``text``: readers see the old or the new
    content, never a torn one (temp file, fsync, rename, fsync the dir)."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
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
