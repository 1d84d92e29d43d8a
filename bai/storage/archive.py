"""A folder as a zip archive, written as a stream while it is walked.

:func:`write_zip` walks a folder from its descriptor the way every walk of
the proxy does (no link followed, special files skipped; links inside are
skipped too, since a zip cannot say where they point portably) and writes
each regular file into a zip (stored, ZIP64 where needed) on a write-only
stream, so the archive is sent while it is made and never held whole.
Blocking: run it in a worker thread and hand the stream's chunks to Trio.
"""

from __future__ import annotations

import os
import stat
import time
import zipfile
from collections.abc import Callable
from typing import Final

from bai.common.safe_fs import open_plain
from bai.storage.volumes.walk import opened

__all__ = ["write_zip"]

_CHUNK: Final = 1024 * 1024


class _Sink:
    """A write-only, unseekable file object that passes what is written to *emit*."""

    def __init__(self, emit: Callable[[bytes], None]) -> None:
        self.emit = emit
        self.written = 0
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        self.written += len(data)
        if len(self.buffer) >= _CHUNK:
            self.flush()
        return len(data)

    def tell(self) -> int:
        return self.written

    def close(self) -> None:
        self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.emit(bytes(self.buffer))
            self.buffer.clear()


def _date(mtime: float) -> tuple[int, int, int, int, int, int]:
    year, month, day, hour, minute, second = time.gmtime(max(mtime, 315532800))[:6]
    return (year, month, day, hour, minute, second)


def _add(zf: zipfile.ZipFile, dir_fd: int, prefix: str) -> None:
    with os.scandir(dir_fd) as entries:
        names = sorted(entry.name for entry in entries)
    for name in names:
        try:
            found = open_plain(name, dir_fd)
        except FileNotFoundError:
            continue  # removed since the listing
        if found is None:
            continue
        fd, st = found
        with opened(fd):
            arcname = f"{prefix}{name}"
            if stat.S_ISDIR(st.st_mode):
                info = zipfile.ZipInfo(arcname + "/", _date(st.st_mtime))
                info.external_attr = (stat.S_IFDIR | stat.S_IMODE(st.st_mode)) << 16
                zf.writestr(info, b"")
                _add(zf, fd, arcname + "/")
                continue
            info = zipfile.ZipInfo(arcname, _date(st.st_mtime))
            info.external_attr = (stat.S_IFREG | stat.S_IMODE(st.st_mode)) << 16
            info.file_size = st.st_size
            with zf.open(info, "w", force_zip64=True) as out:
                while chunk := os.read(fd, _CHUNK):
                    out.write(chunk)


def write_zip(dir_fd: int, emit: Callable[[bytes], None], *, prefix: str = "") -> None:
    """Write the zip of the folder at *dir_fd* as a series of ``emit(chunk)`` calls."""
    sink = _Sink(emit)
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as zf:
        _add(zf, dir_fd, prefix)
    sink.flush()
