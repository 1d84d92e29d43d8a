"""The proxy's own records about a volume's folders, kept under ``<volume>/.bai/``.

``.bai/folders/<vfid>.json`` holds a folder's quota scope and byte quota,
``.bai/scopes/<kind>-<uuid>.json`` a quota scope's byte limit.  Each record
is one small JSON file replaced atomically (written aside, then renamed), so
a crash leaves the old record or the new one, never half of one.  ``.bai/``
is never inside a folder, so no kernel can touch these files.

Blocking: call through ``trio.to_thread``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import msgspec

from bai.storage.volumes.walk import Owner

__all__ = ["FolderRecord", "MetaStore"]

_R = TypeVar("_R", bound=msgspec.Struct)


class FolderRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the proxy remembers of one folder."""

    quota_scope: str | None = None
    quota: int | None = None


class _ScopeRecord(msgspec.Struct, frozen=True, kw_only=True):
    limit: int | None = None


def _scope_file(scope: str) -> str:
    # "user:UUID" -> "user-UUID.json": a colon-free name any file system takes.
    return scope.replace(":", "-", 1) + ".json"


def _scope_of(stem: str) -> str:
    return stem.replace("-", ":", 1)


def _records(directory: Path, kind: type[_R]) -> Iterator[tuple[str, _R | None]]:
    """Each record file of *directory* as (its name less ``.json``, its record, or None
    when it cannot be read)."""
    for entry in os.scandir(directory):
        if not entry.name.endswith(".json") or entry.name.startswith("."):
            continue
        record: _R | None
        try:
            record = msgspec.json.decode(Path(entry.path).read_bytes(), type=kind)
        except (OSError, msgspec.DecodeError):
            record = None
        yield entry.name[:-5], record


class MetaStore:
    """Reads and writes the folder and scope records of one volume's ``.bai/`` folder."""

    def __init__(self, base: Path, owner: Owner = None) -> None:
        self.folders = base / "folders"
        self.scopes = base / "scopes"
        self.owner = owner

    def _write(self, path: Path, data: bytes) -> None:
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
            if self.owner is not None:
                os.fchown(fd, *self.owner)
        finally:
            os.close(fd)
        try:
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def load_folders(self) -> dict[str, FolderRecord]:
        """Every folder record (a record that cannot be read counts as no quota, no scope)."""
        return {
            vfid: FolderRecord() if record is None else record
            for vfid, record in _records(self.folders, FolderRecord)
        }

    def load_scopes(self) -> dict[str, int]:
        """The byte limit of every quota scope that has one."""
        return {
            _scope_of(stem): record.limit
            for stem, record in _records(self.scopes, _ScopeRecord)
            if record is not None and record.limit is not None
        }

    def put_folder(self, vfid: str, record: FolderRecord) -> None:
        """Store *record* as folder *vfid*'s."""
        self._write(self.folders / f"{vfid}.json", msgspec.json.encode(record))

    def drop_folder(self, vfid: str) -> None:
        """Forget folder *vfid*."""
        with contextlib.suppress(FileNotFoundError):
            (self.folders / f"{vfid}.json").unlink()

    def put_scope(self, scope: str, limit: int | None) -> None:
        """Store (or, with None, remove) the byte limit of quota scope *scope*."""
        path = self.scopes / _scope_file(scope)
        if limit is None:
            path.unlink(missing_ok=True)
        else:
            self._write(path, msgspec.json.encode(_ScopeRecord(limit=limit)))
