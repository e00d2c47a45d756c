"""Small files that hold secrets: who may read them."""

from __future__ import annotations

import os

from resizedriver import fileutil


def test_a_private_file_is_its_directorys_owners_only(tmp_path):
    """0600, owned like its directory (nova's instances path) even when
    root writes it; a leftover temp symlink is replaced, not followed."""
    target = tmp_path / 'elsewhere'
    target.write_text('not ours')
    target.chmod(0o644)
    os.chown(tmp_path, 4321, 4321)
    path = tmp_path / 'journal.json'
    os.symlink(target, str(path) + '.tmp')
    fileutil.write_atomic(str(path), '{}', fileutil.PRIVATE)
    st = os.stat(path)
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o600, 4321, 4321)
    assert target.read_text() == 'not ours'
    assert os.stat(target).st_mode & 0o777 == 0o644
