"""The storage proxy's contract with the manager, its clients and the agents.

A storage proxy (:mod:`bai.storage`) serves one or more *volumes* (directories
behind a backend such as ``vfs``) and exposes two HTTP APIs:

* the **manager-facing API** (``[api.manager]``), which only managers call:
  every request carries the shared secret in :data:`AUTH_HEADER`; a request
  without it, or with another secret, is answered 401 and changes nothing;
* the **client-facing API** (``[api.client]``), which users' clients call
  directly for bulk transfers with a short-lived signed token that the
  manager obtained for them; transfers never pass through the manager.

This module is the one home of what both sides agree on: the route paths, the
request bodies (frozen structs; unknown keys are refused), the reply shapes
(TypedDicts), the error types, and the claims of a transfer token.  The proxy
parses with :func:`parse`; the manager builds bodies from the same structs
(``msgspec.to_builtins``).

Naming
======

A *vfolder host* as users see it is ``PROXY:VOLUME`` (``local:local`` in
``bai up``).  The manager finds proxies through the shared configuration:
``volumes/proxies/PROXY/manager_api``, ``.../client_api``, ``.../secret``,
``.../ssl_verify`` and ``volumes/default_host`` (see :data:`PROXY_KEYS`).
Inside a proxy a folder is named by its *vfid*: the folder's UUID as 32
lowercase hex digits.  Where a folder lives inside its volume is the proxy's
business; the manager only ever learns it through ``folder/mount``.

A *relpath* is a path inside one folder, ``/``-separated, relative (leading
``/`` refused), without ``..``, NUL or empty components, each component at
most 255 bytes and the whole at most 4096 bytes (:func:`check_relpath`).  The
proxy applies it again when it walks the path, refusing symbolic links that
would lead out of the folder.

Errors
======

Every failure is an RFC 7807 JSON body ``{"type": ..., "title": ...,
"status": ..., "detail": ..., "field"?: ...}`` whose ``type`` ends with one
of :class:`StorageErrorType` (``https://bai.dev/problems/storage/NAME``):
``InvalidRequest`` 400 (``field`` names the bad key), ``InvalidPath`` 400,
``Unauthorized`` 401, ``InvalidToken`` 401 (expired, forged, for another
operation, or an upload already completed), ``VolumeNotFound`` 404,
``FolderNotFound`` 404, ``FileNotFound`` 404, ``FolderExists`` 409,
``FileExists`` 409, ``NotADirectory`` 409, ``DirectoryNotEmpty`` 409,
``UploadConflict`` 409 (another upload of the same session is running, or
the offset is not the current one), ``QuotaExceeded`` 413,
``UploadTooLarge`` 413, ``RangeNotSatisfiable`` 416,
``OperationNotSupported`` 501.  A failed request changes nothing.

Manager-facing routes (all ``POST`` with a JSON body unless noted)
==================================================================

``GET /`` -> :class:`ProxyStatus`
``GET /volumes`` -> ``{"volumes": [VolumeInfo]}``
``/volume/performance-metric`` :class:`VolumeArgs` -> ``{"metric": {...}}``
``/quota-scope`` :class:`QuotaScopeArgs` -> :class:`QuotaScopeInfo`
``/quota-scope/update`` :class:`QuotaScopeUpdate` -> :class:`QuotaScopeInfo`
``/folder/create`` :class:`CreateFolder` -> 204
``/folder/delete`` :class:`FolderArgs` -> 204 (removes the folder and its data for good)
``/folder/clone`` :class:`CloneFolder` -> 204 (copies the tree; the target must not exist)
``/folder/mount`` :class:`FolderArgs` -> :class:`MountInfo`
``/folder/usage`` :class:`FolderArgs` -> :class:`FolderUsage`
``/folder/quota`` :class:`FolderArgs` -> ``{"quota": int | null}``
``/folder/quota/update`` :class:`FolderQuota` -> 204
``/folder/file/mkdir`` :class:`Mkdir` -> 204
``/folder/file/list`` :class:`ListFiles` -> ``{"items": [DirEntry]}`` (at most
``scandir-limit`` entries, sorted by name)
``/folder/file/rename`` :class:`RenameFile` -> 204 (a new name in the same directory)
``/folder/file/move`` :class:`MoveFile` -> 204
``/folder/file/delete`` :class:`DeleteFiles` -> 204
``/folder/file/upload`` :class:`CreateUpload` -> :class:`TransferToken`
``/folder/file/download`` :class:`CreateDownload` -> :class:`TransferToken`

Client-facing routes
====================

``GET /download?token=T`` streams the file (``Content-Length``,
``Last-Modified``, ``Accept-Ranges: bytes``; ``Range`` and ``If-Range``
answer 206 with the rest).  ``OPTIONS /upload`` answers the tus 1.0
discovery headers.  ``HEAD /upload?token=T`` answers ``Upload-Offset`` and
``Upload-Length``.  ``PATCH /upload?token=T`` with ``Upload-Offset`` and a
``application/offset+octet-stream`` body appends at that offset and answers
204 with the new ``Upload-Offset``.  The data goes to a hidden staging file
that becomes the target path, atomically, only once ``Upload-Length`` bytes
arrived; a dropped connection keeps what arrived, so the client resumes with
``HEAD``.  ``dst_dir`` in the query is ignored: the token fixes the path.

Transfer tokens
===============

JWT (HS256) signed with ``[storage-proxy] secret``, audience
:data:`TOKEN_AUDIENCE`, with :class:`TokenClaims` and ``exp`` at most
``session-expire`` ahead.  Upload tokens carry a fresh ``session`` id; once
that upload completes the token is refused.
"""

from __future__ import annotations

import enum
import uuid
from typing import Annotated, Any, Final, Literal, TypedDict, TypeVar

import msgspec

from bai.common.scratch_paths import KERNEL_HOME
from bai.common.validation import InvalidField, bracketed, invalid_value

#: The header that carries the manager's shared secret.
AUTH_HEADER: Final = "X-BackendAI-Storage-Auth-Token"

#: The audience every transfer token names.
TOKEN_AUDIENCE: Final = "bai-storage-transfer"

#: The shared-configuration keys under ``volumes/proxies/PROXY/``.
PROXY_KEYS: Final = ("manager_api", "client_api", "secret", "ssl_verify")

#: Longest relpath, in bytes of UTF-8.
MAX_RELPATH: Final = 4096

#: Longest component of a relpath, in bytes of UTF-8.
MAX_NAME: Final = 255

#: Most relpaths in one delete.
MAX_DELETE_FILES: Final = 1000


class StorageErrorType(enum.StrEnum):
    """The ``type`` suffixes of the proxy's error bodies; see the module docstring."""

    INVALID_REQUEST = "InvalidRequest"
    INVALID_PATH = "InvalidPath"
    UNAUTHORIZED = "Unauthorized"
    INVALID_TOKEN = "InvalidToken"
    VOLUME_NOT_FOUND = "VolumeNotFound"
    FOLDER_NOT_FOUND = "FolderNotFound"
    FILE_NOT_FOUND = "FileNotFound"
    FOLDER_EXISTS = "FolderExists"
    FILE_EXISTS = "FileExists"
    NOT_A_DIRECTORY = "NotADirectory"
    DIRECTORY_NOT_EMPTY = "DirectoryNotEmpty"
    UPLOAD_CONFLICT = "UploadConflict"
    QUOTA_EXCEEDED = "QuotaExceeded"
    UPLOAD_TOO_LARGE = "UploadTooLarge"
    RANGE_NOT_SATISFIABLE = "RangeNotSatisfiable"
    OPERATION_NOT_SUPPORTED = "OperationNotSupported"


#: The HTTP status of each error type.
ERROR_STATUS: Final[dict[StorageErrorType, int]] = {
    StorageErrorType.INVALID_REQUEST: 400,
    StorageErrorType.INVALID_PATH: 400,
    StorageErrorType.UNAUTHORIZED: 401,
    StorageErrorType.INVALID_TOKEN: 401,
    StorageErrorType.VOLUME_NOT_FOUND: 404,
    StorageErrorType.FOLDER_NOT_FOUND: 404,
    StorageErrorType.FILE_NOT_FOUND: 404,
    StorageErrorType.FOLDER_EXISTS: 409,
    StorageErrorType.FILE_EXISTS: 409,
    StorageErrorType.NOT_A_DIRECTORY: 409,
    StorageErrorType.DIRECTORY_NOT_EMPTY: 409,
    StorageErrorType.UPLOAD_CONFLICT: 409,
    StorageErrorType.QUOTA_EXCEEDED: 413,
    StorageErrorType.UPLOAD_TOO_LARGE: 413,
    StorageErrorType.RANGE_NOT_SATISFIABLE: 416,
    StorageErrorType.OPERATION_NOT_SUPPORTED: 501,
}

#: Prefix of the ``type`` URI of every storage error body.
ERROR_TYPE_PREFIX: Final = "https://bai.dev/problems/storage/"


class InvalidRequest(InvalidField):
    """A malformed body: wrong type, missing or unknown key, value out of range."""


class InvalidPath(InvalidField):
    """A relpath that could leave its folder or that no file system accepts."""


def check_relpath(path: str, *, field: str = "relpath", allow_root: bool = True) -> str:
    """Return *path* normalised (no ``.`` components, no repeated ``/``) or raise.

    Raises :class:`InvalidPath` naming *field* for an absolute path, ``..``,
    NUL, a component over :data:`MAX_NAME` bytes or a path over
    :data:`MAX_RELPATH` bytes.  ``""`` and ``"."`` mean the folder itself,
    answered as ``"."`` when *allow_root* is true and refused otherwise.
    """
    if "\x00" in path:
        raise InvalidPath("a path must not contain NUL", field=field, value=path)
    if len(path.encode("utf-8", "surrogateescape")) > MAX_RELPATH:
        raise InvalidPath(f"a path is at most {MAX_RELPATH} bytes", field=field)
    if path.startswith("/"):
        raise InvalidPath("a path must be relative to the folder", field=field, value=path)
    parts = [part for part in path.split("/") if part not in ("", ".")]
    for part in parts:
        if part == "..":
            raise InvalidPath("a path must not contain '..'", field=field, value=path)
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME:
            raise InvalidPath(f"a path component is at most {MAX_NAME} bytes", field=field)
    if not parts:
        if not allow_root:
            raise InvalidPath("a path must name something inside the folder", field=field)
        return "."
    return "/".join(parts)


def check_file_name(name: str, *, field: str = "new_name") -> str:
    """*name* if it is one file name (no ``/``, NUL, ``.`` or ``..``, at most
    :data:`MAX_NAME` bytes); :class:`InvalidPath` naming *field* else."""
    if "/" in name or "\x00" in name or name in ("", ".", ".."):
        raise InvalidPath("a name must be one path component", field=field, value=name)
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME:
        raise InvalidPath(f"a name is at most {MAX_NAME} bytes", field=field)
    return name


def vfid_of(folder_id: uuid.UUID) -> str:
    """The proxy's name of a folder: its UUID as 32 lowercase hex digits."""
    return folder_id.hex


def proxy_config_items(
    proxy: str,
    *,
    manager_api: str,
    client_api: str,
    secret: str,
    ssl_verify: bool = True,
    default_host: str | None = None,
) -> dict[str, str]:
    """The shared-configuration entries that make proxy *proxy* known to the managers.

    ``volumes/proxies/PROXY/*`` (:data:`PROXY_KEYS`) and, with
    *default_host* (``PROXY:VOLUME``), ``volumes/default_host``.
    """
    items = {
        f"volumes/proxies/{proxy}/manager_api": manager_api,
        f"volumes/proxies/{proxy}/client_api": client_api,
        f"volumes/proxies/{proxy}/secret": secret,
        f"volumes/proxies/{proxy}/ssl_verify": "true" if ssl_verify else "false",
    }
    if default_host is not None:
        items["volumes/default_host"] = default_host
    return items


# ------------------------------------------------------------------------- bodies

VolumeName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Vfid = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]
RelPath = Annotated[str, msgspec.Meta(max_length=MAX_RELPATH)]
#: ``user:UUID`` or ``project:UUID``: whose storage budget a folder counts against.
QuotaScopeId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(user|project):[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    ),
]
Bytes = Annotated[int, msgspec.Meta(ge=0)]


class _Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class VolumeArgs(_Body, frozen=True):
    volume: VolumeName


class FolderArgs(VolumeArgs, frozen=True):
    vfid: Vfid


class CreateFolder(FolderArgs, frozen=True):
    """A new, empty folder counted against *quota_scope*, limited to *quota* bytes (None: none)."""

    quota_scope: QuotaScopeId
    quota: Bytes | None = None


class CloneFolder(FolderArgs, frozen=True):
    """Copy folder *vfid* of *volume* to the new folder *dst_vfid* of *dst_volume*."""

    dst_volume: VolumeName
    dst_vfid: Vfid
    dst_quota_scope: QuotaScopeId


class FolderQuota(FolderArgs, frozen=True):
    quota: Bytes | None


class QuotaScopeArgs(VolumeArgs, frozen=True):
    quota_scope: QuotaScopeId


class QuotaScopeUpdate(QuotaScopeArgs, frozen=True):
    """Set (or, with None, remove) the byte limit of one quota scope."""

    limit: Bytes | None


class Mkdir(FolderArgs, frozen=True):
    relpath: RelPath
    parents: bool = False
    exist_ok: bool = False


class ListFiles(FolderArgs, frozen=True):
    relpath: RelPath = "."


class RenameFile(FolderArgs, frozen=True):
    relpath: RelPath
    new_name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]


class MoveFile(FolderArgs, frozen=True):
    src_relpath: RelPath
    dst_relpath: RelPath


class DeleteFiles(FolderArgs, frozen=True):
    relpaths: Annotated[list[RelPath], msgspec.Meta(min_length=1, max_length=MAX_DELETE_FILES)]
    recursive: bool = False


class CreateUpload(FolderArgs, frozen=True):
    """A token for one tus upload of *size* bytes to *relpath* (checked against the quotas)."""

    relpath: RelPath
    size: Bytes


class CreateDownload(FolderArgs, frozen=True):
    relpath: RelPath
    #: A directory streamed as a zip archive.
    archive: bool = False


B = TypeVar("B", bound=_Body)


def parse(body: Any, kind: type[B]) -> B:
    """Validate a decoded JSON body as *kind*; raises :class:`InvalidRequest` naming the key."""
    try:
        return msgspec.convert(body, kind)
    except msgspec.ValidationError as exc:
        raise invalid_value(
            exc, body, where="body", error=InvalidRequest, notation=bracketed
        ) from None


# ------------------------------------------------------------------------- replies


class ProxyStatus(TypedDict):
    status: Literal["running"]
    node_id: str
    api_version: int


class VolumeInfo(TypedDict):
    name: str
    backend: str
    path: str
    #: What the backend can do: ``vfolder``, ``quota``, ``metric``.
    capabilities: list[str]


class QuotaScopeInfo(TypedDict):
    used_bytes: int
    limit_bytes: int | None


class MountInfo(TypedDict):
    #: Absolute host path of the folder's root, as agents on the shared file system see it.
    path: str


class FolderUsage(TypedDict):
    file_count: int
    used_bytes: int


class DirEntryStat(TypedDict):
    size: int
    mode: int
    #: ISO 8601 timestamps in UTC.
    created: str
    modified: str


class DirEntry(TypedDict):
    name: str
    type: Literal["FILE", "DIRECTORY", "SYMLINK"]
    stat: DirEntryStat
    #: The link's target for ``SYMLINK`` entries, else "".
    symlink_target: str


class TransferToken(TypedDict):
    token: str


class TokenClaims(msgspec.Struct, frozen=True, kw_only=True):
    """The payload of a transfer token (plus ``exp`` and ``aud``)."""

    op: Literal["upload", "download"]
    volume: str
    vfid: str
    relpath: str
    #: Upload: the total size announced; download: 0.
    size: int = 0
    #: Upload: the id of this upload session (its staging file); download: "".
    session: str = ""
    archive: bool = False


# ------------------------------------------------------------------------- mounts

#: Kernel paths under which a folder may be mounted at a path the caller chose.
MOUNT_ROOTS: Final = (KERNEL_HOME, "/data", "/mnt")


def kernel_mount_path(name: str, requested: str | None = None, *, field: str = "mount_map") -> str:
    """The absolute path in a kernel where folder *name* is mounted.

    With no *requested* path it is ``/home/work/NAME``.  A relative
    *requested* path is taken under ``/home/work``; an absolute one must lie
    strictly below one of :data:`MOUNT_ROOTS` (``/data`` and ``/mnt``
    themselves are allowed too), so a folder can never cover the kernel's
    work directory, its system directories or the runner.  Raises
    :class:`InvalidPath` naming *field* otherwise.
    """
    path = requested if requested else name
    if path.startswith("/"):
        relative = check_relpath(path.lstrip("/"), field=field, allow_root=False)
        absolute = "/" + relative
    else:
        absolute = f"{KERNEL_HOME}/{check_relpath(path, field=field, allow_root=False)}"
    if absolute == KERNEL_HOME or not any(
        (absolute == root and root != KERNEL_HOME) or absolute.startswith(root + "/")
        for root in MOUNT_ROOTS
    ):
        raise InvalidPath(
            "a mount path must lie below /home/work, /data or /mnt", field=field, value=path
        )
    return absolute
