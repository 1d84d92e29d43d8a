"""Writing what arrives from a socket into a file at an offset, whole.

The storage proxy (tus uploads) and the SDK (downloads) both gather what
arrives from a socket into a list of pieces and write the list with one
``pwritev``: no join, so no copy in Python (:func:`pwrite_all`).  Where the
bytes can stay in the kernel (plain TCP on Linux), both splice them from the
socket through a pipe into the file instead (:func:`splice_into_file`).
Blocking: call through ``trio.to_thread``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Sequence
from typing import Final

__all__ = [
    "CAN_SPLICE",
    "PIPE_SIZE",
    "SPLICE_BATCH",
    "SocketFailed",
    "open_splice_pipe",
    "pwrite_all",
    "splice_into_file",
]

#: Most pieces handed to one ``pwritev`` (Linux's IOV_MAX is 1024).
_IOV_MAX: Final = 1024
#: Whether bodies can be spliced from sockets into files (Linux).
CAN_SPLICE: Final = hasattr(os, "splice") and hasattr(fcntl, "F_SETPIPE_SZ")
#: The size asked for a splice pipe (Linux's default limit for unprivileged users).
PIPE_SIZE: Final = 1 << 20
#: Most bytes one worker-thread call of :func:`splice_into_file` is usually given.
SPLICE_BATCH: Final = 4 << 20


class SocketFailed(Exception):
    """Reading the socket failed (its ``__cause__`` says how); the file is fine."""


def pwrite_all(fd: int, pieces: Sequence[bytes | bytearray | memoryview], offset: int) -> int:
    """Write *pieces* one after the other at *offset* of *fd*; answers the bytes written.

    Every byte is written: a short write (a signal, a full pipe) is finished
    from where it stopped, and any number of pieces is accepted (they go in
    groups of at most IOV_MAX).  An ``OSError`` (disk full...) is raised as is,
    with the bytes before it possibly written.
    """
    total = 0
    for first in range(0, len(pieces), _IOV_MAX):
        group = pieces[first : first + _IOV_MAX]
        size = sum(len(piece) for piece in group)
        done = os.pwritev(fd, group, offset)
        while done < size:  # a short write: finish piece by piece from where it stopped
            skip = done
            rest: list[bytes | bytearray | memoryview] = []
            for piece in group:
                if skip >= len(piece):
                    skip -= len(piece)
                    continue
                rest.append(memoryview(piece)[skip:])
                skip = 0
            written = os.pwritev(fd, rest, offset + done)
            if written == 0:  # never for a file with room; a guard against looping forever
                raise OSError(errno.EIO, "pwritev wrote nothing")
            done += written
        offset += size
        total += size
    return total


def open_splice_pipe() -> tuple[int, int]:
    """A pipe (read end, write end) for :func:`splice_into_file`, as large as allowed."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    with contextlib.suppress(OSError):  # a larger pipe, where the system allows it
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return read_end, write_end


def splice_into_file(
    sock_fd: int, read_end: int, write_end: int, fd: int, offset: int, limit: int
) -> tuple[int, bool]:
    """Move what *sock_fd* holds, up to *limit* bytes, through the pipe into *fd* at *offset*.

    Answers (bytes moved, whether the peer closed); never reads past *limit*
    bytes of the socket.  The bytes never enter Python.  Blocking (the file
    writes): run in a worker thread.  The pipe is empty again on return,
    so every byte counted is in the file.  A failing socket raises
    :class:`SocketFailed` when nothing moved yet (else the next call meets
    the error); a failing file write raises its ``OSError``.
    """
    moved = 0
    while moved < limit:
        try:
            got = os.splice(
                sock_fd,
                write_end,
                min(limit - moved, PIPE_SIZE),
                flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK,
            )
        except BlockingIOError:
            return moved, False
        except OSError as exc:
            if moved:
                return moved, False  # keep what came; the next call meets the error again
            raise SocketFailed from exc
        if got == 0:
            return moved, True
        put = 0
        while put < got:
            wrote = os.splice(read_end, fd, got - put, offset_dst=offset + moved + put)
            if wrote == 0:  # never with bytes in the pipe; a guard against looping forever
                raise OSError(errno.EIO, "splice into the file wrote nothing")
            put += wrote
        moved += got
    return moved, False
