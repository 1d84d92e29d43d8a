"""Writing a file into a kernel's scratch folder that the kernel may have booby-trapped.

Shared by :mod:`bai.agent.sshkeys` and :mod:`bai.agent.dotfiles`.  The
scratch folder belongs to the kernel, which may have planted a symbolic link,
a FIFO or a folder where a file goes (a restart reuses the folder).
:func:`replace_file` never opens what is there: it writes a new file
(``O_CREAT | O_EXCL | O_NOFOLLOW``) beside it and renames it over the name,
which replaces a link instead of following it, and a reader never sees half
a file.  :func:`open_folder` opens a folder relative to its parent's
descriptor without following a link (:data:`bai.common.safe_fs.DIR_FLAGS`).

Blocking functions: call them through ``trio.to_thread``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from typing import Final

from bai.common.safe_fs import DIR_FLAGS, lstat_at

__all__ = ["NotAFolder", "open_folder", "replace_file"]

_CREATE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class NotAFolder(Exception):
    """Something other than a folder (``mode`` says what) stands where a folder is needed."""

    def __init__(self, mode: int) -> None:
        super().__init__(mode)
        self.mode = mode


def open_folder(dir_fd: int, name: str) -> int | None:
    """A descriptor of folder *name* in *dir_fd*, None when nothing is there.

    Raises :class:`NotAFolder` when *name* is a link or anything but a folder.
    """
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
    st = lstat_at(name, dir_fd)
    raise NotAFolder(st.st_mode if st is not None else stat.S_IFLNK)


def replace_file(
    dir_fd: int,
    name: str,
    data: bytes,
    owner: tuple[int, int],
    mode: int,
    *,
    staging_prefix: str = ".bai-",
) -> None:
    """Replace *name* in *dir_fd* with a new file holding *data*, of *mode*, owned by *owner*.

    The data goes to a new file first, named *staging_prefix* and a random
    suffix, which is then renamed over *name*; on failure it is removed.
    """
    staged = staging_prefix + secrets.token_hex(8)
    fd = os.open(staged, _CREATE_FLAGS, 0o600, dir_fd=dir_fd)
    try:
        try:
            os.fchown(fd, *owner)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.rename(staged, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staged, dir_fd=dir_fd)
        raise
