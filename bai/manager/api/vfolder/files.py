"""``/folders``: the routes that work on the files inside a folder, and the volumes' admin views.

The manager never touches a folder's bytes: each route checks the caller's
permission on the folder (:func:`~bai.manager.vfolders.access.find_folder`),
checks every path it was given, and asks the folder's storage proxy
(:mod:`bai.common.storage_api`) to act; bulk transfers go from the client to
the proxy's client-facing API with the token a ``request-*`` route handed
out.

* ``POST /folders/:name/mkdir`` ``{path, parents, exist_ok}`` (rw) -- 201 ``{}``;
* ``GET /folders/:name/files`` ``{path}`` (ro) -- ``{"items": [{name, type,
  size, mode, created, modified, symlink_target}], "files": JSON text of
  [{filename, type, size, mode, ctime, atime, mtime}]}`` (the official CLI
  reads ``files``; ``mode`` there is ``ls -l`` style, in ``items`` the
  permission bits in octal);
* ``POST /folders/:name/request-upload`` ``{path, size}`` (rw) --
  ``{"token", "url"}``, ``url`` the proxy's tus endpoint ``.../upload``;
  refused with 413 ``storage/QuotaExceeded`` (``field: size``) when *size*
  alone is over the folder's quota, and with the proxy's 413 when the upload
  would exceed a quota or ``max-upload-size``;
* ``POST /folders/:name/request-download`` ``{path, archive}`` (ro) --
  ``{"token", "url"}``, ``url`` the proxy's ``.../download``;
* ``POST /folders/:name/move-file`` ``{src, dst}`` (rw) -- ``{}``;
* ``POST /folders/:name/rename-file`` and ``rename_file`` ``{target_path,
  new_name, is_dir}`` (rw) -- ``{}``; ``is_dir`` is accepted and not needed
  (the proxy renames files and directories alike, as the original's proxy
  does);
* ``DELETE /folders/:name/delete-files`` and ``delete_files`` ``{files,
  recursive}`` (rw, as in the original: ``wd`` is for deleting the folder
  itself) -- ``{}``;
* ``GET /folders/_/perf-metric`` ``{folder_host}`` (superadmin) --
  ``{"metric": {name: number}}``, the numbers of the proxy's metric (the
  official CLI formats every value as a number, so the proxy's other
  entries, such as the block device's name, are left out);
* ``GET /folders/_/fstab`` ``{agent_id}`` (superadmin) -- ``{"content",
  "node", "node_id"}``: an fstab-style table of the volumes the storage
  proxies serve (bai reads no host file: ``fstab_path`` is refused);
* ``GET /folders/_/mounts`` (superadmin) -- ``{"manager", "storage-proxy",
  "agents"}``, each ``{"success", "mounts", "message"}``: the manager and the
  agents mount nothing themselves (agents bind the proxies' folder paths
  per kernel), the storage proxies' entry lists ``[PROXY:VOLUME, path]``.

Parameters come from the JSON body or, when the query string names any of a
route's keys, from the query string (the official client sends the
parameters of ``GET`` and ``DELETE`` routes as a body).  Every path goes
through :func:`~bai.common.storage_api.check_relpath` with the route's key as
the field (``path``, ``src``, ``dst``, ``target_path``, ``files.N``), so a
path that could leave the folder is a 400 naming that key before anything
reaches the proxy; the proxy checks again, and its errors come back with
their status and with ``field`` renamed to the route's key.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, Literal

import msgspec
import sqlalchemy as sa
from quart import Response

from bai.common.storage_api import (
    MAX_DELETE_FILES,
    CreateDownload,
    CreateUpload,
    DeleteFiles,
    ListFiles,
    Mkdir,
    MoveFile,
    RenameFile,
    VolumeArgs,
    check_file_name,
    check_relpath,
)
from bai.manager.api.auth import auth_required, current_auth, superadmin_required
from bai.manager.api.errors import NotFound
from bai.manager.api.helpers import InvalidParameter, current_ctx, json_response, read_json
from bai.manager.api.vfolder.params import read_args
from bai.manager.models.resource import agents
from bai.manager.vfolders.access import FolderAccess, find_folder
from bai.manager.vfolders.proxies import StorageProxyError, split_host

__all__ = ["FILE_ROUTES"]


async def _folder(name: str, need: Literal["ro", "rw", "wd"]) -> FolderAccess:
    """The folder *name* of the caller with at least *need* (404, 403, or 409 while busy)."""
    return await find_folder(current_ctx(), current_auth(), name, need=need)


async def _call(folder: FolderAccess, route: str, body: msgspec.Struct, **fields: str) -> Any:
    return await current_ctx().storage.call(folder.proxy, route, body, fields=fields)


# ------------------------------------------------------------------------- mkdir


class _MkdirBody(msgspec.Struct, kw_only=True):
    path: str
    parents: bool = False
    exist_ok: bool = False


@auth_required
async def mkdir(name: str) -> Response:
    """``POST /folders/:name/mkdir``."""
    body = await read_json(_MkdirBody)
    relpath = check_relpath(body.path, field="path", allow_root=False)
    folder = await _folder(name, "rw")
    args = Mkdir(
        volume=folder.volume,
        vfid=folder.vfid,
        relpath=relpath,
        parents=body.parents,
        exist_ok=body.exist_ok,
    )
    await _call(folder, "/folder/file/mkdir", args, relpath="path")
    return json_response({}, status=201)


# ------------------------------------------------------------------------- files


class _FilesQuery(msgspec.Struct, kw_only=True):
    path: str = ""


class _Stat(msgspec.Struct):
    size: int
    mode: int
    created: str
    modified: str


class _Entry(msgspec.Struct):
    name: str
    type: str
    stat: _Stat
    symlink_target: str = ""


class _Listing(msgspec.Struct):
    items: list[_Entry]


def _timestamp(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        raise StorageProxyError.failed(f"the storage proxy sent a bad timestamp {iso!r}") from None


def listing_json(reply: Any) -> dict[str, Any]:
    """The ``files`` route's answer for the proxy's ``folder/file/list`` *reply* (module docs)."""
    try:
        listing = msgspec.convert(reply, _Listing)
    except msgspec.ValidationError as exc:
        raise StorageProxyError.failed(f"the storage proxy listed files badly: {exc}") from None
    items = [
        {
            "name": entry.name,
            "type": entry.type,
            "size": entry.stat.size,
            "mode": oct(stat.S_IMODE(entry.stat.mode))[2:].zfill(3),
            "created": entry.stat.created,
            "modified": entry.stat.modified,
            "symlink_target": entry.symlink_target,
        }
        for entry in listing.items
    ]
    files = [
        {
            "filename": entry.name,
            "type": entry.type,
            "size": entry.stat.size,
            "mode": stat.filemode(entry.stat.mode),
            "ctime": _timestamp(entry.stat.created),
            "atime": 0,
            "mtime": _timestamp(entry.stat.modified),
        }
        for entry in listing.items
    ]
    return {"items": items, "files": msgspec.json.encode(files).decode()}


@auth_required
async def list_files(name: str) -> Response:
    """``GET /folders/:name/files``."""
    query = await read_args(_FilesQuery)
    relpath = check_relpath(query.path, field="path")
    folder = await _folder(name, "ro")
    args = ListFiles(volume=folder.volume, vfid=folder.vfid, relpath=relpath)
    reply = await _call(folder, "/folder/file/list", args, relpath="path")
    return json_response(listing_json(reply))


# ------------------------------------------------------------------------- transfers


class _UploadBody(msgspec.Struct, kw_only=True):
    path: str
    size: int


class _DownloadBody(msgspec.Struct, kw_only=True):
    path: str
    archive: bool = False


class _Token(msgspec.Struct):
    token: str


async def _transfer(folder: FolderAccess, route: str, args: msgspec.Struct, endpoint: str) -> Any:
    reply = await _call(folder, route, args, relpath="path")
    try:
        token = msgspec.convert(reply, _Token).token
    except msgspec.ValidationError:
        raise StorageProxyError.failed("the storage proxy answered without a token") from None
    url = await current_ctx().storage.client_url(folder.proxy, endpoint)
    return {"token": token, "url": url}


@auth_required
async def request_upload(name: str) -> Response:
    """``POST /folders/:name/request-upload``."""
    body = await read_json(_UploadBody)
    relpath = check_relpath(body.path, field="path", allow_root=False)
    if body.size < 0:
        raise InvalidParameter("an upload's size is a number of bytes, 0 or more", field="size")
    folder = await _folder(name, "rw")
    if folder.quota is not None and body.size > folder.quota:
        raise StorageProxyError(
            413,
            "QuotaExceeded",
            f"{body.size} bytes do not fit in the folder's quota of {folder.quota} bytes",
            field="size",
        )
    args = CreateUpload(volume=folder.volume, vfid=folder.vfid, relpath=relpath, size=body.size)
    return json_response(await _transfer(folder, "/folder/file/upload", args, "/upload"))


@auth_required
async def request_download(name: str) -> Response:
    """``POST /folders/:name/request-download``."""
    body = await read_json(_DownloadBody)
    relpath = check_relpath(body.path, field="path")
    folder = await _folder(name, "ro")
    args = CreateDownload(
        volume=folder.volume, vfid=folder.vfid, relpath=relpath, archive=body.archive
    )
    return json_response(await _transfer(folder, "/folder/file/download", args, "/download"))


# ------------------------------------------------------------------------- move, rename, delete


class _MoveBody(msgspec.Struct, kw_only=True):
    src: str
    dst: str


class _RenameBody(msgspec.Struct, kw_only=True):
    target_path: str
    new_name: str
    is_dir: bool = False


class _DeleteBody(msgspec.Struct, kw_only=True):
    files: list[str]
    recursive: bool = False


@auth_required
async def move_file(name: str) -> Response:
    """``POST /folders/:name/move-file``."""
    body = await read_json(_MoveBody)
    src = check_relpath(body.src, field="src", allow_root=False)
    dst = check_relpath(body.dst, field="dst")
    folder = await _folder(name, "rw")
    args = MoveFile(volume=folder.volume, vfid=folder.vfid, src_relpath=src, dst_relpath=dst)
    await _call(folder, "/folder/file/move", args, src_relpath="src", dst_relpath="dst")
    return json_response({})


@auth_required
async def rename_file(name: str) -> Response:
    """``POST /folders/:name/rename-file`` (and ``rename_file``)."""
    body = await read_json(_RenameBody)
    relpath = check_relpath(body.target_path, field="target_path", allow_root=False)
    new_name = check_file_name(body.new_name)
    folder = await _folder(name, "rw")
    args = RenameFile(volume=folder.volume, vfid=folder.vfid, relpath=relpath, new_name=new_name)
    await _call(folder, "/folder/file/rename", args, relpath="target_path")
    return json_response({})


@auth_required
async def delete_files(name: str) -> Response:
    """``DELETE /folders/:name/delete-files`` (and ``delete_files``)."""
    body = await read_args(_DeleteBody, lists=("files",))
    if not body.files:
        raise InvalidParameter("name at least one file to delete", field="files")
    if len(body.files) > MAX_DELETE_FILES:
        raise InvalidParameter(
            f"at most {MAX_DELETE_FILES} files per request", field="files", value=len(body.files)
        )
    relpaths = [
        check_relpath(path, field=f"files.{index}", allow_root=False)
        for index, path in enumerate(body.files)
    ]
    folder = await _folder(name, "rw")
    args = DeleteFiles(
        volume=folder.volume, vfid=folder.vfid, relpaths=relpaths, recursive=body.recursive
    )
    await _call(folder, "/folder/file/delete", args, relpaths="files")
    return json_response({})


# ------------------------------------------------------------------------- admin views


class _PerfQuery(msgspec.Struct, kw_only=True):
    folder_host: str


class _FstabQuery(msgspec.Struct, kw_only=True):
    agent_id: str | None = None
    fstab_path: str | None = None


@superadmin_required
async def perf_metric() -> Response:
    """``GET /folders/_/perf-metric``."""
    query = await read_args(_PerfQuery)
    proxy, volume = split_host(query.folder_host, field="folder_host")
    reply = await current_ctx().storage.call(
        proxy,
        "/volume/performance-metric",
        VolumeArgs(volume=volume),
        fields={"volume": "folder_host"},
    )
    if not isinstance(reply, Mapping) or not isinstance(reply.get("metric"), Mapping):
        raise StorageProxyError.failed(f"the storage proxy {proxy!r} sent no metric")
    numbers = {
        str(key): value
        for key, value in reply["metric"].items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    return json_response({"metric": numbers})


async def _volume_table() -> tuple[list[list[str]], list[str]]:
    """``[PROXY:VOLUME, path]`` of every volume, and one message per proxy that did not answer."""
    storage = current_ctx().storage
    mounts: list[list[str]] = []
    problems: list[str] = []
    for proxy in await storage.names():
        try:
            volumes = await storage.volumes(proxy)
        except StorageProxyError as exc:
            problems.append(f"{proxy}: {exc}")
            continue
        mounts.extend(
            [f"{proxy}:{volume['name']}", str(volume.get("path", ""))] for volume in volumes
        )
    return mounts, problems


@superadmin_required
async def fstab() -> Response:
    """``GET /folders/_/fstab``."""
    query = await read_args(_FstabQuery)
    if query.fstab_path is not None:
        raise InvalidParameter(
            "bai reads no host file: the volumes come from the storage proxies",
            field="fstab_path",
            value=query.fstab_path,
        )
    ctx = current_ctx()
    node, node_id = "manager", ctx.config.manager.id
    if query.agent_id is not None:
        async with ctx.db.begin_readonly() as conn:
            found = await conn.execute(sa.select(agents.c.id).where(agents.c.id == query.agent_id))
            if found.first() is None:
                raise NotFound(f"no agent {query.agent_id!r}")
        node, node_id = "agent", query.agent_id
    mounts, problems = await _volume_table()
    lines = ["# volume path\tvfolder host\ttype\toptions\tdump\tpass"]
    lines += [f"{path}\t{host}\tnone\tbind\t0\t0" for host, path in mounts]
    lines += [f"# unavailable: {problem}" for problem in problems]
    return json_response({"content": "\n".join(lines) + "\n", "node": node, "node_id": node_id})


@superadmin_required
async def mounts() -> Response:
    """``GET /folders/_/mounts``."""
    table, problems = await _volume_table()
    return json_response(
        {
            "manager": {
                "success": True,
                "mounts": [],
                "message": "the manager mounts no volume: the storage proxies serve them",
            },
            "storage-proxy": {
                "success": not problems,
                "mounts": table,
                "message": "; ".join(problems),
            },
            "agents": {},
        }
    )


#: This module's routes on the ``/folders`` blueprint: (path, view, method).
FILE_ROUTES: Final = (
    ("/_/perf-metric", perf_metric, "GET"),
    ("/_/fstab", fstab, "GET"),
    ("/_/mounts", mounts, "GET"),
    ("/<name>/mkdir", mkdir, "POST"),
    ("/<name>/files", list_files, "GET"),
    ("/<name>/request-upload", request_upload, "POST"),
    ("/<name>/request-download", request_download, "POST"),
    ("/<name>/move-file", move_file, "POST"),
    ("/<name>/rename-file", rename_file, "POST"),
    ("/<name>/rename_file", rename_file, "POST"),
    ("/<name>/delete-files", delete_files, "DELETE"),
    ("/<name>/delete_files", delete_files, "DELETE"),
)
