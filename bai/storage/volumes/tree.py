"""What the proxy does inside one folder: mkdir, list, rename, move, delete, usage, copy.

Each function takes a descriptor of the folder's root and relpaths, walks
them with :mod:`bai.storage.volumes.walk` (no link is ever followed, no
special file opened) and acts on the last component relative to its parent's
descriptor.  Guarantees, beyond the walk's:

* a request that is refused changes nothing: every check that can fail
  (paths, types, emptiness) runs before the first change;
* nothing is ever replaced by a rename or a move (``RENAME_NOREPLACE``);
* :func:`copy_tree` copies regular files, folders and links (as links), and
  skips sockets, FIFOs and devices, which have no content to copy.

Every function is blocking: call it through ``trio.to_thread``.
"""

from __future__ import annotations

import os
import shutil
import stat
from datetime import UTC, datetime
from typing import Final

from bai.common.safe_fs import DIR_FLAGS, lstat_at, open_plain
from bai.common.storage_api import (
    DirEntry,
    StorageErrorType,
    check_file_name,
)
from bai.storage.errors import StorageError, os_error
from bai.storage.volumes.walk import (
    Owner,
    chown_fd,
    open_dir,
    opened,
    rename_noreplace,
    split_relpath,
)

__all__ = [
    "Usage",
    "copy_tree",
    "delete",
    "list_dir",
    "make_dir",
    "move",
    "remove_tree",
    "rename",
    "scan_usage",
]

_COPY_CHUNK: Final = 4 * 1024 * 1024


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def make_dir(
    root_fd: int,
    relpath: str,
    *,
    parents: bool = False,
    exist_ok: bool = False,
    owner: Owner = None,
) -> None:
    """Create folder *relpath* (its parents too with *parents*); FileExists unless *exist_ok*."""
    parts = split_relpath(relpath, allow_root=False)
    with opened(
        open_dir(root_fd, parts[:-1], relpath=relpath, create=parents, owner=owner)
    ) as parent:
        name = parts[-1]
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            st = lstat_at(name, parent)
            if exist_ok and st is not None and stat.S_ISDIR(st.st_mode):
                return
            raise StorageError(
                StorageErrorType.FILE_EXISTS, f"{relpath}: already exists", field="relpath"
            ) from None
        except OSError as exc:
            raise os_error(exc, relpath) from None
        if owner is not None:
            with opened(os.open(name, DIR_FLAGS, dir_fd=parent)) as fd:
                chown_fd(fd, owner)


def _entry(name: str, st: os.stat_result, dir_fd: int) -> DirEntry:
    if stat.S_ISDIR(st.st_mode):
        kind = "DIRECTORY"
    elif stat.S_ISLNK(st.st_mode):
        kind = "SYMLINK"
    else:
        kind = "FILE"
    target = ""
    if kind == "SYMLINK":
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except OSError:
            target = ""
    return {
        "name": name,
        "type": kind,  # type: ignore[typeddict-item]
        "stat": {
            "size": st.st_size,
            "mode": st.st_mode,
            "created": _iso(st.st_ctime),
            "modified": _iso(st.st_mtime),
        },
        "symlink_target": target,
    }


def list_dir(root_fd: int, relpath: str, *, limit: int) -> list[DirEntry]:
    """At most *limit* entries of folder *relpath*, sorted by name; links reported, not followed.

    The first *limit* entries the file system yields are the ones sorted and
    answered: a folder larger than that is listed in part.
    """
    parts = split_relpath(relpath)
    items: list[DirEntry] = []
    with opened(open_dir(root_fd, parts, relpath=relpath)) as fd, os.scandir(fd) as entries:
        for entry in entries:
            if len(items) >= limit:
                break
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while listed
            items.append(_entry(entry.name, st, fd))
    items.sort(key=lambda item: item["name"])
    return items


def rename(root_fd: int, relpath: str, new_name: str) -> None:
    """Give *relpath* the name *new_name* in the same folder; FileExists if that name is taken."""
    parts = split_relpath(relpath, allow_root=False)
    check_file_name(new_name)
    with opened(open_dir(root_fd, parts[:-1], relpath=relpath)) as parent:
        if lstat_at(parts[-1], parent) is None:
            raise StorageError(
                StorageErrorType.FILE_NOT_FOUND, f"{relpath}: no such file or folder"
            )
        try:
            rename_noreplace(parts[-1], new_name, src_dir_fd=parent, dst_dir_fd=parent)
        except FileExistsError:
            raise StorageError(
                StorageErrorType.FILE_EXISTS, f"{new_name!r} already exists", field="new_name"
            ) from None
        except OSError as exc:
            raise os_error(exc, relpath) from None


def move(root_fd: int, src_relpath: str, dst_relpath: str) -> None:
    """Move *src_relpath* to *dst_relpath*, or into it when that is an existing folder.

    The target's parent must exist; an existing target is never replaced
    (FileExists); a folder cannot be moved into itself (InvalidPath).
    """
    src = split_relpath(src_relpath, field="src_relpath", allow_root=False)
    dst = split_relpath(dst_relpath, field="dst_relpath")
    with opened(open_dir(root_fd, src[:-1], relpath=src_relpath, field="src_relpath")) as sparent:
        if lstat_at(src[-1], sparent) is None:
            raise StorageError(
                StorageErrorType.FILE_NOT_FOUND,
                f"{src_relpath}: no such file or folder",
                field="src_relpath",
            )
        into: int | None = None
        if dst:
            with opened(
                open_dir(root_fd, dst[:-1], relpath=dst_relpath, field="dst_relpath")
            ) as dparent:
                st = lstat_at(dst[-1], dparent)
                if st is not None and stat.S_ISDIR(st.st_mode):
                    into = open_dir(dparent, [dst[-1]], relpath=dst_relpath, field="dst_relpath")
                    target = src[-1]
                else:
                    into = os.dup(dparent)
                    target = dst[-1]
        else:
            into = os.dup(root_fd)
            target = src[-1]
        with opened(into):
            try:
                rename_noreplace(src[-1], target, src_dir_fd=sparent, dst_dir_fd=into)
            except OSError as exc:
                raise os_error(exc, dst_relpath, field="dst_relpath") from None


def _empty(parent: int, name: str, relpath: str, field: str) -> bool:
    with opened(open_dir(parent, [name], relpath=relpath, field=field)) as fd, os.scandir(fd) as it:
        return next(it, None) is None


def delete(root_fd: int, relpaths: list[str], *, recursive: bool = False) -> list[str]:
    """Remove every file, link or folder of *relpaths*; answers the relpaths of removed folders.

    All of them are checked first: a missing one is FileNotFound and a
    non-empty folder without *recursive* is DirectoryNotEmpty, and then
    nothing is removed.  A link is removed itself, never what it points to.
    """
    checked: list[tuple[str, list[str]]] = []
    for index, relpath in enumerate(relpaths):
        field = f"relpaths[{index}]"
        parts = split_relpath(relpath, field=field, allow_root=False)
        with opened(open_dir(root_fd, parts[:-1], relpath=relpath, field=field)) as parent:
            st = lstat_at(parts[-1], parent)
            if st is None:
                raise StorageError(
                    StorageErrorType.FILE_NOT_FOUND,
                    f"{relpath}: no such file or folder",
                    field=field,
                )
            if (
                stat.S_ISDIR(st.st_mode)
                and not recursive
                and not _empty(parent, parts[-1], relpath, field)
            ):
                raise StorageError(
                    StorageErrorType.DIRECTORY_NOT_EMPTY,
                    f"{relpath}: the folder is not empty (delete it recursively)",
                    field=field,
                )
        checked.append((relpath, parts))
    folders: list[str] = []
    for relpath, parts in checked:
        try:
            with opened(open_dir(root_fd, parts[:-1], relpath=relpath)) as parent:
                st = lstat_at(parts[-1], parent)
                if st is None:
                    continue  # inside a folder removed before it in the same request
                if stat.S_ISDIR(st.st_mode):
                    remove_tree(parent, parts[-1])
                    folders.append(relpath)
                else:
                    os.unlink(parts[-1], dir_fd=parent)
        except StorageError as exc:
            if exc.error_type is StorageErrorType.FILE_NOT_FOUND:
                continue
            raise
    return folders


def remove_tree(dir_fd: int, name: str) -> None:
    """Remove folder *name* of *dir_fd* and everything in it, following no link."""
    # shutil.rmtree with dir_fd works on descriptors and checks each folder it
    # enters is the one it listed, so a link swapped in is removed, not followed.
    shutil.rmtree(name, dir_fd=dir_fd)


class Usage:
    """What a folder holds: entries below its root (files, folders, links) and bytes of files."""

    __slots__ = ("file_count", "used_bytes")

    def __init__(self, file_count: int = 0, used_bytes: int = 0) -> None:
        self.file_count = file_count
        self.used_bytes = used_bytes


def _scan(fd: int, usage: Usage) -> None:
    with os.scandir(fd) as entries:
        names: list[str] = []
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            usage.file_count += 1
            if stat.S_ISREG(st.st_mode):
                usage.used_bytes += st.st_size
            elif stat.S_ISDIR(st.st_mode):
                names.append(entry.name)
    for name in names:
        try:
            inner = os.open(name, DIR_FLAGS, dir_fd=fd)
        except OSError:
            continue  # removed or swapped for a link meanwhile: not counted
        with opened(inner):
            _scan(inner, usage)


def scan_usage(root_fd: int) -> Usage:
    """Count what the folder at *root_fd* holds now (links are counted, not followed)."""
    usage = Usage()
    _scan(root_fd, usage)
    return usage


def _copy_file(src_fd: int, dst_fd: int) -> None:
    offset = 0
    while True:
        sent = os.copy_file_range(src_fd, dst_fd, _COPY_CHUNK, offset, offset)
        if sent == 0:
            return
        offset += sent


def copy_tree(src_fd: int, dst_fd: int, owner: Owner = None) -> None:
    """Copy the contents of folder *src_fd* into the empty folder *dst_fd*.

    Regular files keep their mode and times, folders their mode, links their
    target (copied as links, not followed); special files are skipped.
    """
    with os.scandir(src_fd) as entries:
        names = [entry.name for entry in entries]
    for name in names:
        st = lstat_at(name, src_fd)
        if st is None:
            continue
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=src_fd), name, dir_fd=dst_fd)
            if owner is not None:
                os.chown(name, *owner, dir_fd=dst_fd, follow_symlinks=False)
            continue
        opened_src = open_plain(name, src_fd)
        if opened_src is None:
            continue
        sfd, sst = opened_src
        with opened(sfd):
            mode = stat.S_IMODE(sst.st_mode)
            if stat.S_ISDIR(sst.st_mode):
                os.mkdir(name, 0o700, dir_fd=dst_fd)
                with opened(os.open(name, DIR_FLAGS, dir_fd=dst_fd)) as dfd:
                    copy_tree(sfd, dfd, owner)
                    os.fchmod(dfd, mode)
                    chown_fd(dfd, owner)
                continue
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with opened(os.open(name, flags, 0o600, dir_fd=dst_fd)) as dfd:
                _copy_file(sfd, dfd)
                os.fchmod(dfd, mode)
                chown_fd(dfd, owner)
                os.utime(dfd, ns=(sst.st_atime_ns, sst.st_mtime_ns))
