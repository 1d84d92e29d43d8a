"""The JSON answers of the ``/folders`` routes, with the keys the official client reads.

Ids are 32 hex digits (as the original answers them); timestamps ISO 8601;
``max_size`` is the quota in MiB (the original's unit, rounded up; ``null``
without a quota) and ``quota`` the same in bytes.  ``type`` repeats
``ownership_type`` for older clients.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bai.manager.vfolders.access import FolderAccess
from bai.manager.vfolders.rules import max_size_mib

__all__ = ["created_json", "info_json", "item_json"]


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _id(value: Any) -> str | None:
    return None if value is None else str(value)


def _folder_json(folder: FolderAccess, permission: str) -> dict[str, Any]:
    return {
        "id": folder.vfid,
        "name": folder.name,
        "host": folder.host,
        "usage_mode": folder.usage_mode,
        "permission": permission,
        "max_size": max_size_mib(folder.quota),
        "quota": folder.quota,
        "creator": folder.creator,
        "ownership_type": folder.ownership_type,
        "user": _id(folder.user),
        "group": _id(folder.group),
        "cloneable": folder.cloneable,
        "status": folder.status,
    }


def created_json(folder: FolderAccess) -> dict[str, Any]:
    """The answer of ``POST /folders`` (the spec's Creation Result Object and more);
    ``permission`` is the folder's own (what project members get)."""
    return _folder_json(folder, folder.folder_permission)


def item_json(folder: FolderAccess) -> dict[str, Any]:
    """One Virtual Folder List Item Object; ``permission`` is the caller's."""
    return {
        **_folder_json(folder, folder.permission),
        "created_at": _time(folder.created_at),
        "last_used": _time(folder.last_used),
        "is_owner": folder.is_owner,
        "user_email": folder.user_email,
        "group_name": folder.group_name,
        "type": folder.ownership_type,
        "unmanaged_path": folder.unmanaged_path,
        "max_files": folder.max_files,
        "status_changed": _time(folder.status_changed),
    }


def info_json(folder: FolderAccess, file_count: int, used_bytes: int) -> dict[str, Any]:
    """The Virtual Folder Item Object of ``GET /folders/:name`` (with the legacy keys the
    official CLI reads: ``numFiles``, ``type``)."""
    return {
        **item_json(folder),
        "numFiles": file_count,
        "num_files": file_count,
        "used_bytes": used_bytes,
        "created": _time(folder.created_at),
    }
