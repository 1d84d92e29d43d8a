"""Kernel log files: reading their end, and keeping them bounded.

A kernel's runner appends its own output (and its bootstrap script's) to one
log file per kernel.  :func:`tail` reads the end of one for ``get_logs`` and
for the excerpt a failed start carries; :func:`trim` cuts logs that grew past
:data:`LOG_MAX_BYTES` back to their last
:data:`~bai.common.agent_api.LOG_TAIL_BYTES`.  Both do blocking file I/O
(call them through ``trio.to_thread.run_sync``) and never raise: a log that
cannot be read reads as empty.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Final

from bai.common.agent_api import LOG_TAIL_BYTES

#: A kernel log larger than this is cut back to its last LOG_TAIL_BYTES.
LOG_MAX_BYTES: Final = 8 * 1024 * 1024


def tail(path: str, size: int) -> str:
    """The last *size* bytes of the file at *path*, decoded (empty if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            f.seek(max(end - size, 0))
            data = f.read(size)
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


def trim(paths: Sequence[str]) -> None:
    """Cut kernel logs larger than LOG_MAX_BYTES back to their tail (runners append to them)."""
    for path in paths:
        try:
            if not path or os.path.getsize(path) <= LOG_MAX_BYTES:
                continue
            end = tail(path, LOG_TAIL_BYTES).encode()
            with open(path, "r+b") as f:
                f.truncate(0)
                f.write(end)
        except OSError:
            continue
