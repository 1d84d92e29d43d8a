"""The pure rules of dotfiles and of the stored bootstrap script (no I/O).

A dotfile is a file the agent writes into every new kernel's ``/home/work``.
Users, projects and domains each keep a list of them, stored as JSON
``[{"path", "perm", "data"}]`` (the original's shape): *path* relative to
``/home/work``, *perm* three octal digits (``"644"``), *data* the text.

Guarantees of the functions here:

* a path is checked by :func:`~bai.common.agent_api.dotfile_parts` (no
  absolute path, no ``..``, none of the reserved paths) and stored
  normalised (``./a//b`` is ``a/b``), so one file has one name;
* within one list no two dotfiles share a path or nest (a file cannot also
  be a folder of another); a list holds at most :data:`MAX_DOTFILES` entries
  and takes at most :data:`MAX_DOTFILES_SIZE` bytes as stored;
* every refusal is an exception the API answers as a 4xx naming the field
  (:class:`~bai.common.errors.InvalidValue` 400, :class:`DotfileNotFound`
  404, :class:`DotfileExists` 409), and a refused change returns nothing;
  the caller writes only what a function returned;
* :func:`merge` gives the dotfiles of a new kernel: the owner's over the
  project's over the domain's for one path, and a lower-priority dotfile
  that would nest with a chosen one is left out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final

from bai.common.agent_api import MAX_DOTFILE_SIZE, dotfile_parts, paths_nest
from bai.common.errors import BaiError, InvalidValue

__all__ = [
    "MAX_BOOTSTRAP_SCRIPT",
    "MAX_DOTFILES",
    "MAX_DOTFILES_SIZE",
    "DotfileExists",
    "DotfileNotFound",
    "add",
    "check_bootstrap_script",
    "check_permission",
    "find",
    "listing",
    "merge",
    "normal_path",
    "read_stored",
    "remove",
    "replace",
    "shown",
    "stored_size",
]

#: Dotfiles one user, project or domain may keep.
MAX_DOTFILES: Final = 100
#: Bytes one user's, project's or domain's dotfiles may take as stored (JSON).
MAX_DOTFILES_SIZE: Final = MAX_DOTFILE_SIZE
#: Longest stored bootstrap script (characters).
MAX_BOOTSTRAP_SCRIPT: Final = 64 * 1024

_PERMISSION: Final = re.compile(r"[0-7]{3}\Z")

#: One stored dotfile: ``{"path", "perm", "data"}``.
Stored = dict[str, str]


class DotfileNotFound(BaiError):
    """No dotfile at the path in this scope (404)."""

    http_status: ClassVar[int] = 404
    error_type: ClassVar[str] = "dotfile-not-found"
    error_title: ClassVar[str] = "Requested dotfile not found."


class DotfileExists(BaiError):
    """A dotfile is already at the path in this scope (409)."""

    http_status: ClassVar[int] = 409
    error_type: ClassVar[str] = "dotfile-already-exists"
    error_title: ClassVar[str] = "Dotfile already exists."


def normal_path(path: object, *, field: str = "path") -> str:
    """*path* normalised, or :class:`~bai.common.scratch_paths.ScratchPathError` for *field*."""
    return "/".join(dotfile_parts(path, field=field))


def check_permission(permission: object, *, field: str = "permission") -> str:
    """*permission* if it is three octal digits (``"644"``), else InvalidValue for *field*."""
    if not isinstance(permission, str) or not _PERMISSION.match(permission):
        raise InvalidValue(
            'must be three octal digits, such as "644"', value=permission, field=field
        )
    return permission


def read_stored(value: Any) -> list[Stored]:
    """The well-formed entries of a stored dotfile list (anything else is skipped)."""
    if not isinstance(value, list):
        return []
    return [
        {"path": item["path"], "perm": item["perm"], "data": item["data"]}
        for item in value
        if isinstance(item, Mapping)
        and all(isinstance(item.get(key), str) for key in ("path", "perm", "data"))
    ]


def stored_size(entries: Sequence[Stored]) -> int:
    """Bytes *entries* take as stored (compact UTF-8 JSON)."""
    return len(json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode())


def _index(entries: Sequence[Stored], path: str) -> int | None:
    return next((i for i, item in enumerate(entries) if item["path"] == path), None)


def find(entries: Sequence[Stored], path: object) -> Stored:
    """The dotfile at *path* (normalised first); :class:`DotfileNotFound` if there is none."""
    normal = normal_path(path)
    index = _index(entries, normal)
    if index is None:
        raise DotfileNotFound(f"no dotfile at {normal!r}")
    return entries[index]


def _checked(entries: list[Stored], scope: str) -> list[Stored]:
    if len(entries) > MAX_DOTFILES:
        raise InvalidValue(
            f"{scope} may keep at most {MAX_DOTFILES} dotfiles", value=len(entries), field="path"
        )
    size = stored_size(entries)
    if size > MAX_DOTFILES_SIZE:
        raise InvalidValue(
            f"the dotfiles of {scope} would take {size} bytes, more than the "
            f"{MAX_DOTFILES_SIZE} allowed",
            value=len(entries[-1]["data"]) if entries else 0,
            field="data",
        )
    return entries


def _entry(path: object, permission: object, data: object) -> Stored:
    normal = normal_path(path)
    perm = check_permission(permission)
    if not isinstance(data, str):
        raise InvalidValue("must be a string", value=data, field="data")
    if len(data) > MAX_DOTFILE_SIZE:
        raise InvalidValue(
            f"a dotfile holds at most {MAX_DOTFILE_SIZE} characters", value=len(data), field="data"
        )
    return {"path": normal, "perm": perm, "data": data}


def add(
    entries: Sequence[Stored], path: object, permission: object, data: object, *, scope: str
) -> list[Stored]:
    """*entries* with a new dotfile (module docs); *scope* names the owner in messages."""
    entry = _entry(path, permission, data)
    if _index(entries, entry["path"]) is not None:
        raise DotfileExists(f"a dotfile is already at {entry['path']!r}")
    parts = entry["path"].split("/")
    for item in entries:
        if paths_nest(item["path"].split("/"), parts):
            raise InvalidValue(
                f"collides with the dotfile {item['path']!r} (a file cannot also be a folder)",
                value=path,
                field="path",
            )
    return _checked([*entries, entry], scope)


def replace(
    entries: Sequence[Stored], path: object, permission: object, data: object, *, scope: str
) -> list[Stored]:
    """*entries* with the dotfile at *path* given a new mode and content (404 if missing)."""
    entry = _entry(path, permission, data)
    index = _index(entries, entry["path"])
    if index is None:
        raise DotfileNotFound(f"no dotfile at {entry['path']!r}")
    updated = list(entries)
    updated[index] = entry
    return _checked(updated, scope)


def remove(entries: Sequence[Stored], path: object) -> list[Stored]:
    """*entries* without the dotfile at *path* (404 if missing)."""
    found = find(entries, path)
    return [item for item in entries if item is not found]


def shown(entry: Stored) -> dict[str, str]:
    """One dotfile as the API answers it (``permission``; ``perm`` too, as the original)."""
    return {
        "path": entry["path"],
        "permission": entry["perm"],
        "perm": entry["perm"],
        "data": entry["data"],
    }


def listing(entries: Iterable[Stored]) -> list[dict[str, str]]:
    """The list answer: ``[{"path", "permission", "data"}]``."""
    return [
        {"path": item["path"], "permission": item["perm"], "data": item["data"]} for item in entries
    ]


def merge(*scopes: Sequence[Stored]) -> list[Stored]:
    """One list of dotfiles from *scopes* in priority order (owner, project, domain).

    For one path the first scope's dotfile wins; a later dotfile that would
    nest with an earlier choice (a file where a chosen one needs a folder) is
    left out.  Entries whose path no longer passes the rules (stored before a
    rule changed) are left out too.
    """
    chosen: list[Stored] = []
    taken: list[list[str]] = []
    for entries in scopes:
        for item in entries:
            try:
                parts = dotfile_parts(item["path"])
                check_permission(item["perm"])
            except InvalidValue:
                continue
            if any(paths_nest(parts, other) for other in taken):
                continue
            taken.append(parts)
            chosen.append({"path": "/".join(parts), "perm": item["perm"], "data": item["data"]})
    return chosen


def check_bootstrap_script(script: object, *, field: str = "script") -> str:
    """*script* as stored (surrounding blank space removed); InvalidValue for *field*."""
    if not isinstance(script, str):
        raise InvalidValue("must be a string", value=script, field=field)
    stripped = script.strip()
    if len(stripped) > MAX_BOOTSTRAP_SCRIPT:
        raise InvalidValue(
            f"a bootstrap script holds at most {MAX_BOOTSTRAP_SCRIPT} characters",
            value=len(stripped),
            field=field,
        )
    return stripped
