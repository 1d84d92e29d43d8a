"""The manager-facing API: folders, files, quotas and transfer tokens (quart-trio).

Every request must carry the shared secret (``[api.manager] secret``) in
:data:`~bai.common.storage_api.AUTH_HEADER`; without it, or with another
one, the answer is 401 Unauthorized whatever the route (unknown routes
included), and nothing changes.  The one exception is ``GET /metrics``
(:data:`METRICS_PATH`, :mod:`bai.storage.metrics`): Prometheus scrapers send
no secret, and the page names volumes only.  Routes, bodies and replies are those of
:mod:`bai.common.storage_api`: bodies are parsed into its frozen structs
(unknown keys refused), every refusal is an RFC 7807 body with one of its
error types (:mod:`bai.storage.errors`), and a refused request changes
nothing.
"""

from __future__ import annotations

import hmac
import os
import stat
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import msgspec
from quart import Quart, Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from bai.common import storage_api as api
from bai.common.metrics import CONTENT_TYPE, exposition, snapshot
from bai.common.storage_api import StorageErrorType, TokenClaims, check_relpath
from bai.storage.context import StorageContext
from bai.storage.errors import PROBLEM_CONTENT_TYPE, StorageError, http_problem, problem_of
from bai.storage.metrics import storage_families

__all__ = ["API_VERSION", "MAX_BODY", "create_manager_app"]

#: The version of this API that ``GET /`` reports.
API_VERSION: Final = 1
#: The largest request body read (1,000 relpaths of 4 KiB each, with room to spare).
MAX_BODY: Final = 8 * 1024 * 1024
#: The one route answered without the manager's secret.
METRICS_PATH: Final = "/metrics"

B = TypeVar("B", bound=api._Body)
Handler = Callable[[StorageContext, Any], Awaitable[Any]]

_NO_CONTENT: Final = 204


def _json(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status=status, content_type="application/json")


def _problem(exc: BaseException) -> Response:
    status, body, headers = problem_of(exc)
    response = Response(msgspec.json.encode(body), status=status, content_type=PROBLEM_CONTENT_TYPE)
    response.headers.update(headers)
    return response


async def _body(kind: type[B]) -> B:
    data = await request.get_data(cache=False)
    try:
        document = msgspec.json.decode(data) if data else {}
    except msgspec.DecodeError as exc:
        raise api.InvalidRequest(f"the body is not JSON ({exc})", field="body") from None
    if not isinstance(document, dict):
        raise api.InvalidRequest("the body must be a JSON object", field="body")
    return api.parse(document, kind)


# ------------------------------------------------------------------ handlers


async def _status(ctx: StorageContext, _: None) -> Any:
    reply: api.ProxyStatus = {
        "status": "running",
        "node_id": ctx.config.storage_proxy.node_id,
        "api_version": API_VERSION,
    }
    return reply


async def _volumes(ctx: StorageContext, _: None) -> Any:
    return {"volumes": [volume.info() for volume in ctx.volumes.values()]}


async def _metric(ctx: StorageContext, body: api.VolumeArgs) -> Any:
    return {"metric": await ctx.volume(body.volume).performance_metric()}


async def _scope(ctx: StorageContext, body: api.QuotaScopeArgs) -> Any:
    return await ctx.volume(body.volume).scope_info(body.quota_scope)


async def _scope_update(ctx: StorageContext, body: api.QuotaScopeUpdate) -> Any:
    return await ctx.volume(body.volume).set_scope_limit(body.quota_scope, body.limit)


async def _create(ctx: StorageContext, body: api.CreateFolder) -> None:
    await ctx.volume(body.volume).create_folder(body.vfid, body.quota_scope, body.quota)


async def _delete(ctx: StorageContext, body: api.FolderArgs) -> None:
    await ctx.volume(body.volume).delete_folder(body.vfid)


async def _clone(ctx: StorageContext, body: api.CloneFolder) -> None:
    src = ctx.volume(body.volume)
    dst = ctx.volume(body.dst_volume, field="dst_volume")
    await src.clone_folder(body.vfid, dst, body.dst_vfid, body.dst_quota_scope)


async def _mount(ctx: StorageContext, body: api.FolderArgs) -> Any:
    reply: api.MountInfo = {"path": await ctx.volume(body.volume).mount_path(body.vfid)}
    return reply


async def _usage(ctx: StorageContext, body: api.FolderArgs) -> Any:
    return await ctx.volume(body.volume).usage(body.vfid)


async def _quota(ctx: StorageContext, body: api.FolderArgs) -> Any:
    return {"quota": await ctx.volume(body.volume).get_quota(body.vfid)}


async def _quota_update(ctx: StorageContext, body: api.FolderQuota) -> None:
    await ctx.volume(body.volume).set_quota(body.vfid, body.quota)


async def _mkdir(ctx: StorageContext, body: api.Mkdir) -> None:
    await ctx.volume(body.volume).mkdir(
        body.vfid, body.relpath, parents=body.parents, exist_ok=body.exist_ok
    )


async def _list(ctx: StorageContext, body: api.ListFiles) -> Any:
    return {"items": await ctx.volume(body.volume).list_files(body.vfid, body.relpath)}


async def _rename(ctx: StorageContext, body: api.RenameFile) -> None:
    await ctx.volume(body.volume).rename(body.vfid, body.relpath, body.new_name)


async def _move(ctx: StorageContext, body: api.MoveFile) -> None:
    await ctx.volume(body.volume).move(body.vfid, body.src_relpath, body.dst_relpath)


async def _delete_files(ctx: StorageContext, body: api.DeleteFiles) -> None:
    await ctx.volume(body.volume).delete_files(body.vfid, body.relpaths, recursive=body.recursive)


async def _upload(ctx: StorageContext, body: api.CreateUpload) -> Any:
    volume = ctx.volume(body.volume)
    relpath = check_relpath(body.relpath, allow_root=False)
    ctx.check_upload_size(body.size)
    # The session expires with its token (the token's exp is whole seconds).
    now = time.time()
    expires = float(int(now + ctx.signer.lifetime))
    session = await volume.start_upload(body.vfid, relpath, body.size, expires)
    claims = TokenClaims(
        op="upload",
        volume=body.volume,
        vfid=body.vfid,
        relpath=relpath,
        size=body.size,
        session=session,
    )
    token, _ = ctx.signer.issue(claims, now=now)
    reply: api.TransferToken = {"token": token}
    return reply


async def _download(ctx: StorageContext, body: api.CreateDownload) -> Any:
    volume = ctx.volume(body.volume)
    relpath = check_relpath(body.relpath)
    fd, st = await volume.open_download(body.vfid, relpath)
    os.close(fd)
    if stat.S_ISDIR(st.st_mode) and not body.archive:
        raise StorageError(
            StorageErrorType.INVALID_REQUEST,
            f"{relpath} is a folder: download it with archive=true",
            field="archive",
        )
    claims = TokenClaims(
        op="download", volume=body.volume, vfid=body.vfid, relpath=relpath, archive=body.archive
    )
    token, _ = ctx.signer.issue(claims)
    reply: api.TransferToken = {"token": token}
    return reply


#: (path, body type or None for GET, handler) of every route.
ROUTES: Final[tuple[tuple[str, type[api._Body] | None, Handler], ...]] = (
    ("/", None, _status),
    ("/volumes", None, _volumes),
    ("/volume/performance-metric", api.VolumeArgs, _metric),
    ("/quota-scope", api.QuotaScopeArgs, _scope),
    ("/quota-scope/update", api.QuotaScopeUpdate, _scope_update),
    ("/folder/create", api.CreateFolder, _create),
    ("/folder/delete", api.FolderArgs, _delete),
    ("/folder/clone", api.CloneFolder, _clone),
    ("/folder/mount", api.FolderArgs, _mount),
    ("/folder/usage", api.FolderArgs, _usage),
    ("/folder/quota", api.FolderArgs, _quota),
    ("/folder/quota/update", api.FolderQuota, _quota_update),
    ("/folder/file/mkdir", api.Mkdir, _mkdir),
    ("/folder/file/list", api.ListFiles, _list),
    ("/folder/file/rename", api.RenameFile, _rename),
    ("/folder/file/move", api.MoveFile, _move),
    ("/folder/file/delete", api.DeleteFiles, _delete_files),
    ("/folder/file/upload", api.CreateUpload, _upload),
    ("/folder/file/download", api.CreateDownload, _download),
)


def _view(ctx: StorageContext, kind: type[api._Body] | None, handler: Handler) -> Any:
    async def view() -> Response:
        body = None if kind is None else await _body(kind)
        reply = await handler(ctx, body)
        return Response(b"", status=_NO_CONTENT) if reply is None else _json(reply)

    return view


def create_manager_app(ctx: StorageContext) -> Quart:
    """The manager-facing app of the proxy *ctx*."""
    app = QuartTrio(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.url_map.strict_slashes = False
    secret = ctx.config.api.manager.secret.encode()

    @app.before_request
    async def guard() -> None:
        if request.path == METRICS_PATH:
            return
        given = request.headers.get(api.AUTH_HEADER, "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, secret):
            raise StorageError(
                StorageErrorType.UNAUTHORIZED,
                f"the manager's shared secret is missing or wrong ({api.AUTH_HEADER})",
            )

    async def metrics() -> Response:
        page = exposition(snapshot(await storage_families(ctx.volumes)))
        return Response(page, status=200, content_type=CONTENT_TYPE)

    app.add_url_rule(METRICS_PATH, "metrics", metrics, methods=["GET"])
    for path, kind, handler in ROUTES:
        name = path.strip("/").replace("/", "_").replace("-", "_") or "status"
        method = "GET" if kind is None else "POST"
        app.add_url_rule(path, name, _view(ctx, kind, handler), methods=[method])

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        response = Response(
            msgspec.json.encode(http_problem(status, exc.description or exc.name)),
            status=status,
            content_type=PROBLEM_CONTENT_TYPE,
        )
        if status == 405:
            response.headers.update(dict(exc.get_headers()))
            response.headers["Content-Type"] = PROBLEM_CONTENT_TYPE
        return response

    @app.errorhandler(Exception)
    async def error(exc: Exception) -> Response:
        return _problem(exc)

    return app
