"""Primitives for walking a folder that hostile code can change under our feet.

Kernels write into folders the daemons also serve (an agent's scratch
directory, a storage proxy's vfolders) and may plant symbolic links, FIFOs,
sockets or devices there, or swap one in between a check and a use.  The
daemons therefore never resolve a path in one go: they open each folder
relative to the descriptor of its parent with :data:`DIR_FLAGS`
(``O_NOFOLLOW | O_DIRECTORY``), so a link on the way is refused by the
kernel instead of followed, and they judge a file by ``fstat`` of the
descriptor they opened (:func:`open_plain`), never by a name looked up
earlier.  Only regular files and folders are *plain* (:func:`is_plain`);
everything else is described by :func:`kind_of` in refusals.

Blocking functions: call them through ``trio.to_thread``.
"""

from __future__ import annotations

import os
import stat
from typing import Final

__all__ = ["DIR_FLAGS", "READ_FLAGS", "is_plain", "kind_of", "lstat_at", "open_plain"]

#: Open a folder without following a link; O_NONBLOCK so a FIFO swapped in never blocks the open.
DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Open a file (or folder) for reading without following a link or blocking on a FIFO.
READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

_KINDS: Final = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFREG: "a regular file",
    stat.S_IFDIR: "a folder",
}


def is_plain(mode: int) -> bool:
    """Whether *mode* is a regular file's or a folder's (the only kinds read or written)."""
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode)


def kind_of(mode: int) -> str:
    """What *mode* is, in words for an error message ("a symbolic link", "a socket", ...)."""
    return _KINDS.get(stat.S_IFMT(mode), "a special file")


def lstat_at(name: str, dir_fd: int) -> os.stat_result | None:
    """``lstat`` of *name* in folder *dir_fd* (a link is not followed), or None if missing."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_plain(name: str, dir_fd: int) -> tuple[int, os.stat_result] | None:
    """A descriptor of regular file or folder *name* in *dir_fd*, or None if it is anything else.

    Special files are never opened; what counts is the type of the opened
    descriptor, since hostile code may swap a FIFO in after the ``lstat``.
    Raises FileNotFoundError (and other OSErrors) from the file system.
    """
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not is_plain(st.st_mode):
        return None
    fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    st = os.fstat(fd)
    if not is_plain(st.st_mode):
        os.close(fd)
        return None
    return fd, st
