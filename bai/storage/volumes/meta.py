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
from pathlib import Path

import msgspec

from bai.storage.volumes.walk import Owner

__all__ = ["FolderRecord", "MetaStore"]


class FolderRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the proxy remembers of one folder."""

    quota_scope: str | None = None
    quota: int | None = None


class _ScopeRecord(msgspec.Struct, frozen=True, kw_only=True):
    limit: int | None = None


def _scope_file(scope: str) -> str:
    # "user:UUID" -> "user-UUID.json": a colon-free name any file system takes.
    return scope.replace(":", "-", 1) + ".json"


def _scope_of(file_name: str) -> str:
    return file_name.removesuffix(".json").replace("-", ":", 1)


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
        records: dict[str, FolderRecord] = {}
        for entry in os.scandir(self.folders):
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            try:
                data = Path(entry.path).read_bytes()
                records[entry.name[:-5]] = msgspec.json.decode(data, type=FolderRecord)
            except (OSError, msgspec.DecodeError):
                records[entry.name[:-5]] = FolderRecord()
        return records

    def load_scopes(self) -> dict[str, int]:
        """The byte limit of every quota scope that has one."""
        limits: dict[str, int] = {}
        for entry in os.scandir(self.scopes):
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            try:
                record = msgspec.json.decode(Path(entry.path).read_bytes(), type=_ScopeRecord)
            except (OSError, msgspec.DecodeError):
                continue
            if record.limit is not None:
                limits[_scope_of(entry.name)] = record.limit
        return limits

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
