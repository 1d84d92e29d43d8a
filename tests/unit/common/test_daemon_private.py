"""Private folders and files of a daemon: 0700 and 0600, owned by the daemon's user."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bai.common.daemon import private_dir, private_file


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_missing_folder_is_made_private(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "data"
    private_dir(folder)
    assert _mode(folder) == 0o700


def test_an_earlier_runs_loose_folder_and_files_are_tightened(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    (folder / "client.env").write_text("export BACKEND_SECRET_KEY=s\n")
    (folder / "client.env").chmod(0o644)
    sub = folder / "scratches"
    sub.mkdir(mode=0o755)
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    outside.chmod(0o644)
    (folder / "link").symlink_to(outside)
    private_dir(folder)
    assert _mode(folder) == 0o700
    assert _mode(folder / "client.env") == 0o600
    assert (folder / "client.env").read_text() == "export BACKEND_SECRET_KEY=s\n"
    # Subfolders (kernels' scratch folders) and what links point to are not the daemon's secrets.
    assert _mode(sub) == 0o755
    assert _mode(outside) == 0o644


def test_a_shared_folder_is_refused_and_left_alone(tmp_path: Path) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(PermissionError, match="one of its own"):
        private_dir(shared)
    assert _mode(shared) == 0o1777


def test_a_file_is_created_private_or_tightened(tmp_path: Path) -> None:
    new = tmp_path / "manager.sqlite3"
    private_file(new)
    assert _mode(new) == 0o600 and new.read_bytes() == b""
    old = tmp_path / "old.sqlite3"
    old.write_bytes(b"SQLite format 3\0")
    old.chmod(0o644)
    private_file(old)
    assert _mode(old) == 0o600 and old.read_bytes() == b"SQLite format 3\0"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can take files over")
def test_files_of_another_user_are_taken_over(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "manager.sqlite3").write_bytes(b"")
    for path in (folder, folder / "manager.sqlite3"):
        os.chown(path, 65534, 65534)
    private_dir(folder)
    for path in (folder, folder / "manager.sqlite3"):
        assert (path.stat().st_uid, path.stat().st_gid) == (os.geteuid(), os.getegid())
