"""Folders in sessions: resolving a new session's mounts, and who mounts a folder now.

:func:`resolve_mounts` turns ``config.mounts`` and ``config.mount_map`` of
``POST /session`` into the session row's ``vfolder_mounts`` entries
``{"name", "vfid", "host", "host_path", "kernel_path", "mode"}``:

* each named folder is found as :func:`~bai.manager.vfolders.access.find_folder`
  finds it for the session's owner (404 when the owner cannot reach it, 409
  when it is busy); ``mode`` is ``rw`` when the owner may write to it
  (``rw`` or ``wd``), else ``ro``;
* ``kernel_path`` is :func:`bai.common.storage_api.kernel_mount_path` of the
  name and the folder's ``mount_map`` entry (``/home/work/NAME`` without
  one); ``mount_map`` may name a folder by the name or id used in
  ``mounts``;
* every live folder the owner owns whose name starts with a dot is added
  (``/home/work/.NAME``, ``rw``) unless it is named already: ``.local``
  keeps ``pip install --user`` across sessions;
* ``host_path`` is what the folder's storage proxy answers to ``folder/mount``;
* a folder named twice is refused (400 naming ``config.mounts.N``), and so
  are two folders at overlapping kernel paths (400 naming the later one's
  ``config.mount_map.NAME``, or ``config.mounts.N`` when it has no map
  entry); a dot-folder whose path overlaps a named folder's is left out;
* at most :data:`~bai.common.agent_api.MAX_MOUNTS` folders in all, and
  every entry is one an agent accepts (:class:`~bai.common.agent_api.VFolderMount`).

Every refusal of one folder names its entry (:class:`MountRefused` keeps the
status and problem type of the cause: 404 ``vfolder-not-found``, 403, 409, a
proxy's 4xx, 502 or 503).  Nothing is written: the registry stores the
entries with the session.

:func:`sessions_mounting` lists the live sessions whose ``vfolder_mounts``
name a folder; deleting a folder calls it after locking the folder's row,
and the registry's enqueue locks the rows of the folders it mounts, so a
deletion and a session start cannot both succeed.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import msgspec
import sqlalchemy as sa

from bai.common.agent_api import MAX_MOUNTS, VFolderMount, paths_overlap
from bai.common.errors import BaiError, InvalidValue
from bai.common.storage_api import FolderArgs, kernel_mount_path
from bai.common.types import ACTIVE_STATUSES
from bai.manager.db import Connection
from bai.manager.models.session import sessions
from bai.manager.models.vfolder import vfolders
from bai.manager.protocols import StorageClient
from bai.manager.vfolders.access import (
    USABLE_STATUSES,
    Caller,
    FolderAccess,
    FolderContext,
    accessible_folders,
    check_need,
    find_folder_in,
    viewer_of,
)
from bai.manager.vfolders.errors import InvalidFolderInput, VFolderError, VFolderNotReady
from bai.manager.vfolders.proxies import StorageProxyError
from bai.manager.vfolders.rules import Permission

__all__ = ["MountContext", "MountRefused", "resolve_mounts", "sessions_mounting"]


class MountContext(FolderContext, Protocol):
    """What mount resolution needs of the manager: the database and the storage proxies."""

    @property
    def storage(self) -> StorageClient: ...


def _entry(folder: FolderAccess, host_path: str, kernel_path: str) -> dict[str, str]:
    """One ``vfolder_mounts`` entry (module docs)."""
    return {
        "name": folder.name,
        "vfid": folder.vfid,
        "host": folder.host,
        "host_path": host_path,
        "kernel_path": kernel_path,
        "mode": "rw" if folder.level >= Permission.RW else "ro",
    }


def _map_key(mount_map: Mapping[str, str], ref: str, folder: FolderAccess) -> str | None:
    """The key of *folder*'s entry in *mount_map*: *ref*, its name, vfid or id (None: none)."""
    return next(
        (k for k in (ref, folder.name, folder.vfid, str(folder.id)) if k in mount_map), None
    )


class MountRefused(BaiError):
    """A folder of ``config.mounts`` that cannot be mounted, naming the entry in ``field``.

    It answers with the status, problem type and title of its *cause* (404
    ``vfolder-not-found``, 403, 409, a storage proxy's 5xx...), so the client
    sees the usual problem plus which entry it is about.
    """

    def __init__(self, cause: BaseException, field: str, folder: str | None = None) -> None:
        about = f"the folder {folder!r}: " if folder is not None else ""
        super().__init__(f"{field}: {about}{cause}")
        self.http_status: int = getattr(cause, "http_status", 400)
        self.error_type: str = getattr(cause, "error_type", "invalid-api-params")
        self.error_title: str = getattr(cause, "error_title", "Virtual folder cannot be mounted.")
        self.extra_data: Any = getattr(cause, "extra_data", None)
        self.field = field
        self.cause = cause


@contextlib.contextmanager
def _naming(field: str, folder: str | None = None) -> Iterator[None]:
    """Errors of looking up or locating one folder, re-raised naming *field* (and *folder*)."""
    try:
        yield
    except InvalidValue:
        raise
    except (VFolderError, StorageProxyError) as exc:
        raise MountRefused(exc, field, folder) from None


def _checked_entry(entry: dict[str, str], field: str) -> dict[str, str]:
    """*entry* if an agent would accept it; the proxy's odd mount path is 502 naming *field*."""
    try:
        msgspec.convert({k: v for k, v in entry.items() if k != "host"}, VFolderMount)
    except msgspec.ValidationError as exc:
        cause = StorageProxyError.failed(f"the storage proxy's mount path is unusable: {exc}")
        raise MountRefused(cause, field, entry["name"]) from None
    return entry


async def resolve_mounts(
    ctx: MountContext,
    auth: Caller,
    names: Sequence[str],
    mount_map: Mapping[str, str] | None = None,
    *,
    field: str = "config.mounts",
    map_field: str = "config.mount_map",
) -> list[dict[str, str]]:
    """The ``vfolder_mounts`` of a new session of *auth*'s owner (module docs).

    Each refusal names the entry: ``config.mounts.N`` for a folder that is
    not found (404), not permitted (403), busy (409), named twice (400) or
    whose proxy fails (its 4xx, or 502/503); ``config.mount_map.NAME`` for a
    bad path or one that overlaps another folder's (400).  A dot-folder
    whose path a named folder covers (or lies inside) is left out.
    """
    viewer = viewer_of(auth)
    paths = dict(mount_map or {})
    # (folder, requested path, field naming the folder, field naming its path)
    chosen: list[tuple[FolderAccess, str | None, str, str]] = []
    seen: dict[uuid.UUID, int] = {}
    async with ctx.db.begin_readonly() as conn:
        for index, ref in enumerate(names):
            where = f"{field}.{index}"
            with _naming(where):
                folder = await find_folder_in(conn, viewer, ref, need="ro")
                if folder.status not in USABLE_STATUSES:
                    raise VFolderNotReady(
                        f"the folder {folder.name!r} is {folder.status} right now"
                    )
            if folder.id in seen:
                raise InvalidFolderInput(
                    f"names the same folder as {field}.{seen[folder.id]}", field=where, value=ref
                )
            seen[folder.id] = index
            key = _map_key(paths, ref, folder)
            if key is None:
                chosen.append((folder, None, where, where))
            else:
                chosen.append((folder, paths[key], where, f"{map_field}.{key}"))
        private = await accessible_folders(
            conn,
            viewer,
            vfolders.c.name.startswith(".", autoescape=True),
            shared=False,
            project=False,
        )
    planned: list[tuple[FolderAccess, str, str, str]] = []
    for folder, requested, where, path_field in chosen:
        kernel_path = kernel_mount_path(folder.name, requested, field=path_field)
        for earlier, earlier_path, earlier_where, _ in planned:
            if paths_overlap(kernel_path, earlier_path):
                raise InvalidFolderInput(
                    f"mounts {folder.name!r} at {kernel_path}, which overlaps where "
                    f"{earlier_where} ({earlier.name!r}) is mounted: {earlier_path}",
                    field=path_field,
                    value=requested or folder.name,
                )
        planned.append((folder, kernel_path, where, path_field))
    for folder in private:
        if not folder.is_owner or folder.id in seen:
            continue
        try:
            check_need(folder, "rw")
        except VFolderError:
            continue  # a private folder being cloned is left out, not an error
        kernel_path = kernel_mount_path(folder.name, None, field=f"{map_field}.{folder.name}")
        if any(paths_overlap(kernel_path, other) for _, other, _, _ in planned):
            continue  # the caller put a folder of its choice there
        # No entry of the request names it: a refusal names the list.
        planned.append((folder, kernel_path, field, field))
    if len(planned) > MAX_MOUNTS:
        raise InvalidFolderInput(
            f"a session mounts at most {MAX_MOUNTS} folders, dot-folders included "
            f"({len(planned) - len(chosen)} of them here)",
            field=field,
            value=len(planned),
        )
    entries: list[dict[str, str]] = []
    for folder, kernel_path, where, _ in planned:
        with _naming(where, folder.name):
            info: Any = await ctx.storage.call(
                folder.proxy, "/folder/mount", FolderArgs(volume=folder.volume, vfid=folder.vfid)
            )
        host_path = info.get("path") if isinstance(info, Mapping) else None
        if not isinstance(host_path, str) or not host_path:
            cause = StorageProxyError.failed("the storage proxy gave no mount path")
            raise MountRefused(cause, where, folder.name)
        entries.append(_checked_entry(_entry(folder, host_path, kernel_path), where))
    return entries


async def sessions_mounting(
    conn: Connection, folder_ids: Sequence[uuid.UUID]
) -> list[dict[str, str]]:
    """The live sessions (not terminated or cancelled) whose mounts name one of *folder_ids*,
    as ``{"id", "name", "access_key", "vfid"}``."""
    wanted = {folder_id.hex for folder_id in folder_ids}
    if not wanted:
        return []
    rows = await conn.execute(
        sa.select(sessions.c.id, sessions.c.name, sessions.c.access_key, sessions.c.vfolder_mounts)
        .where(sessions.c.status.in_(sorted(ACTIVE_STATUSES)))
        .order_by(sessions.c.created_at)
    )
    found: list[dict[str, str]] = []
    for row in rows:
        for entry in row.vfolder_mounts or ():
            vfid = entry.get("vfid") if isinstance(entry, Mapping) else None
            if vfid in wanted:
                found.append(
                    {
                        "id": str(row.id),
                        "name": row.name,
                        "access_key": row.access_key,
                        "vfid": str(vfid),
                    }
                )
    return found
