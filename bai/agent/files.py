"""File operations in a kernel's scratch directory (``/home/work``) that cannot escape it.

Paths come from users through the manager: relative to ``/home/work``, or
absolute under ``/home/work``.  Every path is checked lexically first (no
``..``, no NUL, no absolute path elsewhere: :class:`ScratchPathError`), then
walked one component at a time with ``openat(O_NOFOLLOW)`` from a descriptor
of the scratch directory, so a symbolic link anywhere on the way -- even one
the kernel swaps in between the check and the use -- is refused instead of
followed.  Downloads store symbolic links found inside a folder as links,
never their targets.

Guarantees: a refused request changes nothing; file-system failures raise
:class:`KernelFileError` (or :class:`FileTooLarge`) with the path and the
reason.  All functions are blocking: call them through ``trio.to_thread``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any, Final

from bai.common.errors import BaiError, InvalidValue

#: The scratch directory as kernels see it.
KERNEL_HOME: Final = "/home/work"
#: Longest path accepted.
MAX_PATH: Final = 4096
#: Most entries :func:`list_files` reports for one folder.
MAX_LIST_ENTRIES: Final = 10_000

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ScratchPathError(InvalidValue):
    """A path that is malformed or would leave the scratch directory."""


class KernelFileError(BaiError):
    """A file operation in the scratch directory failed (missing file, not a folder, ...)."""


class FileTooLarge(KernelFileError):
    """The upload or download exceeds the agent's size limit."""


def split_path(path: object, *, allow_root: bool = False) -> list[str]:
    """The components of *path* below ``/home/work``; raises :class:`ScratchPathError`."""
    if not isinstance(path, str):
        raise ScratchPathError("a path must be a string", value=path, field="path")
    if "\x00" in path:
        raise ScratchPathError("a path cannot contain NUL", value=path, field="path")
    if len(path) > MAX_PATH:
        raise ScratchPathError(f"a path is at most {MAX_PATH} characters", value=path, field="path")
    rest = path
    if path.startswith("/"):
        if path.rstrip("/") == KERNEL_HOME:
            rest = ""
        elif path.startswith(KERNEL_HOME + "/"):
            rest = path[len(KERNEL_HOME) + 1 :]
        else:
            raise ScratchPathError(
                f"absolute paths must be inside {KERNEL_HOME}", value=path, field="path"
            )
    parts = [p for p in rest.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ScratchPathError("'..' is not allowed in a path", value=path, field="path")
    if not parts and not allow_root:
        raise ScratchPathError("the path names no file", value=path, field="path")
    return parts


def _fail(exc: OSError, path: str) -> KernelFileError:
    reason = {
        errno.ENOENT: "no such file or folder",
        errno.ENOTDIR: "a component of the path is not a folder",
        errno.EISDIR: "is a folder",
        errno.EEXIST: "a file is in the way",
        errno.ENOSPC: "no space left in the scratch directory",
        errno.EDQUOT: "the scratch directory is over its quota",
        errno.EACCES: "permission denied",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return KernelFileError(f"{path}: {reason}")


class _Walk:
    """Opens directories below the scratch root without following symbolic links."""

    def __init__(self, scratch: Path, path: str) -> None:
        self.path = path
        self.fds: list[int] = []
        try:
            self.fds.append(os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        except OSError as exc:
            raise KernelFileError(
                f"the kernel's scratch directory is gone ({exc.strerror})"
            ) from None

    @property
    def fd(self) -> int:
        return self.fds[-1]

    def enter(
        self, name: str, *, create: bool = False, owner: tuple[int, int] | None = None
    ) -> None:
        """Descend into folder *name*; raises ScratchPathError for a symbolic link."""
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            if not create:
                raise
            os.mkdir(name, 0o755, dir_fd=self.fd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
            if owner is not None:
                os.fchown(fd, *owner)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                self.refuse_link(name)
            raise
        self.fds.append(fd)

    def refuse_link(self, name: str) -> None:
        """Raise ScratchPathError if *name* in the current folder is a symbolic link."""
        if _is_link(name, self.fd):
            raise ScratchPathError("symbolic links are not followed", value=self.path, field="path")

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def write_file(
    scratch: Path,
    path: str,
    data: bytes,
    *,
    max_size: int,
    owner: tuple[int, int] | None = None,
) -> int:
    """Write *data* to *path* (missing folders are created, a file is overwritten).

    Returns the number of bytes written.
    """
    parts = split_path(path)
    if len(data) > max_size:
        raise FileTooLarge(f"{path}: {len(data)} bytes exceed the upload limit of {max_size}")
    walk = _Walk(scratch, path)
    try:
        for name in parts[:-1]:
            walk.enter(name, create=True, owner=owner)
        name = parts[-1]
        try:
            fd = os.open(
                name,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=walk.fd,
            )
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                walk.refuse_link(name)
            raise
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        return len(data)
    except OSError as exc:
        raise _fail(exc, path) from None
    finally:
        walk.close()


def _entry(name: str, st: os.stat_result) -> dict[str, Any]:
    return {
        "mode": stat.filemode(st.st_mode),
        "size": st.st_size,
        "ctime": st.st_ctime,
        "mtime": st.st_mtime,
        "atime": st.st_atime,
        "filename": name,
    }


def list_files(scratch: Path, path: str) -> dict[str, Any]:
    """The spec's file listing of folder *path*: ``{"files", "errors", "abspath"}``.

    ``files`` is a JSON string of ``[{"mode", "size", "ctime", "mtime", "atime",
    "filename"}]`` (sorted by name, symbolic links reported as links),
    ``errors`` a string (empty when all went well), ``abspath`` the folder's
    path inside the kernel.
    """
    parts = split_path(path, allow_root=True)
    walk = _Walk(scratch, path)
    files: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        for name in parts:
            walk.enter(name)
        with os.scandir(walk.fd) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_LIST_ENTRIES:
                    errors.append(f"only the first {MAX_LIST_ENTRIES} entries are listed")
                    break
                try:
                    files.append(_entry(entry.name, entry.stat(follow_symlinks=False)))
                except OSError as exc:
                    errors.append(f"{entry.name}: {exc.strerror}")
    except OSError as exc:
        raise _fail(exc, path) from None
    finally:
        walk.close()
    files.sort(key=lambda item: item["filename"])
    abspath = "/".join([KERNEL_HOME, *parts])
    return {"files": json.dumps(files), "errors": "\n".join(errors), "abspath": abspath}


class _Budget:
    def __init__(self, path: str, limit: int) -> None:
        self.path = path
        self.left = limit
        self.limit = limit

    def take(self, size: int) -> None:
        self.left -= size + 512
        if self.left < 0:
            raise FileTooLarge(f"{self.path}: larger than the download limit of {self.limit} bytes")


def _add_tree(tar: tarfile.TarFile, dir_fd: int, arcname: str, budget: _Budget) -> None:
    with os.scandir(dir_fd) as iterator:
        entries = sorted(iterator, key=lambda e: e.name)
    for entry in entries:
        _add(tar, dir_fd, entry.name, f"{arcname}/{entry.name}", budget)


def _add(tar: tarfile.TarFile, dir_fd: int, name: str, arcname: str, budget: _Budget) -> None:
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    info.uid, info.gid = st.st_uid, st.st_gid
    if stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(name, dir_fd=dir_fd)
        budget.take(0)
        tar.addfile(info)
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        budget.take(0)
        tar.addfile(info)
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        try:
            _add_tree(tar, fd, arcname, budget)
        finally:
            os.close(fd)
    elif stat.S_ISREG(st.st_mode):
        budget.take(st.st_size)
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as f:
            # The size read now, not the stat's: the kernel may be writing the file.
            data = f.read(budget.left + st.st_size + 1)
        budget.left += st.st_size
        budget.take(len(data))
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    # Sockets, FIFOs and devices are skipped: they have no content to download.


def download(scratch: Path, path: str, *, max_size: int) -> bytes:
    """A tar archive of file or folder *path* (named by its last component), at most *max_size*."""
    parts = split_path(path)
    walk = _Walk(scratch, path)
    buffer = io.BytesIO()
    try:
        for name in parts[:-1]:
            walk.enter(name)
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, walk.fd, parts[-1], parts[-1], _Budget(path, max_size))
    except OSError as exc:
        raise _fail(exc, path) from None
    finally:
        walk.close()
    return buffer.getvalue()
