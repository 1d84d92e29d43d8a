"""The routes that move files in and out of a session, and read its console log.

* ``GET /session/_/logs?session_name=`` and ``GET /session/:id/logs`` --
  ``{"result": {"logs": text}}``;
* ``POST /session/:id/upload`` -- ``multipart/form-data``, each part a file
  whose ``filename`` is its path under ``/home/work``: at most
  :data:`~bai.manager.sessions.relay.MAX_UPLOAD_FILES` files of
  :data:`~bai.manager.sessions.relay.MAX_UPLOAD_FILE_SIZE` bytes, else 400 and
  nothing is written (204 on success);
* ``GET /session/:id/download`` (``files``, query or JSON body, at most 5) --
  ``multipart/mixed``, one ``application/x-tar`` part per path;
  ``GET /session/:id/download_single?file=`` -- the file's bytes;
  ``GET /session/:id/files?path=`` -- ``{"files": JSON text, "folder_path",
  "errors"}``.

Only regular files and folders are read or written: a path naming (or
passing through) a symbolic link, FIFO, socket or device the session made
is refused with 400, as is a path leaving ``/home/work`` or with a name
longer than 255 bytes; the problem names the parameter (``files``, ``file``
or ``path``) and the path.  The official client sends the parameters of the
``GET`` routes as a JSON body; both that and the query string are read.
"""

from __future__ import annotations

import secrets
from typing import TypeVar

import msgspec
from quart import Response, current_app, request

from bai.manager.api.auth import auth_required, current_auth
from bai.manager.api.helpers import (
    InvalidParameter,
    current_ctx,
    json_response,
    no_content,
    read_json,
    read_params,
    read_query,
)
from bai.manager.api.session.lookup import find_session, translated_errors
from bai.manager.sessions.relay import MAX_UPLOAD_FILE_SIZE, MAX_UPLOAD_FILES

__all__ = ["download", "download_single", "list_files", "logs", "logs_by_query", "upload"]

T = TypeVar("T")


class _LogsQuery(msgspec.Struct, kw_only=True):
    session_name: str


async def _logs_of(ref: str) -> Response:
    info = await find_session(ref, current_auth())
    with translated_errors():
        logs = await current_ctx().registry.get_logs(info)
    return json_response({"result": {"logs": logs}})


@auth_required
async def logs_by_query() -> Response:
    """``GET /session/_/logs?session_name=``: the main kernel's console log."""
    params = await read_params(_LogsQuery)
    return await _logs_of(params.session_name)


@auth_required
async def logs(session_name: str) -> Response:
    """``GET /session/:id/logs``: the main kernel's console log."""
    return await _logs_of(session_name)


@auth_required
async def upload(session_name: str) -> Response:
    """``POST /session/:id/upload``: write the multipart body's files (204)."""
    if request.mimetype != "multipart/form-data":
        raise InvalidParameter(
            "uploads must be multipart/form-data", field="Content-Type", value=request.mimetype
        )
    info = await find_session(session_name, current_auth())
    form_files = await request.files
    parts = list(form_files.items(multi=True))
    if not parts:
        raise InvalidParameter("the upload holds no files", field="files")
    if len(parts) > MAX_UPLOAD_FILES:
        raise InvalidParameter(
            f"at most {MAX_UPLOAD_FILES} files may be uploaded at once",
            field="files",
            value=len(parts),
        )
    files: list[tuple[str, bytes]] = []
    for _, storage in parts:
        path = storage.filename or ""
        if not path:
            raise InvalidParameter("each uploaded file needs a filename", field="files")
        data = storage.stream.read(MAX_UPLOAD_FILE_SIZE + 1)
        if len(data) > MAX_UPLOAD_FILE_SIZE:
            raise InvalidParameter(
                f"a file may have at most {MAX_UPLOAD_FILE_SIZE} bytes", field=path, value=None
            )
        files.append((path, data))
    with translated_errors():
        await current_ctx().registry.upload_files(info, files)
    return no_content()


async def _query_or_body(model: type[T], key: str) -> T:
    """*model* from the query string when it names *key*, else from the JSON body
    (the official client sends the parameters of these ``GET`` routes as a body)."""
    return read_query(model) if key in request.args else await read_json(model)


class _FilesBody(msgspec.Struct, kw_only=True):
    files: list[str]


async def _download_paths() -> list[str]:
    """``files`` from the query string (repeated keys) or, failing that, the JSON body."""
    named = request.args.getlist("files")
    if named:
        return named
    return (await read_json(_FilesBody)).files


@auth_required
async def download(session_name: str) -> Response:
    """``GET /session/:id/download``: one ``application/x-tar`` part per path."""
    paths = await _download_paths()
    info = await find_session(session_name, current_auth())
    with translated_errors():
        archives = await current_ctx().registry.download_files(info, paths)
    boundary = secrets.token_hex(16)
    chunks: list[bytes] = []
    for archive in archives:
        chunks += [
            f"--{boundary}\r\nContent-Type: application/x-tar\r\n"
            f"Content-Length: {len(archive)}\r\n\r\n".encode(),
            archive,
            b"\r\n",
        ]
    chunks.append(f"--{boundary}--\r\n".encode())
    response: Response = current_app.response_class(
        b"".join(chunks), status=200, content_type=f"multipart/mixed; boundary={boundary}"
    )
    return response


class _SingleFileParams(msgspec.Struct, kw_only=True):
    file: str


@auth_required
async def download_single(session_name: str) -> Response:
    """``GET /session/:id/download_single?file=``: one small file's bytes."""
    params = await _query_or_body(_SingleFileParams, "file")
    info = await find_session(session_name, current_auth())
    with translated_errors():
        data = await current_ctx().registry.download_single(info, params.file)
    response: Response = current_app.response_class(
        data, status=200, content_type="application/octet-stream"
    )
    return response


class _ListParams(msgspec.Struct, kw_only=True):
    path: str = "."


@auth_required
async def list_files(session_name: str) -> Response:
    """``GET /session/:id/files?path=``: ``{"files": JSON text, "folder_path", "errors"}``."""
    params = await _query_or_body(_ListParams, "path")
    info = await find_session(session_name, current_auth())
    with translated_errors():
        listing = await current_ctx().registry.list_files(info, params.path)
    errors = listing.get("errors") or ""
    return json_response(
        {
            "files": listing.get("files", "[]"),
            "folder_path": listing.get("abspath", params.path),
            "errors": errors if isinstance(errors, str) else str(errors),
        }
    )
