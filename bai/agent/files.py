"""File operations in a kernel's scratch directory (``/home/work``) that cannot escape it.

Paths come from users through the manager: relative to ``/home/work``, or
absolute under ``/home/work``.  Every path is checked lexically first by
:mod:`bai.common.scratch_paths` (which the manager applies too), then walked one component at a time
with ``openat(O_NOFOLLOW)`` from a descriptor of the scratch directory, so a
symbolic link anywhere on the way -- even one the kernel swaps in between the
check and the use -- is refused instead of followed.

The kernel's code is hostile: it may put a FIFO, a socket, a device or a
symbolic link where a file is expected, and swap one in at any moment.  Only
regular files and folders are read or written (anything else is refused with
:class:`ScratchPathError`); files are opened ``O_NONBLOCK`` and judged by
``fstat`` of the opened descriptor, and an upload never opens what it
replaces, so no operation blocks on what the kernel made.  Downloads store
symbolic links found inside a folder as links, never their targets, and skip
the other special files found there.

Guarantees: a refused request changes nothing (an upload of several files
writes all of them or none); file-system failures raise
:class:`KernelFileError` (or :class:`FileTooLarge`) with the path and the
reason.  All functions are blocking: call them through ``trio.to_thread``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import secrets
import stat
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bai.common.agent_api import FileListing, UploadedFile
from bai.common.errors import BaiError, InvalidValue
from bai.common.safe_fs import DIR_FLAGS as _DIR_FLAGS
from bai.common.safe_fs import is_plain as _plain
from bai.common.safe_fs import kind_of
from bai.common.safe_fs import lstat_at as _lstat
from bai.common.safe_fs import open_plain as _open_plain
from bai.common.scratch_paths import KERNEL_HOME, ScratchPathError, split_path, split_upload_paths

#: Most entries :func:`list_files` reports for one folder.
MAX_LIST_ENTRIES: Final = 10_000

_STAGING_PREFIX: Final = ".bai-upload-"


class KernelFileError(BaiError):
    """A file operation in the scratch directory failed (missing file, not a folder, ...)."""


class FileTooLarge(KernelFileError, InvalidValue):
    """The upload or download of the file at ``value`` exceeds the agent's size limit."""


class FileOperationTimeout(KernelFileError):
    """A file operation did not finish within the agent's deadline."""


def _refused(path: str, name: str, mode: int) -> ScratchPathError:
    kind = kind_of(mode)
    return ScratchPathError(
        f"{name!r} is {kind}; only regular files and folders are read or written",
        value=path,
        field="path",
    )


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
    """Opens folders below the scratch root without following symbolic links.

    Holds one descriptor at a time, so a deep path costs no more than a flat one.
    """

    def __init__(self, scratch: Path, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise KernelFileError(
                f"the kernel's scratch directory is gone ({exc.strerror})"
            ) from None

    def enter(
        self, name: str, *, create: bool = False, owner: tuple[int, int] | None = None
    ) -> None:
        """Descend into folder *name*; raises ScratchPathError for a link or special file."""
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
                self.refuse_special(name)
            raise
        os.close(self.fd)
        self.fd = fd

    def refuse_special(self, name: str) -> None:
        """Raise ScratchPathError if *name* in the current folder is a link or special file."""
        st = _lstat(name, self.fd)
        if st is not None and not _plain(st.st_mode):
            raise _refused(self.path, name, st.st_mode)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


@dataclass
class _Upload:
    path: str
    parts: list[str]
    data: bytes
    #: Permission bits: those of the regular file it replaces, if any.
    mode: int = 0o644
    #: Its name in the scratch root until it is put in place.
    staged: str | None = None


def _check_target(scratch: Path, item: _Upload) -> None:
    """Refuse *item* unless its folders are folders (or missing) and its name a regular file."""
    path = item.path
    walk = _Walk(scratch, path)
    try:
        for name in item.parts[:-1]:
            try:
                walk.enter(name)
            except FileNotFoundError:
                return  # the rest of the way is created, empty
        name = item.parts[-1]
        st = _lstat(name, walk.fd)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            raise KernelFileError(f"{path}: is a folder")
        if not stat.S_ISREG(st.st_mode):
            raise _refused(path, name, st.st_mode)
        item.mode = stat.S_IMODE(st.st_mode) & 0o777
    finally:
        walk.close()


def _stage(root: int, item: _Upload, owner: tuple[int, int] | None) -> None:
    name = _STAGING_PREFIX + secrets.token_hex(8)
    # O_EXCL makes a new regular file: nothing the kernel made can be opened here.
    fd = os.open(
        name,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=root,
    )
    item.staged = name
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, item.mode)
        view = memoryview(item.data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _commit(scratch: Path, root: int, item: _Upload, owner: tuple[int, int] | None) -> None:
    assert item.staged is not None
    walk = _Walk(scratch, item.path)
    try:
        for name in item.parts[:-1]:
            walk.enter(name, create=True, owner=owner)
        os.rename(item.staged, item.parts[-1], src_dir_fd=root, dst_dir_fd=walk.fd)
        item.staged = None
    finally:
        walk.close()


def _each(uploads: list[_Upload], step: Callable[[_Upload], None]) -> None:
    for item in uploads:
        try:
            step(item)
        except OSError as exc:
            raise _fail(exc, item.path) from None


def write_files(
    scratch: Path,
    files: Sequence[tuple[str, bytes]],
    *,
    max_size: int,
    owner: tuple[int, int] | None = None,
    before_commit: Callable[[], None] | None = None,
) -> list[UploadedFile]:
    """Write each ``(path, data)`` of *files*: all of them or, when one is refused, none.

    Missing folders are created and a regular file is replaced (keeping its
    permission bits); a folder, link or special file in the way is refused.
    Every file is checked and staged before the first one is put in place;
    *before_commit* is called in between and may raise to write nothing.
    Only a kernel that changes its folders meanwhile can make the upload
    stop half-way.  Returns ``[{"path": absolute path, "size": bytes}]``.
    """
    split = split_upload_paths([path for path, _ in files])
    uploads = [_Upload(path, parts, data) for parts, (path, data) in zip(split, files, strict=True)]
    for item in uploads:
        if len(item.data) > max_size:
            raise FileTooLarge(
                f"{len(item.data)} bytes exceed the upload limit of {max_size}",
                value=item.path,
                field="path",
            )
    try:
        root = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise KernelFileError(f"the kernel's scratch directory is gone ({exc.strerror})") from None
    try:
        _each(uploads, lambda item: _check_target(scratch, item))
        _each(uploads, lambda item: _stage(root, item, owner))
        if before_commit is not None:
            before_commit()
        _each(uploads, lambda item: _commit(scratch, root, item, owner))
    finally:
        for item in uploads:
            if item.staged is not None:
                with contextlib.suppress(OSError):
                    os.unlink(item.staged, dir_fd=root)
        os.close(root)
    return [
        {"path": "/".join([KERNEL_HOME, *item.parts]), "size": len(item.data)} for item in uploads
    ]


def _entry(name: str, st: os.stat_result) -> dict[str, Any]:
    return {
        "mode": stat.filemode(st.st_mode),
        "size": st.st_size,
        "ctime": st.st_ctime,
        "mtime": st.st_mtime,
        "atime": st.st_atime,
        "filename": name,
    }


def list_files(scratch: Path, path: str) -> FileListing:
    """The spec's file listing of folder *path*: ``{"files", "errors", "abspath"}``.

    ``files`` is a JSON string of ``[{"mode", "size", "ctime", "mtime", "atime",
    "filename"}]`` (sorted by name, symbolic links and special files reported
    as what they are), ``errors`` a string (empty when all went well),
    ``abspath`` the folder's path inside the kernel.
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
            raise FileTooLarge(
                f"larger than the download limit of {self.limit} bytes",
                value=self.path,
                field="path",
            )


def _info(arcname: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    info.uid, info.gid = st.st_uid, st.st_gid
    return info


def _add_tree(tar: tarfile.TarFile, dir_fd: int, arcname: str, budget: _Budget) -> None:
    with os.scandir(dir_fd) as iterator:
        names = sorted(entry.name for entry in iterator)
    for name in names:
        member = f"{arcname}/{name}"
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            info = _info(member, st)
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(name, dir_fd=dir_fd)
            budget.take(0)
            tar.addfile(info)
            continue
        # Sockets, FIFOs and devices are skipped: they have no content to download.
        opened = _open_plain(name, dir_fd)
        if opened is not None:
            fd, st = opened
            try:
                _add_open(tar, fd, st, member, budget)
            finally:
                os.close(fd)


def _add_open(
    tar: tarfile.TarFile, fd: int, st: os.stat_result, arcname: str, budget: _Budget
) -> None:
    info = _info(arcname, st)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        budget.take(0)
        tar.addfile(info)
        _add_tree(tar, fd, arcname, budget)
        return
    budget.take(st.st_size)
    # The size read now, not the stat's: the kernel may be writing the file.
    with open(fd, "rb", closefd=False) as f:
        data = f.read(budget.left + st.st_size + 1)
    budget.left += st.st_size
    budget.take(len(data))
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def download(scratch: Path, path: str, *, max_size: int) -> bytes:
    """A tar archive of file or folder *path* (named by its last component), at most *max_size*.

    A symbolic link or special file as *path* itself is refused.
    """
    parts = split_path(path)
    walk = _Walk(scratch, path)
    buffer = io.BytesIO()
    try:
        for name in parts[:-1]:
            walk.enter(name)
        name = parts[-1]
        opened = _open_plain(name, walk.fd)
        if opened is None:
            walk.refuse_special(name)
            raise KernelFileError(f"{path}: changed while it was opened")
        fd, st = opened
        try:
            with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
                _add_open(tar, fd, st, name, _Budget(path, max_size))
        finally:
            os.close(fd)
    except OSError as exc:
        raise _fail(exc, path) from None
    finally:
        walk.close()
    return buffer.getvalue()
