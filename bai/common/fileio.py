"""Writing gathered pieces of data into a file at an offset, whole.

The storage proxy (tus uploads) and the SDK (downloads) both gather what
arrives from a socket into a list of pieces and write the list with one
``pwritev``: no join, so no copy in Python.  Blocking: call through
``trio.to_thread``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Final

__all__ = ["pwrite_all"]

#: Most pieces handed to one ``pwritev`` (Linux's IOV_MAX is 1024).
_IOV_MAX: Final = 1024


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
