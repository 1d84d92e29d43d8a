"""The lexical rules of a path in a kernel's scratch directory (``/home/work``).

Shared by the manager, which refuses a bad path before calling an agent, and
the agent, which checks again before it walks the path (:mod:`bai.agent.files`).
A path is relative to ``/home/work`` or absolute under it; it may not contain
``..`` or NUL, be longer than :data:`MAX_PATH` characters, or have a component
longer than the file systems allow (:data:`MAX_NAME` bytes).  Pure functions,
no I/O: they say nothing of what exists.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Final

from bai.common.errors import InvalidValue

__all__ = [
    "KERNEL_HOME",
    "MAX_NAME",
    "MAX_PATH",
    "ScratchPathError",
    "split_path",
    "split_upload_paths",
]

#: Where a kernel sees its scratch directory.
KERNEL_HOME: Final = "/home/work"
#: Longest path accepted.
MAX_PATH: Final = 4096
#: Longest path component accepted, in bytes (``NAME_MAX`` of Linux file systems).
MAX_NAME: Final = 255


class ScratchPathError(InvalidValue):
    """A path that is malformed, would leave the scratch directory, or names a special file."""


def split_path(path: object, *, allow_root: bool = False, field: str = "path") -> list[str]:
    """The components of *path* below ``/home/work``; raises :class:`ScratchPathError`.

    *field* names the request's field in the error.
    """
    if not isinstance(path, str):
        raise ScratchPathError("a path must be a string", value=path, field=field)
    if "\x00" in path:
        raise ScratchPathError("a path cannot contain NUL", value=path, field=field)
    if len(path) > MAX_PATH:
        raise ScratchPathError(f"a path is at most {MAX_PATH} characters", value=path, field=field)
    rest = path
    if path.startswith("/"):
        if path.rstrip("/") == KERNEL_HOME:
            rest = ""
        elif path.startswith(KERNEL_HOME + "/"):
            rest = path[len(KERNEL_HOME) + 1 :]
        else:
            raise ScratchPathError(
                f"absolute paths must be inside {KERNEL_HOME}", value=path, field=field
            )
    parts = [p for p in rest.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ScratchPathError("'..' is not allowed in a path", value=path, field=field)
    if any(len(os.fsencode(p)) > MAX_NAME for p in parts):
        raise ScratchPathError(
            f"a file or folder name is at most {MAX_NAME} bytes", value=path, field=field
        )
    if not parts and not allow_root:
        raise ScratchPathError("the path names no file", value=path, field=field)
    return parts


def split_upload_paths(paths: Sequence[object], *, field: str = "path") -> list[list[str]]:
    """The components of each path of one upload (:func:`split_path`).

    Also refuses a path that another path of the same upload needs as a
    folder, which could not be written without undoing the other.
    """
    split = [split_path(path, field=field) for path in paths]
    folders = {tuple(parts[:end]) for parts in split for end in range(1, len(parts))}
    for path, parts in zip(paths, split, strict=True):
        if tuple(parts) in folders:
            raise ScratchPathError(
                "is a folder of another file of the same upload", value=path, field=field
            )
    return split
