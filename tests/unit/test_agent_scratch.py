"""File operations in a scratch directory never leave it (bai.agent.files)."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from bai.agent.files import (
    FileTooLarge,
    KernelFileError,
    ScratchPathError,
    download,
    list_files,
    split_path,
    write_file,
)


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("a/b.txt", ["a", "b.txt"]),
        ("./a//b.txt", ["a", "b.txt"]),
        ("/home/work/a", ["a"]),
        ("/home/work/", []),
        ("/home/work", []),
        (".", []),
    ],
)
def test_paths_inside_home_work(path: str, parts: list[str]) -> None:
    assert split_path(path, allow_root=True) == parts


@pytest.mark.parametrize(
    "path", ["..", "a/../../b", "/etc/passwd", "/home/worker/x", "/home", "a\x00", "x" * 5000, 3]
)
def test_paths_leaving_home_work(path: object) -> None:
    with pytest.raises(ScratchPathError):
        split_path(path, allow_root=True)


def test_the_root_itself_names_no_file() -> None:
    with pytest.raises(ScratchPathError, match="names no file"):
        split_path("/home/work")


def test_write_list_download(tmp_path: Path) -> None:
    assert write_file(tmp_path, "deep/er/f.txt", b"hello", max_size=100) == 5
    write_file(tmp_path, "deep/er/f.txt", b"hi", max_size=100)  # overwritten
    assert (tmp_path / "deep/er/f.txt").read_bytes() == b"hi"
    listing = list_files(tmp_path, "deep")
    assert listing["abspath"] == "/home/work/deep"
    (entry,) = json.loads(listing["files"])
    assert entry["filename"] == "er" and entry["mode"].startswith("d")
    archive = download(tmp_path, "/home/work/deep/er/f.txt", max_size=10_000)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.extractfile("f.txt")
        assert member is not None and member.read() == b"hi"


def test_symbolic_links_are_never_followed(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    outside = tmp_path / "outside"
    scratch.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("secret")
    os.symlink(outside, scratch / "dir-link")
    os.symlink(outside / "secret", scratch / "file-link")
    with pytest.raises(ScratchPathError):
        write_file(scratch, "dir-link/new", b"x", max_size=10)
    with pytest.raises(ScratchPathError):
        write_file(scratch, "file-link", b"x", max_size=10)
    with pytest.raises(ScratchPathError):
        list_files(scratch, "dir-link")
    with pytest.raises(ScratchPathError):
        download(scratch, "dir-link/secret", max_size=100)
    assert (outside / "secret").read_text() == "secret"
    assert not (outside / "new").exists()
    # Inside a downloaded folder a link stays a link.
    archive = download(tmp_path, "scratch", max_size=10_000)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert tar.getmember("scratch/file-link").issym()
        assert tar.getmember("scratch/dir-link").issym()


def test_limits_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileTooLarge):
        write_file(tmp_path, "big", b"x" * 11, max_size=10)
    assert not (tmp_path / "big").exists()
    (tmp_path / "large").write_bytes(b"y" * 5000)
    with pytest.raises(FileTooLarge):
        download(tmp_path, "large", max_size=1000)
    with pytest.raises(KernelFileError, match="no such file"):
        download(tmp_path, "absent", max_size=1000)
    (tmp_path / "plain").write_text("x")
    with pytest.raises(KernelFileError, match="not a folder"):
        list_files(tmp_path, "plain")
    with pytest.raises(KernelFileError, match="not a folder"):
        write_file(tmp_path, "plain/child", b"x", max_size=10)
