"""The interface every volume backend implements.

A volume is one directory tree the proxy serves (``[volume.NAME]``); its
backend decides how folders are laid out, how quotas are enforced and how
performance is measured.  The manager-facing API calls these methods with
bodies already validated by :mod:`bai.common.storage_api`; the client-facing
API uses the transfer methods.  Every method is async (blocking file I/O runs
in ``trio.to_thread``) and raises :class:`~bai.storage.errors.StorageError`
for whatever the caller got wrong; a refused call changes nothing.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bai.common.storage_api import DirEntry, FolderUsage, QuotaScopeInfo, VolumeInfo
from bai.storage.volumes.uploads import UploadRegistry

__all__ = ["Volume", "VolumeTotals"]


@dataclass(frozen=True, slots=True)
class VolumeTotals:
    """What a volume holds by the proxy's own accounting (as of its last usage scan)."""

    folders: int
    files: int
    used_bytes: int


class Volume(abc.ABC):
    """One volume of the proxy."""

    #: The backend's name in ``[volume.NAME] backend``.
    backend: ClassVar[str]
    #: What the backend can do (``vfolder``, ``quota``, ``metric``).
    capabilities: ClassVar[tuple[str, ...]]

    name: str
    path: Path
    uploads: UploadRegistry

    def info(self) -> VolumeInfo:
        """The volume as ``GET /volumes`` lists it."""
        return {
            "name": self.name,
            "backend": self.backend,
            "path": str(self.path),
            "capabilities": list(self.capabilities),
        }

    @abc.abstractmethod
    def totals(self) -> VolumeTotals:
        """The folders, files and bytes the volume holds, from memory (no I/O)."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Prepare the volume (its metadata folder, records, sessions left by an earlier run)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release what :meth:`open` holds."""

    # ------------------------------------------------------------ folders

    @abc.abstractmethod
    async def create_folder(self, vfid: str, quota_scope: str, quota: int | None) -> None:
        """Make the empty folder *vfid* (FolderExists if it exists)."""

    @abc.abstractmethod
    async def delete_folder(self, vfid: str) -> None:
        """Remove folder *vfid* and everything in it, for good."""

    @abc.abstractmethod
    async def clone_folder(
        self, vfid: str, dst: Volume, dst_vfid: str, dst_quota_scope: str
    ) -> None:
        """Copy folder *vfid* to the new folder *dst_vfid* of *dst* (FolderExists if it exists)."""

    @abc.abstractmethod
    async def mount_path(self, vfid: str) -> str:
        """The absolute host path of folder *vfid*'s root."""

    @abc.abstractmethod
    async def usage(self, vfid: str) -> FolderUsage:
        """What folder *vfid* holds now."""

    @abc.abstractmethod
    async def get_quota(self, vfid: str) -> int | None:
        """The byte quota of folder *vfid* (None: none)."""

    @abc.abstractmethod
    async def set_quota(self, vfid: str, quota: int | None) -> None:
        """Set (None: remove) the byte quota of folder *vfid*."""

    @abc.abstractmethod
    async def scope_info(self, scope: str) -> QuotaScopeInfo:
        """What the folders of quota scope *scope* use, and its limit."""

    @abc.abstractmethod
    async def set_scope_limit(self, scope: str, limit: int | None) -> QuotaScopeInfo:
        """Set (None: remove) the byte limit of quota scope *scope*."""

    @abc.abstractmethod
    async def performance_metric(self) -> dict[str, Any]:
        """The volume's capacity and I/O rates."""

    @abc.abstractmethod
    async def refresh_usage(self) -> None:
        """Rescan every folder's usage (catches writes made from inside kernels)."""

    # ------------------------------------------------------------ files

    @abc.abstractmethod
    async def mkdir(self, vfid: str, relpath: str, *, parents: bool, exist_ok: bool) -> None:
        """Make folder *relpath* in folder *vfid*."""

    @abc.abstractmethod
    async def list_files(self, vfid: str, relpath: str) -> list[DirEntry]:
        """The entries of *relpath* (at most ``scandir-limit``, sorted by name)."""

    @abc.abstractmethod
    async def rename(self, vfid: str, relpath: str, new_name: str) -> None:
        """Rename *relpath* within its folder."""

    @abc.abstractmethod
    async def move(self, vfid: str, src_relpath: str, dst_relpath: str) -> None:
        """Move *src_relpath* to (or into) *dst_relpath*."""

    @abc.abstractmethod
    async def delete_files(self, vfid: str, relpaths: list[str], *, recursive: bool) -> None:
        """Remove *relpaths* (all of them or, when one is refused, none)."""

    # ------------------------------------------------------------ transfers

    @abc.abstractmethod
    async def start_upload(self, vfid: str, relpath: str, size: int, expires: float) -> str:
        """Open an upload session of *size* bytes to *relpath*; answers its id.

        Checks the target path and the quotas; a zero-byte upload is complete
        at once (the empty file is in place when this returns).
        """

    @abc.abstractmethod
    async def check_upload_room(self, session_id: str) -> None:
        """Raise QuotaExceeded if the session's size no longer fits the quotas."""

    @abc.abstractmethod
    async def finish_upload(self, session_id: str) -> None:
        """Put a complete session's staging file in place, atomically, and retire the session."""

    @abc.abstractmethod
    async def open_download(self, vfid: str, relpath: str) -> tuple[int, os.stat_result]:
        """A descriptor of file or folder *relpath* and its ``fstat``; the caller closes it."""
