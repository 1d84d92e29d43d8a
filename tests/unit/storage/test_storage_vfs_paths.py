"""The vfs backend against a hostile kernel: links and special files planted in a folder.

A kernel sees its folder read-write and can put a symbolic link (to a folder
or a file outside), a FIFO or a socket anywhere in it, or swap a folder for a
link between two requests.  Every operation must refuse to go through them
and write, move, read or remove nothing outside the folder.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bai.common.storage_api import InvalidPath, StorageErrorType
from bai.storage.errors import StorageError
from bai.storage.volumes.vfs import VfsVolume

VFID = "0123456789abcdef0123456789abcdef"
SCOPE = "user:12345678-1234-1234-1234-123456789abc"
T = StorageErrorType


@pytest.fixture
async def volume(tmp_path: Path) -> AsyncIterator[VfsVolume]:
    vol = VfsVolume("v", tmp_path / "vol", scandir_limit=1000)
    await vol.open()
    await vol.create_folder(VFID, SCOPE, None)
    yield vol
    await vol.aclose()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    place = tmp_path / "outside"
    place.mkdir()
    (place / "secret.txt").write_text("secret")
    return place


def _snapshot(place: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(place)): (p.lstat().st_mode, p.lstat().st_size)
        for p in sorted(place.rglob("*"))
    }


async def _root(volume: VfsVolume) -> Path:
    return Path(await volume.mount_path(VFID))


@pytest.fixture
async def planted(volume: VfsVolume, outside: Path) -> Path:
    root = await _root(volume)
    (root / "dir").mkdir()
    (root / "dir" / "inner.txt").write_text("inner")
    os.symlink(outside, root / "link")
    os.symlink(outside / "secret.txt", root / "flink")
    os.mkfifo(root / "fifo")
    return root


def _refused(exc: pytest.ExceptionInfo[StorageError], *types: StorageErrorType) -> None:
    assert exc.value.error_type in (types or (T.INVALID_PATH,)), exc.value
    assert 400 <= exc.value.status < 500


async def test_mkdir_through_a_link_is_refused(
    volume: VfsVolume, planted: Path, outside: Path
) -> None:
    before = _snapshot(outside)
    for parents in (False, True):
        with pytest.raises(StorageError) as exc:
            await volume.mkdir(VFID, "link/x", parents=parents, exist_ok=False)
        _refused(exc)
        with pytest.raises(StorageError) as exc:
            await volume.mkdir(VFID, "link/deep/er", parents=parents, exist_ok=True)
        _refused(exc)
    with pytest.raises(StorageError) as exc:
        await volume.mkdir(VFID, "link", parents=False, exist_ok=True)
    _refused(exc, T.FILE_EXISTS)
    assert _snapshot(outside) == before


async def test_list_through_a_link_or_of_a_fifo_is_refused(
    volume: VfsVolume, planted: Path
) -> None:
    for relpath in ("link", "link/", "fifo", "flink", "./link"):
        with pytest.raises(StorageError) as exc:
            await volume.list_files(VFID, relpath)
        _refused(exc)
    with pytest.raises(InvalidPath):
        await volume.list_files(VFID, "dir/../link")


async def test_list_reports_links_as_links(volume: VfsVolume, planted: Path, outside: Path) -> None:
    items = {item["name"]: item for item in await volume.list_files(VFID, ".")}
    assert items["link"]["type"] == "SYMLINK"
    assert items["link"]["symlink_target"] == str(outside)
    assert items["flink"]["type"] == "SYMLINK"
    assert items["dir"]["type"] == "DIRECTORY"
    assert items["fifo"]["type"] == "FILE"
    assert stat.S_ISFIFO(items["fifo"]["stat"]["mode"])
    assert list(items) == sorted(items)


async def test_rename_and_move_never_cross_a_link(
    volume: VfsVolume, planted: Path, outside: Path
) -> None:
    before = _snapshot(outside)
    with pytest.raises(StorageError) as exc:
        await volume.rename(VFID, "link/secret.txt", "mine.txt")
    _refused(exc)
    with pytest.raises(StorageError) as exc:
        await volume.move(VFID, "link/secret.txt", "stolen.txt")
    _refused(exc)
    with pytest.raises(StorageError) as exc:
        await volume.move(VFID, "dir/inner.txt", "link/planted.txt")
    _refused(exc)
    # A link as the target is a name that exists: nothing is moved into what it points to.
    with pytest.raises(StorageError) as exc:
        await volume.move(VFID, "dir", "link")
    _refused(exc, T.FILE_EXISTS)
    # Renaming the link itself renames the link, not its target.
    await volume.rename(VFID, "flink", "renamed")
    assert os.readlink(planted / "renamed") == str(outside / "secret.txt")
    assert _snapshot(outside) == before
    assert (planted / "dir" / "inner.txt").read_text() == "inner"


async def test_rename_never_replaces(volume: VfsVolume, planted: Path) -> None:
    (planted / "a.txt").write_text("a")
    with pytest.raises(StorageError) as exc:
        await volume.rename(VFID, "a.txt", "dir")
    _refused(exc, T.FILE_EXISTS)
    for name in ("../escape", "..", "a/b", "x\x00"):
        with pytest.raises(InvalidPath):
            await volume.rename(VFID, "a.txt", name)
    with pytest.raises(StorageError) as exc:
        await volume.move(VFID, "a.txt", "dir/inner.txt")
    _refused(exc, T.FILE_EXISTS)
    assert (planted / "dir" / "inner.txt").read_text() == "inner"


async def test_delete_removes_links_not_their_targets(
    volume: VfsVolume, planted: Path, outside: Path
) -> None:
    before = _snapshot(outside)
    os.symlink(outside, planted / "dir" / "escape")
    with pytest.raises(StorageError) as exc:
        await volume.delete_files(VFID, ["link/secret.txt"], recursive=True)
    _refused(exc)
    await volume.delete_files(VFID, ["link", "flink", "fifo", "dir"], recursive=True)
    assert sorted(os.listdir(planted)) == []
    assert _snapshot(outside) == before


async def test_a_refused_delete_removes_nothing(volume: VfsVolume, planted: Path) -> None:
    (planted / "a.txt").write_text("a")
    with pytest.raises(StorageError) as exc:
        await volume.delete_files(VFID, ["a.txt", "dir"], recursive=False)
    _refused(exc, T.DIRECTORY_NOT_EMPTY)
    with pytest.raises(StorageError) as exc:
        await volume.delete_files(VFID, ["a.txt", "missing"], recursive=True)
    _refused(exc, T.FILE_NOT_FOUND)
    assert (planted / "a.txt").exists() and (planted / "dir" / "inner.txt").exists()


async def test_downloads_never_open_links_or_special_files(
    volume: VfsVolume, planted: Path
) -> None:
    for relpath in ("link/secret.txt", "flink", "fifo", "link"):
        with pytest.raises(StorageError) as exc:
            await volume.open_download(VFID, relpath)
        _refused(exc)
    fd, st = await volume.open_download(VFID, "dir/inner.txt")
    try:
        assert os.read(fd, 100) == b"inner" and st.st_size == 5
    finally:
        os.close(fd)


async def test_upload_through_a_link_is_refused_at_start_and_at_commit(
    volume: VfsVolume, planted: Path, outside: Path
) -> None:
    before = _snapshot(outside)
    with pytest.raises(StorageError) as exc:
        await volume.start_upload(VFID, "link/new.txt", 3, time.time() + 60)
    _refused(exc)
    # The kernel swaps a folder for a link after the token was made.
    (planted / "later").mkdir()
    session = await volume.start_upload(VFID, "later/new.txt", 3, time.time() + 60)
    (volume.uploads.staging / session).write_bytes(b"abc")
    (planted / "later").rmdir()
    os.symlink(outside, planted / "later")
    with pytest.raises(StorageError) as exc:
        await volume.finish_upload(session)
    _refused(exc)
    assert _snapshot(outside) == before
    # Once the link is gone again the same session completes where it should.
    (planted / "later").unlink()
    await volume.finish_upload(session)
    assert (planted / "later" / "new.txt").read_bytes() == b"abc"


async def test_usage_and_clone_do_not_follow_links(
    volume: VfsVolume, planted: Path, outside: Path
) -> None:
    (outside / "big").write_bytes(b"x" * 10000)
    usage = await volume.usage(VFID)
    assert usage["used_bytes"] == len("inner")
    clone = "f" * 32
    await volume.clone_folder(VFID, volume, clone, SCOPE)
    copy = Path(await volume.mount_path(clone))
    assert os.readlink(copy / "link") == str(outside)
    assert (copy / "dir" / "inner.txt").read_text() == "inner"
    assert not (copy / "fifo").exists()
    assert (await volume.usage(clone))["used_bytes"] == len("inner")


async def test_a_folder_swapped_for_a_link_is_not_a_folder_root(
    volume: VfsVolume, outside: Path
) -> None:
    root = await _root(volume)
    os.rename(root, root.with_name("moved"))
    os.symlink(outside, root)
    with pytest.raises(StorageError) as exc:
        await volume.list_files(VFID, ".")
    _refused(exc, T.FOLDER_NOT_FOUND)
