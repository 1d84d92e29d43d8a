"""The agent writes dotfiles into a kernel's scratch folder without following links,
and runs the owner's stored bootstrap script before the session's."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from bai.agent.dotfiles import DotfilesRefused, compose_bootstrap, install_dotfiles
from bai.common.agent_api import Dotfile

OWNER = (os.getuid(), os.getgid())


def test_files_get_their_mode_and_missing_folders_are_made(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "old").mkdir(mode=0o700)
    (scratch / ".bashrc").write_text("replaced")
    skipped = install_dotfiles(
        scratch,
        [
            Dotfile(path=".bashrc", mode=0o644, data="alias ll='ls -l'\n"),
            Dotfile(path="bin/hello", mode=0o755, data="#!/bin/sh\necho hi\n"),
            Dotfile(path="old/secret", mode=0o600, data="s"),
            Dotfile(path=".empty", mode=0o400, data=""),
        ],
        OWNER,
    )
    assert skipped == []
    assert (scratch / ".bashrc").read_text() == "alias ll='ls -l'\n"
    assert stat.S_IMODE((scratch / ".bashrc").stat().st_mode) == 0o644
    assert stat.S_IMODE((scratch / "bin/hello").stat().st_mode) == 0o755
    assert stat.S_IMODE((scratch / "bin").stat().st_mode) == 0o755
    # A folder that was there keeps its mode.
    assert stat.S_IMODE((scratch / "old").stat().st_mode) == 0o700
    assert stat.S_IMODE((scratch / "old/secret").stat().st_mode) == 0o600
    assert (scratch / ".empty").read_bytes() == b""
    # No staging files are left behind.
    assert not [p for p in scratch.rglob(".bai-*")]


def test_a_link_in_the_way_is_never_followed(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    outside = tmp_path / "outside"
    scratch.mkdir()
    outside.mkdir()
    (outside / "victim").write_text("keep")
    # A link where a folder goes: refused.
    (scratch / "conf").symlink_to(outside)
    with pytest.raises(DotfilesRefused, match="symbolic link"):
        install_dotfiles(scratch, [Dotfile(path="conf/victim", mode=0o644, data="x")], OWNER)
    assert (outside / "victim").read_text() == "keep"
    # A link where a file goes is refused too (and the target stays).
    (scratch / ".profile").symlink_to(outside / "victim")
    with pytest.raises(DotfilesRefused, match="symbolic link"):
        install_dotfiles(scratch, [Dotfile(path=".profile", mode=0o644, data="x")], OWNER)
    assert (outside / "victim").read_text() == "keep"
    # A FIFO where a file goes: refused without blocking on it.
    os.mkfifo(scratch / ".fifo")
    with pytest.raises(DotfilesRefused, match="FIFO"):
        install_dotfiles(scratch, [Dotfile(path=".fifo", mode=0o644, data="x")], OWNER)
    # A folder where a file goes, a file where a folder goes.
    (scratch / "dir").mkdir()
    (scratch / "file").write_text("")
    with pytest.raises(DotfilesRefused, match="folder"):
        install_dotfiles(scratch, [Dotfile(path="dir", mode=0o644, data="x")], OWNER)
    with pytest.raises(DotfilesRefused, match="regular file"):
        install_dotfiles(scratch, [Dotfile(path="file/x", mode=0o644, data="x")], OWNER)


def test_dotfiles_under_a_mounted_folder_are_left_out(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    skipped = install_dotfiles(
        scratch,
        [
            Dotfile(path="data/.keep", mode=0o644, data="x"),
            Dotfile(path="work", mode=0o644, data="x"),
            Dotfile(path=".bashrc", mode=0o644, data="x"),
        ],
        OWNER,
        ["/home/work/data", "/home/work/work", "/mnt/other"],
    )
    assert skipped == ["data/.keep", "work"]
    assert sorted(os.listdir(scratch)) == [".bashrc"]


def run_script(tmp_path: Path, script: str | None) -> subprocess.CompletedProcess[str]:
    assert script is not None
    path = tmp_path / "bootstrap.sh"
    path.write_text(script)
    return subprocess.run(
        ["/bin/sh", str(path)], cwd=tmp_path, capture_output=True, text=True, check=False
    )


def test_the_owners_script_runs_first_and_a_failure_stops_there(tmp_path: Path) -> None:
    assert compose_bootstrap(None, None) is None
    assert compose_bootstrap("", "echo s") == "echo s"
    assert compose_bootstrap("echo u", None) == "echo u"
    both = compose_bootstrap("echo user; echo 'quoted $HOME \"x\"'; exit 0", "echo session")
    done = run_script(tmp_path, both)
    assert done.returncode == 0
    assert done.stdout == 'user\nquoted $HOME "x"\nsession\n'
    failed = run_script(tmp_path, compose_bootstrap("echo user; exit 3", "echo session"))
    assert failed.returncode == 3 and failed.stdout == "user\n"
