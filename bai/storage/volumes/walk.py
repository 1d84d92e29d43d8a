"""Walking a path inside a folder without ever following a link a kernel planted.

A folder is mounted read-write into kernels, so anything in it may be a
symbolic link, a FIFO or a device, swapped in at any moment.  Every function
here resolves a relpath one component at a time from a descriptor of the
folder's root (``openat`` with ``O_NOFOLLOW | O_DIRECTORY``, see
:mod:`bai.common.safe_fs`): a link or a special file on the way is refused
with a :class:`~bai.storage.errors.StorageError`, never followed, so nothing
outside the folder is ever read, written, renamed or removed.  The last
component of a path is left to the caller, who acts on it relative to the
parent's descriptor (``unlinkat``, ``renameat``, ``mkdirat``), which again
never follows a link.

Every function is blocking (call it through ``trio.to_thread``) and every
descriptor it returns is the caller's to close.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Final

from bai.common.safe_fs import DIR_FLAGS, kind_of, lstat_at
from bai.common.storage_api import StorageErrorType, check_relpath
from bai.storage.errors import StorageError

__all__ = [
    "Owner",
    "chown_fd",
    "close_quietly",
    "folder_parts",
    "open_dir",
    "open_root",
    "opened",
    "rename_noreplace",
    "split_relpath",
]

#: The uid and gid everything the proxy creates is given (-1: keep), or None to leave it.
Owner = tuple[int, int] | None

_RENAME_NOREPLACE: Final = 1


def split_relpath(relpath: str, *, field: str = "relpath", allow_root: bool = True) -> list[str]:
    """The components of *relpath* (``[]`` for the folder itself); InvalidPath otherwise."""
    normal = check_relpath(relpath, field=field, allow_root=allow_root)
    return [] if normal == "." else normal.split("/")


def folder_parts(vfid: str) -> tuple[str, str, str]:
    """Where folder *vfid* lives in its volume: ``vfid[0:2]/vfid[2:4]/vfid[4:]``."""
    return vfid[0:2], vfid[2:4], vfid[4:]


def close_quietly(fd: int) -> None:
    """Close *fd*, ignoring errors (used on the way out of a failed operation)."""
    with suppress(OSError):
        os.close(fd)


@contextmanager
def opened(fd: int) -> Iterator[int]:
    """Close *fd* when the block ends."""
    try:
        yield fd
    finally:
        close_quietly(fd)


def chown_fd(fd: int, owner: Owner) -> None:
    """Give what *fd* refers to to *owner* (no-op for None)."""
    if owner is not None:
        os.fchown(fd, *owner)


def _refuse(relpath: str, name: str, mode: int, field: str) -> StorageError:
    if stat.S_ISREG(mode):
        return StorageError(
            StorageErrorType.NOT_A_DIRECTORY, f"{relpath}: {name!r} is not a folder", field=field
        )
    return StorageError(
        StorageErrorType.INVALID_PATH,
        f"{relpath}: {name!r} is {kind_of(mode)}; links and special files are not followed",
        field=field,
    )


def enter(
    dir_fd: int,
    name: str,
    *,
    relpath: str,
    field: str = "relpath",
    create: bool = False,
    owner: Owner = None,
) -> int:
    """A new descriptor of folder *name* in *dir_fd*, created (mode 0755) when *create* is set.

    Raises FileNotFound, NotADirectory or InvalidPath (a link or special
    file) as :class:`StorageError` naming *relpath* and *field*.
    """
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise StorageError(
                StorageErrorType.FILE_NOT_FOUND, f"{relpath}: {name!r} does not exist", field=field
            ) from None
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            st = lstat_at(name, dir_fd)
            if st is not None:
                raise _refuse(relpath, name, st.st_mode, field) from None
        raise
    # Made meanwhile by someone else: it is opened (and judged) below like any other.
    with suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=dir_fd)
    fd = enter(dir_fd, name, relpath=relpath, field=field)
    if owner is not None:
        chown_fd(fd, owner)
    return fd


def open_dir(
    root_fd: int,
    parts: list[str],
    *,
    relpath: str,
    field: str = "relpath",
    create: bool = False,
    owner: Owner = None,
) -> int:
    """A new descriptor of the folder at *parts* below *root_fd* (``[]``: a copy of the root).

    With *create*, missing folders on the way are made (and given to *owner*).
    Holds at most two descriptors at a time however deep the path is.
    """
    fd = os.dup(root_fd)
    try:
        for name in parts:
            inner = enter(fd, name, relpath=relpath, field=field, create=create, owner=owner)
            os.close(fd)
            fd = inner
    except BaseException:
        close_quietly(fd)
        raise
    return fd


def open_root(volume_fd: int, vfid: str) -> int:
    """A descriptor of the root of folder *vfid* in the volume; FolderNotFound if it is missing."""
    try:
        return open_dir(volume_fd, list(folder_parts(vfid)), relpath=vfid, field="vfid")
    except StorageError as exc:
        # Not there, or not a folder (a link or a file in its place): no folder by that id.
        if exc.error_type in (
            StorageErrorType.FILE_NOT_FOUND,
            StorageErrorType.NOT_A_DIRECTORY,
            StorageErrorType.INVALID_PATH,
        ):
            raise StorageError(
                StorageErrorType.FOLDER_NOT_FOUND, f"no folder {vfid} in this volume", field="vfid"
            ) from None
        raise


def _load_renameat2() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_renameat2 = _load_renameat2()


def rename_noreplace(src: str, dst: str, *, src_dir_fd: int, dst_dir_fd: int) -> None:
    """Rename *src* to *dst* unless *dst* exists (FileExistsError then): never replaces anything.

    Uses ``renameat2(RENAME_NOREPLACE)``, atomic; where the C library or the
    file system lacks it, an ``lstat`` check before a plain rename (a file a
    kernel creates in between could then be replaced, the only window left).
    """
    if _renameat2 is not None:
        result = _renameat2(
            src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst), _RENAME_NOREPLACE
        )
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(code, os.strerror(code), dst)
    if lstat_at(dst, dst_dir_fd) is not None:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
