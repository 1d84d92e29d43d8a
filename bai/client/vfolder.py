"""Virtual folders over the REST API: manage them, their files, their sharing, and transfers.

:class:`VFolder` is a handle on one folder, named by its name (or its id);
each method is one route of the spec's ``/folders`` API, with the paths and
body keys the official client (``backend.ai-client`` 23.9) sends, so one
manager serves both clients.  Calls that concern no single folder (create,
list, hosts, invitations, the trash) are class methods taking the
:class:`~bai.client.request.APIClient`.

Parameters of ``GET`` routes go in the query string and, as the official
client sends them, in a JSON body too; the other routes send a JSON body.

Bulk data goes straight to the storage proxy, never through the manager:
:meth:`VFolder.upload` asks ``request-upload`` for a ``{token, url}`` per
file and sends the file with tus (:mod:`bai.client.tus`);
:meth:`VFolder.download` asks ``request-download`` and streams the file to
``NAME.part`` with range resumption (:mod:`bai.client.transfer`).  Both resume
after dropped connections by themselves.

Deleting a folder (:meth:`VFolder.delete`) moves it to the trash:
:meth:`VFolder.trash` lists it, :meth:`VFolder.restore` brings it back,
:meth:`VFolder.purge` removes it and its data for good.

Guarantees: answers are checked for the promised shape
(:class:`~bai.client.exceptions.MalformedResponse` names what is wrong); API
failures raise the typed :class:`~bai.client.exceptions.BackendAPIError`
subclasses; local paths outside the base directory and folder paths with
``..`` or a leading ``/`` are refused (:class:`~bai.common.errors.InvalidValue`)
before anything is sent.
"""

from __future__ import annotations

import builtins
import json
import os
import stat
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Final
from urllib.parse import quote

import httpx
import trio

from bai.client.bgtask import TaskOutcome, TaskProgress, follow_background_task
from bai.client.exceptions import BackendClientError, MalformedResponse
from bai.client.multipart import UploadFile
from bai.client.request import APIClient, QueryParams
from bai.client.transfer import RetryPolicy, bulk_client, download_file
from bai.client.tus import DEFAULT_CHUNK_SIZE, tus_upload
from bai.common.errors import InvalidValue
from bai.common.storage_api import check_relpath

__all__ = [
    "CLONING_STATUSES",
    "FileProgress",
    "FileResume",
    "FolderEntry",
    "Transferred",
    "VFolder",
    "parse_entries",
    "plan_folder_upload",
    "transfer_url",
]

#: Called with (path in the folder, bytes done, total bytes or None).
FileProgress = Callable[[str, int, int | None], None]
#: Called before a transfer resumes with (path in the folder, retry number, offset, failure).
FileResume = Callable[[str, int, int, BaseException], None]

#: Folder statuses (lowercase) while a clone is still being copied.
CLONING_STATUSES: Final = frozenset({"cloning", "performing"})

_Items = builtins.list[dict[str, Any]]
_TYPE_BITS: Final = {"DIRECTORY": stat.S_IFDIR, "FILE": stat.S_IFREG, "SYMLINK": stat.S_IFLNK}


@dataclass(frozen=True, slots=True)
class FolderEntry:
    """One entry of a directory inside a folder."""

    name: str
    #: ``FILE``, ``DIRECTORY`` or ``SYMLINK``; "" when the server does not say.
    type: str
    size: int
    #: ``ls -l`` style, e.g. ``-rw-r--r--``.
    mode: str
    #: Last modification as a POSIX timestamp, None when unknown.
    modified: float | None

    @property
    def is_dir(self) -> bool:
        return self.type == "DIRECTORY" or self.mode.startswith("d")


@dataclass(frozen=True, slots=True)
class Transferred:
    """One file moved between this machine and a folder."""

    #: The path inside the folder.
    relpath: str
    local: Path
    size: int


def _mode_text(value: Any, kind: str) -> str:
    if isinstance(value, str):
        if not (value.isdigit() and set(value) <= set("01234567")):
            return value  # ls -l style already
        value = int(value, 8)  # permission bits in octal, as ``items`` carries them
    if isinstance(value, int) and not isinstance(value, bool):
        if not stat.S_IFMT(value):
            value |= _TYPE_BITS.get(kind, 0)
        return stat.filemode(value)
    return ""


def _timestamp(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def parse_entries(data: Any) -> builtins.list[FolderEntry]:
    """The entries of a ``GET /folders/{name}/files`` answer.

    Reads ``items`` (``name``, ``type``, ``size``, ``mode``, ``modified``) or,
    as older managers answer, ``files`` (a list, or a JSON string of one, of
    ``filename``, ``size``, ``mode``, ``mtime``).
    """
    if not isinstance(data, dict):
        raise MalformedResponse("is not an object", value=data, field="file listing")
    items = data.get("items")
    legacy = items is None
    if legacy:
        items = data.get("files", [])
        if isinstance(items, str):
            try:
                items = json.loads(items) if items else []
            except ValueError:
                raise MalformedResponse("is not JSON", value=items, field="files") from None
    if not isinstance(items, builtins.list):
        raise MalformedResponse("is not a list", value=items, field="files" if legacy else "items")
    entries: builtins.list[FolderEntry] = []
    for item in items:
        try:
            name = item["filename"] if legacy else item["name"]
            kind = str(item.get("type") or "").upper()
            entries.append(
                FolderEntry(
                    name=str(name),
                    type=kind,
                    size=int(item.get("size") or 0),
                    mode=_mode_text(item.get("mode"), kind),
                    modified=_timestamp(item.get("mtime" if legacy else "modified")),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise MalformedResponse("is not a file entry", value=item, field="files") from None
    return entries


def transfer_url(answer: Any, address_map: Mapping[str, str] | None = None) -> httpx.URL:
    """The storage proxy URL (with ``token=``) of a ``request-upload``/``-download`` answer.

    With *address_map*, the answered ``url`` is replaced by the address it
    maps to (for proxies that clients reach at another address than the
    manager announces); a URL the map does not name is an error.
    """
    if not isinstance(answer, dict):
        raise MalformedResponse("is not an object", value=answer, field="transfer answer")
    token, url = answer.get("token"), answer.get("url")
    if not isinstance(token, str) or not token:
        raise MalformedResponse("is missing or not a string", value=token, field="token")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise MalformedResponse("is not an http(s) URL", value=url, field="url")
    if address_map:
        if url not in address_map:
            raise BackendClientError(
                f"the storage proxy address {url} is not among the overridden ones "
                f"({', '.join(address_map)})"
            )
        url = address_map[url]
    return httpx.URL(url).copy_merge_params({"token": token})


def plan_folder_upload(
    sources: Sequence[str | os.PathLike[str]],
    basedir: str | os.PathLike[str] | None = None,
    *,
    recursive: bool = False,
) -> tuple[builtins.list[str], builtins.list[UploadFile]]:
    """The directories to create and the files to send for an upload of *sources*.

    *sources* are relative to *basedir* (default: the current directory) and
    must lie inside it; each keeps its path relative to *basedir* in the
    folder.  A directory needs *recursive*: then its subdirectories (not
    symbolic links to directories) are created and its regular files sent.
    Raises :class:`~bai.common.errors.InvalidValue` naming the path.  Blocking
    (``stat``, ``os.walk``): from Trio, run it in a thread.
    """
    # Lexical absolute paths, not resolved ones: a symbolic link inside the base
    # directory is sent as the file it points to, under its own name.
    base = Path(os.path.abspath(Path.cwd() if basedir is None else basedir))
    dirs: builtins.list[str] = []
    files: builtins.list[UploadFile] = []

    def relative(path: Path, shown: str) -> str:
        try:
            return PurePosixPath(*path.relative_to(base).parts).as_posix()
        except ValueError:
            raise InvalidValue(
                f"is outside of the base directory {str(base)!r}", value=shown, field="files"
            ) from None

    for item in sources:
        shown = os.fspath(item)
        path = Path(os.path.abspath(base / item))
        try:
            info = path.stat()
        except OSError as exc:
            raise InvalidValue(
                f"cannot be read: {exc.strerror}", value=shown, field="files"
            ) from None
        name = relative(path, shown)
        if stat.S_ISREG(info.st_mode):
            files.append(UploadFile(path, name, info.st_size))
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise InvalidValue("is not a regular file or a directory", value=shown, field="files")
        if not recursive:
            raise InvalidValue("is a directory (upload it recursively)", value=shown, field="files")
        if name != ".":
            dirs.append(name)
        for root, subdirs, names in os.walk(path):
            top = Path(root)
            for sub in sorted(subdirs):
                if not (top / sub).is_symlink():
                    dirs.append(relative(top / sub, shown))
            subdirs[:] = sorted(s for s in subdirs if not (top / s).is_symlink())
            for file_name in sorted(names):
                file_path = top / file_name
                try:
                    file_info = file_path.stat()
                except OSError:
                    continue  # a dangling link
                if stat.S_ISREG(file_info.st_mode):
                    files.append(
                        UploadFile(file_path, relative(file_path, shown), file_info.st_size)
                    )
    return list(dict.fromkeys(dirs)), files


def _folder_key(text: str) -> str:
    """A folder id as 32 hex digits (ids come with or without dashes); a name unchanged."""
    try:
        return uuid.UUID(text).hex
    except ValueError:
        return text


def _drop_none(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value is not None}


def _as_object(data: Any, what: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MalformedResponse("is not an object", value=data, field=what)
    return data


def _as_items(data: Any, what: str, *keys: str) -> _Items:
    if isinstance(data, dict):
        for key in keys:
            if isinstance(data.get(key), builtins.list):
                data = data[key]
                break
    if not isinstance(data, builtins.list) or not all(isinstance(i, dict) for i in data):
        raise MalformedResponse("is not a list of objects", value=data, field=what)
    return data


async def _get(api: APIClient, path: str, params: Mapping[str, Any] | None = None) -> Any:
    # The spec puts GET parameters in the query; the official client sends a
    # JSON body: send both, so managers reading either understand.
    query: QueryParams = _drop_none(params or {})
    return await api.fetch_json("GET", path, params=query, json_body=dict(query) or None)


class VFolder:
    """A handle on one virtual folder of the manager behind *api* (no request is sent)."""

    def __init__(self, api: APIClient, name: str) -> None:
        if not name:
            raise BackendClientError("a vfolder handle needs a name or an id")
        self.api = api
        self.name = name

    def __repr__(self) -> str:
        return f"VFolder(name={self.name!r})"

    @property
    def path(self) -> str:
        """The folder's REST path, ``/folders/<name, percent-encoded>``."""
        return f"/folders/{quote(self.name, safe='')}"

    # ------------------------------------------------------------ folders

    @classmethod
    async def create(
        cls,
        api: APIClient,
        name: str,
        host: str | None = None,
        *,
        group: str | None = None,
        usage_mode: str = "general",
        permission: str = "rw",
        quota: str | int | None = None,
        cloneable: bool = False,
        unmanaged_path: str | None = None,
    ) -> dict[str, Any]:
        """``POST /folders``: a new folder (of project *group* when given); its description.

        *host* defaults to the manager's default host; *quota* is a byte
        count or a size such as ``"10g"``.
        """
        body = _drop_none(
            {
                "name": name,
                "host": host,
                "unmanaged_path": unmanaged_path,
                "group": group,
                "usage_mode": usage_mode,
                "permission": permission,
                "quota": None if quota is None else str(quota),
                "cloneable": cloneable,
            }
        )
        data = await api.fetch_json("POST", "/folders", json_body=body)
        return _as_object(data, "creation answer")

    @classmethod
    async def list(
        cls,
        api: APIClient,
        *,
        all: bool = False,
        group_id: str | None = None,
        owner_user_email: str | None = None,
    ) -> _Items:
        """``GET /folders``: the folders the caller may use (own, invited, project).

        *all* (superadmins): every folder; *group_id*: one project's folders.
        """
        params = {"all": all, "group_id": group_id, "owner_user_email": owner_user_email}
        return _as_items(await _get(api, "/folders", params), "folder list")

    @classmethod
    async def list_hosts(cls, api: APIClient, *, group_id: str | None = None) -> dict[str, Any]:
        """``GET /folders/_/hosts``: ``{"default": HOST, "allowed": [HOST...]}`` for the caller."""
        data = _as_object(await _get(api, "/folders/_/hosts", {"group_id": group_id}), "hosts")
        if not isinstance(data.get("allowed", []), builtins.list):
            raise MalformedResponse("is not a list", value=data.get("allowed"), field="allowed")
        return data

    @classmethod
    async def list_all_hosts(cls, api: APIClient) -> dict[str, Any]:
        """``GET /folders/_/all_hosts`` (superadmins): every host of every storage proxy."""
        return _as_object(await _get(api, "/folders/_/all_hosts"), "all hosts")

    @classmethod
    async def list_allowed_types(cls, api: APIClient) -> builtins.list[str]:
        """``GET /folders/_/allowed_types``: the ownership types allowed (``user``, ``group``)."""
        data = await _get(api, "/folders/_/allowed_types")
        if not isinstance(data, builtins.list) or not all(isinstance(t, str) for t in data):
            raise MalformedResponse("is not a list of names", value=data, field="allowed types")
        return data

    @classmethod
    async def delete_by_id(cls, api: APIClient, folder_id: str | uuid.UUID) -> None:
        """``DELETE /folders`` with ``{"id"}``: move the folder with this id to the trash."""
        await api.request("DELETE", "/folders", json_body={"id": str(folder_id)})

    @classmethod
    async def trash(cls, api: APIClient) -> _Items:
        """``GET /folders/_/trash``: the caller's deleted folders that can still be restored."""
        return _as_items(await _get(api, "/folders/_/trash"), "trash", "items", "trash")

    @classmethod
    async def restore(cls, api: APIClient, folder_id: str | uuid.UUID) -> dict[str, Any]:
        """``POST /folders/_/restore``: bring a folder back from the trash."""
        data = await api.fetch_json("POST", "/folders/_/restore", json_body={"id": str(folder_id)})
        return _as_object(data, "restore answer")

    @classmethod
    async def purge(cls, api: APIClient, folder_id: str | uuid.UUID) -> None:
        """``POST /folders/_/purge``: remove a trashed folder and its data for good."""
        await api.request("POST", "/folders/_/purge", json_body={"id": str(folder_id)})

    @classmethod
    async def usage(cls, api: APIClient, host: str, folder_id: str | uuid.UUID) -> dict[str, Any]:
        """``GET /folders/_/usage``: a folder's file count and used bytes."""
        params = {"folder_host": host, "id": str(folder_id)}
        return _as_object(await _get(api, "/folders/_/usage", params), "usage")

    @classmethod
    async def quota(cls, api: APIClient, host: str, folder_id: str | uuid.UUID) -> dict[str, Any]:
        """``GET /folders/_/quota``: a folder's byte limit."""
        params = {"folder_host": host, "id": str(folder_id)}
        return _as_object(await _get(api, "/folders/_/quota", params), "quota")

    @classmethod
    async def set_quota(
        cls, api: APIClient, host: str, folder_id: str | uuid.UUID, size_bytes: int | None
    ) -> dict[str, Any]:
        """``POST /folders/_/quota``: set (None: remove) a folder's byte limit."""
        body = {"folder_host": host, "id": str(folder_id), "input": {"size_bytes": size_bytes}}
        data = await api.fetch_json("POST", "/folders/_/quota", json_body=body)
        return _as_object(data, "quota answer")

    async def info(self) -> dict[str, Any]:
        """``GET /folders/{name}``: the folder's description (id, host, permission, status...)."""
        return _as_object(await self.api.fetch_json("GET", self.path), "folder info")

    async def delete(self) -> None:
        """``DELETE /folders/{name}``: move the folder to the trash (refused while mounted)."""
        await self.api.request("DELETE", self.path)

    async def rename(self, new_name: str) -> None:
        """``POST /folders/{name}/rename``; the handle follows the new name."""
        await self.api.request("POST", f"{self.path}/rename", json_body={"new_name": new_name})
        self.name = new_name

    async def update_options(
        self, *, permission: str | None = None, cloneable: bool | None = None
    ) -> None:
        """``POST /folders/{name}/update-options``: change what is given, keep the rest."""
        body = _drop_none({"permission": permission, "cloneable": cloneable})
        await self.api.request("POST", f"{self.path}/update-options", json_body=body)

    async def clone(
        self,
        target_name: str,
        *,
        target_host: str | None = None,
        usage_mode: str = "general",
        permission: str = "rw",
        cloneable: bool = False,
    ) -> dict[str, Any]:
        """``POST /folders/{name}/clone``: start copying into a new folder.

        The answer describes the new folder (``id``, ``name``, status
        ``cloning``) and its ``bgtask_id`` names the background task doing
        the copy; :meth:`wait_cloned` waits for it.
        """
        body = _drop_none(
            {
                "target_name": target_name,
                "target_host": target_host,
                "usage_mode": usage_mode,
                "permission": permission,
                "cloneable": cloneable or None,
            }
        )
        data = await self.api.fetch_json("POST", f"{self.path}/clone", json_body=body)
        return _as_object(data, "clone answer")

    @classmethod
    async def wait_cloned(
        cls,
        api: APIClient,
        bgtask_id: str | uuid.UUID,
        *,
        target: str,
        on_progress: Callable[[TaskProgress], None] | None = None,
        poll_interval: float = 2.0,
    ) -> TaskOutcome:
        """Wait until the clone *target* (its id, or its name) made by task *bgtask_id* is done.

        Follows the task's events.  Because the manager keeps no result of a
        task that ended before the stream opened, it also looks the new folder
        up in the folder list every *poll_interval* seconds (the list, not
        the folder's info, which asks the storage proxy about a folder still
        being copied): one no longer in a :data:`CLONING_STATUSES` status is
        complete (``ready``) or failed (another status); one gone from the
        list failed (the manager removes a clone that failed).
        """
        wanted = _folder_key(target)
        outcome: TaskOutcome | None = None

        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                nonlocal outcome
                result = await follow_background_task(api, bgtask_id, on_progress=on_progress)
                if result.status != "unknown":
                    outcome = result
                    nursery.cancel_scope.cancel()

            async def poll() -> None:
                nonlocal outcome
                while True:
                    await trio.sleep(poll_interval)
                    found = [
                        item
                        for item in await cls.list(api)
                        if wanted in (_folder_key(str(item.get("id"))), item.get("name"))
                    ]
                    if not found:
                        outcome = TaskOutcome("failed", f"the new folder {target} is gone")
                        break
                    status = str(found[0].get("status") or "").lower()
                    if status not in CLONING_STATUSES:
                        ready = status in ("", "ready")
                        message = None if ready else f"the new folder is {status}"
                        outcome = TaskOutcome("done" if ready else "failed", message)
                        break
                nursery.cancel_scope.cancel()

            nursery.start_soon(follow)
            nursery.start_soon(poll)
        return outcome or TaskOutcome("unknown")

    # ------------------------------------------------------------ files

    async def mkdir(
        self, path: str | os.PathLike[str], *, parents: bool = False, exist_ok: bool = False
    ) -> None:
        """``POST /folders/{name}/mkdir``: a directory (and its parents with *parents*)."""
        body = {"path": os.fspath(path), "parents": parents, "exist_ok": exist_ok}
        await self.api.request("POST", f"{self.path}/mkdir", json_body=body)

    async def list_files(self, path: str | os.PathLike[str] = ".") -> builtins.list[FolderEntry]:
        """``GET /folders/{name}/files``: the entries of the directory *path*."""
        return parse_entries(await _get(self.api, f"{self.path}/files", {"path": os.fspath(path)}))

    async def rename_file(self, target_path: str, new_name: str) -> None:
        """``POST /folders/{name}/rename-file``: a new name in the same directory."""
        body = {"target_path": target_path, "new_name": new_name}
        await self.api.request("POST", f"{self.path}/rename-file", json_body=body)

    async def move_file(self, src: str, dst: str) -> None:
        """``POST /folders/{name}/move-file``: move *src* to *dst* (into it, if a directory)."""
        await self.api.request("POST", f"{self.path}/move-file", json_body={"src": src, "dst": dst})

    async def delete_files(self, files: Sequence[str], *, recursive: bool = False) -> None:
        """``DELETE /folders/{name}/delete-files``: directories need *recursive*."""
        body = {"files": [os.fspath(f) for f in files], "recursive": recursive}
        await self.api.request("DELETE", f"{self.path}/delete-files", json_body=body)

    async def request_upload(self, path: str, size: int) -> dict[str, Any]:
        """``POST /folders/{name}/request-upload``: ``{token, url}`` for one tus upload."""
        body = {"path": path, "size": size}
        data = await self.api.fetch_json("POST", f"{self.path}/request-upload", json_body=body)
        return _as_object(data, "request-upload answer")

    async def request_download(self, path: str, *, archive: bool = False) -> dict[str, Any]:
        """``POST /folders/{name}/request-download``: ``{token, url}`` for one download.

        With *archive*, a directory is streamed as a zip archive.
        """
        body: dict[str, Any] = {"path": path}
        if archive:
            body["archive"] = True
        data = await self.api.fetch_json("POST", f"{self.path}/request-download", json_body=body)
        return _as_object(data, "request-download answer")

    async def upload(
        self,
        sources: Sequence[str | os.PathLike[str]],
        *,
        basedir: str | os.PathLike[str] | None = None,
        recursive: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress: FileProgress | None = None,
        on_resume: FileResume | None = None,
        address_map: Mapping[str, str] | None = None,
        max_retries: int = 20,
    ) -> builtins.list[Transferred]:
        """Upload local files (and, with *recursive*, directories) into the folder.

        Each keeps its path relative to *basedir* (default: the current
        directory; *sources* are relative to it).  Files with the same path in
        the folder are replaced, each atomically once all its bytes arrived.
        Each file resumes after dropped connections up to *max_retries* times.
        """
        dirs, files = await trio.to_thread.run_sync(
            lambda: plan_folder_upload(sources, basedir, recursive=recursive)
        )
        for directory in dirs:
            await self.mkdir(directory, parents=True, exist_ok=True)
        policy = RetryPolicy(max_retries=max_retries)
        done: builtins.list[Transferred] = []
        for file in files:
            url = transfer_url(await self.request_upload(file.name, file.size), address_map)
            await tus_upload(
                self.api.http,
                url,
                file.path,
                size=file.size,
                chunk_size=chunk_size,
                progress=_bind(progress, file.name),
                on_resume=_bind_resume(on_resume, file.name),
                retry=policy,
            )
            done.append(Transferred(file.name, file.path, file.size))
        return done

    async def download(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        basedir: str | os.PathLike[str] | None = None,
        archive: bool = False,
        overwrite: bool = False,
        progress: FileProgress | None = None,
        on_resume: FileResume | None = None,
        address_map: Mapping[str, str] | None = None,
        max_retries: int = 20,
    ) -> builtins.list[Transferred]:
        """Download files of the folder into *basedir* (default: the current directory).

        Each lands at its path in the folder, below *basedir*; with *archive*,
        each path (a directory, or ``.`` for the whole folder) arrives as a
        zip archive ``PATH.zip``.  A local file that exists already is refused
        unless *overwrite*.  Each file resumes after dropped connections up to
        *max_retries* times and appears only once complete.
        """
        base = Path.cwd() if basedir is None else Path(basedir)
        policy = RetryPolicy(max_retries=max_retries)
        planned: builtins.list[tuple[str, Path]] = []
        for item in paths:
            relpath = check_relpath(os.fspath(item), field="files", allow_root=archive)
            local = base / (self.name if relpath == "." else relpath)
            if archive:
                local = local.with_name(local.name + ".zip")
            if not overwrite and await trio.to_thread.run_sync(local.exists):
                raise BackendClientError(f"{local} exists already (overwrite it explicitly)")
            planned.append((relpath, local))
        done: builtins.list[Transferred] = []
        # The bytes come from the storage proxy, not the manager: a client made for bulk reads.
        verify = not self.api.config.skip_sslcert_validation
        async with bulk_client(verify=verify, headers=self.api.http.headers) as http:
            for relpath, local in planned:
                answer = await self.request_download(relpath, archive=archive)
                size = await download_file(
                    http,
                    transfer_url(answer, address_map),
                    local,
                    progress=_bind(progress, relpath),
                    on_resume=_bind_resume(on_resume, relpath),
                    retry=policy,
                    overwrite=overwrite,
                )
                done.append(Transferred(relpath, local, size))
        return done

    # ------------------------------------------------------------ sharing

    async def invite(self, perm: str, emails: Sequence[str]) -> dict[str, Any]:
        """``POST /folders/{name}/invite``: invite users (emails) with *perm* ro, rw or wd.

        The answer's ``invited_ids`` lists who was invited.
        """
        body = {"perm": perm, "user_ids": builtins.list(emails)}
        data = await self.api.fetch_json("POST", f"{self.path}/invite", json_body=body)
        return _as_object(data, "invite answer")

    @classmethod
    async def invitations(cls, api: APIClient) -> _Items:
        """``GET /folders/invitations/list``: the caller's pending invitations."""
        data = await api.fetch_json("GET", "/folders/invitations/list")
        return _as_items(data, "invitations", "invitations")

    @classmethod
    async def accept_invitation(cls, api: APIClient, inv_id: str) -> None:
        """``POST /folders/invitations/accept``: accept one invitation."""
        await api.request("POST", "/folders/invitations/accept", json_body={"inv_id": inv_id})

    @classmethod
    async def delete_invitation(cls, api: APIClient, inv_id: str) -> None:
        """``DELETE /folders/invitations/delete``: reject (or, as its sender, withdraw) one."""
        await api.request("DELETE", "/folders/invitations/delete", json_body={"inv_id": inv_id})

    async def share(self, permission: str, emails: Sequence[str]) -> dict[str, Any]:
        """``POST /folders/{name}/share``: give users of a project folder *permission*.

        The answer's ``shared_emails`` lists who got it.
        """
        body = {"permission": permission, "emails": builtins.list(emails)}
        data = await self.api.fetch_json("POST", f"{self.path}/share", json_body=body)
        return _as_object(data, "share answer")

    async def unshare(self, emails: Sequence[str]) -> dict[str, Any]:
        """``DELETE /folders/{name}/unshare``: take back what :meth:`share` gave.

        The answer's ``unshared_emails`` lists who lost it.
        """
        body = {"emails": builtins.list(emails)}
        data = await self.api.fetch_json("DELETE", f"{self.path}/unshare", json_body=body)
        return _as_object(data, "unshare answer")

    async def leave(self, shared_user_uuid: str | None = None) -> None:
        """``POST /folders/{name}/leave``: stop using a folder shared with (or invited to) you."""
        body = _drop_none({"shared_user_uuid": shared_user_uuid})
        await self.api.request("POST", f"{self.path}/leave", json_body=body)


def _bind(progress: FileProgress | None, relpath: str) -> Callable[[int, int | None], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(relpath, done, total)


def _bind_resume(
    on_resume: FileResume | None, relpath: str
) -> Callable[[int, int, BaseException], None] | None:
    if on_resume is None:
        return None
    return lambda retry, offset, exc: on_resume(relpath, retry, offset, exc)
