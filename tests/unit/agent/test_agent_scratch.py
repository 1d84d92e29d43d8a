"""File operations in a scratch directory never leave it, and never block (bai.agent.files)."""

from __future__ import annotations

import functools
import io
import json
import os
import socket
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from bai.agent.files import (
    FileTooLarge,
    KernelFileError,
    download,
    list_files,
    write_files,
)
from bai.common.scratch_paths import ScratchPathError, split_path, split_upload_paths


def write_file(scratch: Path, path: str, data: bytes, *, max_size: int) -> int:
    (written,) = write_files(scratch, [(path, data)], max_size=max_size)
    size: int = written["size"]
    return size


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


def test_a_name_longer_than_the_file_system_allows_is_refused_naming_the_field() -> None:
    assert split_path("d/" + "é" * 127) == ["d", "é" * 127]  # 254 bytes
    with pytest.raises(ScratchPathError) as info:
        split_path("d/" + "x" * 256, field="file")
    assert info.value.field == "file"
    assert str(info.value).startswith("file: a file or folder name is at most 255 bytes (got 'd/x")


def test_an_upload_cannot_need_one_of_its_files_as_a_folder() -> None:
    assert split_upload_paths(["a/b", "a/c", "/home/work/d"]) == [["a", "b"], ["a", "c"], ["d"]]
    with pytest.raises(ScratchPathError, match="is a folder of another file") as info:
        split_upload_paths(["a/b/c", "./a/b"], field="files")
    assert info.value.field == "files" and info.value.value == "./a/b"


def specials(scratch: Path) -> dict[str, str]:
    """A FIFO, a socket and links to a file and a folder outside, by name: their kinds."""
    os.mkfifo(scratch / "fifo")
    bound = socket.socket(socket.AF_UNIX)
    bound.bind(str(scratch / "sock"))
    bound.close()
    os.symlink("/etc/passwd", scratch / "file-link")
    os.symlink("/etc", scratch / "dir-link")
    return {
        "fifo": "a FIFO",
        "sock": "a socket",
        "file-link": "a symbolic link",
        "dir-link": "a symbolic link",
    }


async def within_seconds(operation: Callable[[], Any]) -> Any:
    """Run blocking *operation*, failing the test instead of hanging if it blocks."""
    with trio.fail_after(5):
        return await trio.to_thread.run_sync(operation, abandon_on_cancel=True)


async def test_special_files_are_refused_on_every_operation_without_blocking(
    tmp_path: Path,
) -> None:
    kinds = specials(tmp_path)
    for name, kind in kinds.items():
        for operation in (
            functools.partial(write_file, tmp_path, name, b"x", max_size=10),
            functools.partial(write_file, tmp_path, f"{name}/child", b"x", max_size=10),
            functools.partial(download, tmp_path, name, max_size=100),
            functools.partial(download, tmp_path, f"{name}/passwd", max_size=100),
            functools.partial(list_files, tmp_path, name),
        ):
            with pytest.raises(ScratchPathError, match=f"'{name}' is {kind}") as info:
                await within_seconds(operation)
            assert info.value.field == "path"
    assert os.readlink(tmp_path / "file-link") == "/etc/passwd"
    # Listed as what they are; inside a downloaded folder links stay links, the rest is skipped.
    modes = {e["filename"]: e["mode"][0] for e in json.loads(list_files(tmp_path, ".")["files"])}
    assert modes == {"fifo": "p", "sock": "s", "file-link": "l", "dir-link": "l"}
    (tmp_path / "plain.txt").write_text("plain")
    archive = await within_seconds(lambda: download(tmp_path.parent, tmp_path.name, max_size=10**4))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = {m.name.split("/", 1)[-1]: m for m in tar.getmembers()[1:]}
    assert sorted(members) == ["dir-link", "file-link", "plain.txt"]
    assert members["file-link"].issym() and members["plain.txt"].isfile()


async def test_a_fifo_with_a_reader_is_not_written_either(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    reader = os.open(tmp_path / "fifo", os.O_RDONLY | os.O_NONBLOCK)
    try:
        with pytest.raises(ScratchPathError, match="'fifo' is a FIFO"):
            await within_seconds(lambda: write_file(tmp_path, "fifo", b"x", max_size=10))
        assert os.read(reader, 10) == b""
    finally:
        os.close(reader)


def test_a_refused_upload_writes_nothing(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "kept.txt").write_text("before")
    for files in (
        [("new/dir/good.txt", b"good"), ("kept.txt", b"after"), ("fifo", b"x")],
        [("new/dir/good.txt", b"good"), ("kept.txt", b"after"), ("../bad", b"x")],
        [("new/dir/good.txt", b"good"), ("kept.txt", b"after"), ("big", b"x" * 11)],
    ):
        with pytest.raises((ScratchPathError, FileTooLarge)):
            write_files(tmp_path, files, max_size=10)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "kept.txt"]
        assert (tmp_path / "kept.txt").read_text() == "before"


def test_an_upload_abandoned_before_it_commits_writes_nothing(tmp_path: Path) -> None:
    class Abandoned(Exception):
        pass

    def abandon() -> None:
        raise Abandoned

    with pytest.raises(Abandoned):
        write_files(
            tmp_path, [("a/b.txt", b"b"), ("c.txt", b"c")], max_size=10, before_commit=abandon
        )
    assert list(tmp_path.iterdir()) == []


def test_an_upload_writes_every_file_and_keeps_permissions(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("old")
    (tmp_path / "run.sh").chmod(0o755)
    written = write_files(tmp_path, [("run.sh", b"new"), ("/home/work/d/e.txt", b"e")], max_size=10)
    assert written == [
        {"path": "/home/work/run.sh", "size": 3},
        {"path": "/home/work/d/e.txt", "size": 1},
    ]
    assert (tmp_path / "run.sh").read_bytes() == b"new"
    assert (tmp_path / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "d/e.txt").read_bytes() == b"e"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "run.sh"]
