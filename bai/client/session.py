"""Compute sessions over the REST API: create, inspect, run code, move files, destroy, apps.

:class:`ComputeSession` is a handle on one session, named by its name (or
its UUID) and, for administrators acting for someone else, the owner's
access key.  Creating one (:meth:`ComputeSession.create`) sends
``POST /session`` with the spec's body; every other method is one route of
the spec's session API under ``/session/{name}``.

The execute API is a loop (spec, "code execution model"): a run continues
while the server answers ``continued``, ``clean-finished`` or
``build-finished``, needs input on ``waiting-input``, and ends with
``finished`` or ``exec-timeout``.  :meth:`ComputeSession.run` drives that loop
and yields each :class:`ExecutionResult` as it arrives, so output can be shown
while the code still runs.

A session's app services (``sshd``, ``ttyd``, the image's own such as
``jupyter``) are listed by :meth:`ComputeSession.apps` and started or stopped
for the app proxy by :meth:`~ComputeSession.start_service` and
:meth:`~ComputeSession.shutdown_service`; the WebSocket streams (terminal,
streamed execution, TCP tunnels to an app) are in :mod:`bai.client.stream`.

Guarantees: responses are parsed into typed values; a response that does not
have the promised shape raises :class:`~bai.client.exceptions.BackendClientError`
naming what is missing; API failures raise the typed
:class:`~bai.client.exceptions.BackendAPIError` subclasses.  Downloaded tar
archives are extracted with the ``data`` filter: members that would land
outside the destination, device files and absolute links are refused.
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import trio

from bai.client.exceptions import BackendClientError, MalformedResponse
from bai.client.multipart import (
    MultipartParser,
    MultipartUpload,
    PartData,
    PartEnd,
    PartStart,
    ProgressCallback,
    boundary_of,
    plan_upload,
)
from bai.client.request import APIClient, QueryParams
from bai.client.sse import SSEEvent

__all__ = [
    "FINAL_STATUSES",
    "AppInfo",
    "ComputeSession",
    "ConsoleItem",
    "ExecutionResult",
    "FileEntry",
    "FileListing",
    "InputReader",
    "batch_options",
    "session_events",
]

#: Execute statuses after which the run is over.
FINAL_STATUSES: Final = frozenset({"finished", "exec-timeout"})
#: Execute statuses after which the client sends a ``continue`` call.
_CONTINUE_STATUSES: Final = frozenset({"continued", "clean-finished", "build-finished"})
_EXECUTE_MODES: Final = frozenset({"query", "batch", "continue", "input"})

#: Called on ``waiting-input`` with whether the prompt is for a password; returns the input.
InputReader = Callable[[bool], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class ConsoleItem:
    """One console record: ``kind`` is ``stdout``, ``stderr``, ``media``, ``html``, ``log``..."""

    kind: str
    data: Any


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """One answer of the execute API (the spec's Execution Result Object)."""

    run_id: str
    status: str
    exit_code: int | None
    console: tuple[ConsoleItem, ...]
    options: Mapping[str, Any] | None
    files: tuple[Mapping[str, Any], ...]

    @property
    def is_final(self) -> bool:
        """Whether this answer ends the run."""
        return self.status in FINAL_STATUSES

    @property
    def wants_password(self) -> bool:
        """On ``waiting-input``: whether the input should not be echoed."""
        return bool(self.options and self.options.get("is_password"))

    @classmethod
    def from_json(cls, data: Any) -> ExecutionResult:
        """Parse ``{"result": {...}}`` (or the inner object); raises MalformedResponse."""
        if isinstance(data, dict) and isinstance(data.get("result"), dict):
            data = data["result"]
        if not isinstance(data, dict):
            raise MalformedResponse("is not an object", value=data, field="execution result")
        status = data.get("status")
        if not isinstance(status, str):
            raise MalformedResponse("is missing or not a string", value=data, field="result.status")
        raw_console = data.get("console") or []
        files = data.get("files") or []
        for name, value in (("result.console", raw_console), ("result.files", files)):
            if not isinstance(value, list):
                raise MalformedResponse("is not a list", value=value, field=name)
        console: list[ConsoleItem] = []
        for item in raw_console:
            if not isinstance(item, list | tuple) or len(item) != 2 or not isinstance(item[0], str):
                raise MalformedResponse(
                    "is not a [type, data] pair", value=item, field="result.console"
                )
            console.append(ConsoleItem(item[0], item[1]))
        exit_code = data.get("exitCode")
        options = data.get("options")
        return cls(
            run_id=str(data.get("runId") or ""),
            status=status,
            exit_code=exit_code if isinstance(exit_code, int) else None,
            console=tuple(console),
            options=options if isinstance(options, dict) else None,
            files=tuple(f for f in files if isinstance(f, dict)),
        )


@dataclass(frozen=True, slots=True)
class AppInfo:
    """One app service of a session, as ``GET /stream/session/{name}/apps`` lists it.

    ``protocol`` is ``tcp``, ``http``, ``pty`` or ``preopen``; ``ports`` are
    the service's ports inside the kernel.  ``url_template`` (with
    ``{protocol}``, ``{host}`` and ``{port}`` fields), ``allowed_arguments``
    and ``allowed_envs`` are ``None`` when the server names none; ``raw``
    is the whole entry as received.
    """

    name: str
    protocol: str
    ports: tuple[int, ...]
    url_template: str | None
    allowed_arguments: Any
    allowed_envs: Any
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Any) -> AppInfo:
        """Parse one entry; raises :class:`MalformedResponse` naming the bad field."""
        if not isinstance(data, dict):
            raise MalformedResponse("is not an object", value=data, field="app")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise MalformedResponse("is missing or not a string", value=data, field="app.name")
        # The session-creation answer's servicePorts call them container_ports.
        ports = data.get("ports", data.get("container_ports", []))
        if not isinstance(ports, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in ports
        ):
            raise MalformedResponse("is not a list of port numbers", value=ports, field="app.ports")
        template = data.get("url_template")
        return cls(
            name=name,
            protocol=str(data.get("protocol") or "tcp"),
            ports=tuple(ports),
            url_template=template if isinstance(template, str) and template else None,
            allowed_arguments=data.get("allowed_arguments"),
            allowed_envs=data.get("allowed_envs"),
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One entry of a directory listing inside a session."""

    filename: str
    size: int
    mode: str
    mtime: float


@dataclass(frozen=True, slots=True)
class FileListing:
    """The answer of ``GET /session/{name}/files``."""

    folder_path: str
    files: tuple[FileEntry, ...]
    errors: str


def batch_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``options`` of a batch-mode execute request: ``clean``, ``build``, ``buildLog``,
    ``exec`` (absent ones ``None``; ``*`` asks for the image's default command)."""
    opts = options or {}
    return {
        "clean": opts.get("clean"),
        "build": opts.get("build"),
        "buildLog": bool(opts.get("buildLog", False)),
        "exec": opts.get("exec"),
    }


def _drop_none(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if value is not None}


def _as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


class ComputeSession:
    """A handle on one compute session of the manager behind *api*.

    The attributes ``status``, ``created`` and ``service_ports`` are filled by
    :meth:`create` (``None``/empty for a handle made from a name).
    """

    def __init__(
        self,
        api: APIClient,
        name: str,
        *,
        owner_access_key: str | None = None,
        session_id: uuid.UUID | None = None,
    ) -> None:
        if not name:
            raise BackendClientError("a session handle needs a name or an id")
        self.api = api
        self.name = name
        self.owner_access_key = owner_access_key
        self.id = session_id if session_id is not None else _as_uuid(name)
        self.status: str | None = None
        self.created: bool | None = None
        self.service_ports: list[dict[str, Any]] = []
        self.domain: str | None = None
        self.group: str | None = None

    def __repr__(self) -> str:
        return f"ComputeSession(name={self.name!r}, id={self.id}, status={self.status!r})"

    @property
    def path(self) -> str:
        """The session's REST path, ``/session/<name, percent-encoded>``."""
        return f"/session/{quote(self.name, safe='')}"

    @property
    def stream_path(self) -> str:
        """The session's WebSocket path, ``/stream/session/<name, percent-encoded>``."""
        return f"/stream/session/{quote(self.name, safe='')}"

    def owner_params(self) -> dict[str, str]:
        """The query parameters naming the session's owner (empty unless one was given)."""
        return {"owner_access_key": self.owner_access_key} if self.owner_access_key else {}

    @classmethod
    async def create(
        cls,
        api: APIClient,
        image: str,
        *,
        name: str,
        type: str = "interactive",
        enqueue_only: bool = False,
        max_wait: int = 0,
        reuse_if_exists: bool = True,
        resources: Mapping[str, str | int] | None = None,
        environ: Mapping[str, str] | None = None,
        mounts: Sequence[str] = (),
        mount_map: Mapping[str, str] | None = None,
        resource_opts: Mapping[str, str | int] | None = None,
        cluster_size: int = 1,
        cluster_mode: str = "single-node",
        startup_command: str | None = None,
        bootstrap_script: str | None = None,
        dependencies: Sequence[str] = (),
        starts_at: str | None = None,
        tag: str | None = None,
        domain: str | None = None,
        group: str | None = None,
        scaling_group: str | None = None,
        architecture: str | None = None,
        callback_url: str | None = None,
        owner_access_key: str | None = None,
    ) -> ComputeSession:
        """``POST /session``: create a session, or reuse a running one of the same name.

        Unless *enqueue_only*, the server answers once the session started
        (or after *max_wait* seconds, when not zero).  The handle's ``status``
        then tells what happened: ``RUNNING``, ``PENDING``, ``SCHEDULED``,
        ``TIMEOUT``, ``ERROR``, ``CANCELLED`` or ``TERMINATED``; ``created``
        is false when an existing session was reused.  Vfolders from the
        config's ``vfolder_mounts`` are mounted too.
        """
        config = api.config
        all_mounts = list(dict.fromkeys([*mounts, *config.vfolder_mounts]))
        creation_config = _drop_none(
            {
                "mounts": all_mounts or None,
                "mount_map": dict(mount_map) if mount_map else None,
                "environ": dict(environ) if environ else None,
                "resources": {k: str(v) for k, v in resources.items()} if resources else None,
                "resource_opts": dict(resource_opts) if resource_opts else None,
                "scalingGroup": scaling_group,
            }
        )
        body = _drop_none(
            {
                "name": name,
                "image": image,
                "type": type,
                "domain": domain or config.domain,
                "group": group or config.group,
                "cluster_size": cluster_size,
                "cluster_mode": cluster_mode,
                "enqueueOnly": enqueue_only,
                "maxWaitSeconds": max_wait,
                "reuseIfExists": reuse_if_exists,
                "config": creation_config,
                "tag": tag,
                "startupCommand": startup_command,
                "bootstrap_script": bootstrap_script,
                "dependencies": list(dependencies) or None,
                "starts_at": starts_at,
                "arch": architecture,
                "callback_url": callback_url,
                "owner_access_key": owner_access_key,
            }
        )
        data = await api.fetch_json("POST", "/session", json_body=body)
        if not isinstance(data, dict):
            raise MalformedResponse("is not an object", value=data, field="creation answer")
        raw_id = data.get("sessionId")
        session_id = _as_uuid(raw_id) if isinstance(raw_id, str) else None
        session = cls(api, name, owner_access_key=owner_access_key, session_id=session_id)
        session.status = str(data.get("status") or "RUNNING")
        session.created = bool(data.get("created", True))
        ports = data.get("servicePorts") or []
        if not isinstance(ports, list):
            raise MalformedResponse("is not a list", value=ports, field="servicePorts")
        session.service_ports = [p for p in ports if isinstance(p, dict)]
        session.domain = body["domain"]
        session.group = body["group"]
        return session

    async def info(self) -> dict[str, Any]:
        """``GET /session/{name}``: what the server knows about the session."""
        data = await self.api.fetch_json("GET", self.path, params=self.owner_params())
        if not isinstance(data, dict):
            raise MalformedResponse("is not an object", value=data, field="session info")
        return data

    async def destroy(self, *, forced: bool = False, recursive: bool = False) -> dict[str, Any]:
        """``DELETE /session/{name}``: terminate (or cancel, if pending) the session.

        Returns the response body (it may hold the final ``stats``), ``{}`` if empty.
        """
        params: dict[str, Any] = {**self.owner_params()}
        if forced:
            params["forced"] = True
        if recursive:
            params["recursive"] = True
        data = await self.api.fetch_json("DELETE", self.path, params=params)
        return data if isinstance(data, dict) else {}

    async def restart(self) -> None:
        """``PATCH /session/{name}``: restart the session's kernels (scratch files stay)."""
        await self.api.request("PATCH", self.path, params=self.owner_params())

    async def rename(self, new_name: str) -> None:
        """``POST /session/{name}/rename``; the handle follows the new name."""
        await self.api.request(
            "POST", f"{self.path}/rename", params={"name": new_name, **self.owner_params()}
        )
        self.name = new_name

    async def execute(
        self,
        code: str = "",
        *,
        mode: str = "query",
        run_id: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> ExecutionResult:
        """``POST /session/{name}``: one call of the execute API.

        *mode* is ``query``, ``batch``, ``continue`` or ``input``; pass the
        ``run_id`` of the first answer to the later calls of the same run.
        """
        if mode not in _EXECUTE_MODES:
            raise BackendClientError(
                f"execution mode must be one of {', '.join(sorted(_EXECUTE_MODES))}, got {mode!r}"
            )
        body: dict[str, Any] = {"mode": mode, "code": code, "runId": run_id}
        if mode == "batch":
            body["options"] = batch_options(options)
        elif options:
            body["options"] = dict(options)
        data = await self.api.fetch_json(
            "POST", self.path, params=self.owner_params(), json_body=body
        )
        return ExecutionResult.from_json(data)

    async def run(
        self,
        code: str = "",
        *,
        mode: str = "query",
        options: Mapping[str, Any] | None = None,
        read_input: InputReader | None = None,
    ) -> AsyncGenerator[ExecutionResult, None]:
        """Drive one run to its end, yielding every answer as it arrives.

        *mode* is ``query`` (run *code*) or ``batch`` (clean/build/exec per
        *options*).  On ``waiting-input`` the run asks ``read_input`` and sends
        its answer; without one it raises :class:`BackendClientError` (the
        run stays blocked on the server until the session is interrupted).
        Iterate it inside ``contextlib.aclosing`` if you may stop early.
        """
        if mode not in ("query", "batch"):
            raise BackendClientError(f"a run starts in query or batch mode, not {mode!r}")
        result = await self.execute(code, mode=mode, options=options)
        while True:
            yield result
            if result.is_final:
                return
            if result.status in _CONTINUE_STATUSES:
                next_mode, next_code = "continue", ""
            elif result.status == "waiting-input":
                if read_input is None:
                    raise BackendClientError(
                        "the code waits for input and no input reader was given"
                    )
                next_mode, next_code = "input", await read_input(result.wants_password)
            else:
                raise MalformedResponse(
                    "is not a known status", value=result.status, field="status"
                )
            result = await self.execute(next_code, mode=next_mode, run_id=result.run_id)

    async def interrupt(self) -> None:
        """``POST /session/{name}/interrupt``: ask the running code to stop."""
        await self.api.request("POST", f"{self.path}/interrupt", params=self.owner_params())

    async def complete(
        self, code: str, *, post: str = "", line: str = "", row: int = 0, col: int = 0
    ) -> list[str]:
        """``POST /session/{name}/complete``: auto-completion candidates for *code*."""
        body = {"code": code, "options": {"post": post, "line": line, "row": row, "col": col}}
        data = await self.api.fetch_json(
            "POST", f"{self.path}/complete", params=self.owner_params(), json_body=body
        )
        if isinstance(data, dict):
            data = data.get("result", [])
        if not isinstance(data, list):
            raise MalformedResponse("is not a list", value=data, field="completion answer")
        return [str(item) for item in data]

    async def upload(
        self,
        files: Sequence[str | os.PathLike[str]],
        *,
        basedir: str | os.PathLike[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        """``POST /session/{name}/upload``: put local *files* under ``/home/work``.

        Each file lands at its path relative to *basedir* (default: the current
        directory); *progress* is called with each number of bytes sent.
        """
        planned = await trio.to_thread.run_sync(plan_upload, files, basedir)
        body = MultipartUpload(planned, progress=progress)
        await self.api.request(
            "POST",
            f"{self.path}/upload",
            params=self.owner_params(),
            content=body,
            content_type=body.content_type,
            content_length=body.content_length,
        )

    async def download(
        self,
        files: Sequence[str],
        *,
        dest: str | os.PathLike[str] = ".",
        progress: ProgressCallback | None = None,
    ) -> list[str]:
        """``GET /session/{name}/download``: fetch *files* into the local *dest*.

        The server answers tar archives (one per multipart part); they are
        unpacked into *dest* and the member names are returned.  *progress* is
        called with each number of bytes received.
        """
        dest_path = Path(dest)
        names: list[str] = []
        wanted = [str(f) for f in files]
        # The spec lists `files` as a query parameter and the official client
        # sends it as a JSON body; sending both suits servers reading either.
        async with self.api.stream(
            "GET",
            f"{self.path}/download",
            params={"files": wanted, **self.owner_params()},
            json_body={"files": wanted},
        ) as response:
            content_type = response.headers.get("Content-Type", "")
            if content_type.split(";")[0].strip().lower() == "application/x-tar":
                parser: MultipartParser | None = None
            else:
                parser = MultipartParser(boundary_of(content_type))
            spool: Any = None
            try:
                if parser is None:
                    spool = await _open_spool()
                async for chunk in response.aiter_bytes():
                    if progress is not None:
                        progress(len(chunk))
                    if parser is None:
                        await trio.to_thread.run_sync(spool.write, chunk)
                        continue
                    for event in parser.feed(chunk):
                        if isinstance(event, PartStart):
                            spool = await _open_spool()
                        elif isinstance(event, PartData):
                            await trio.to_thread.run_sync(spool.write, event.data)
                        elif isinstance(event, PartEnd):
                            names += await trio.to_thread.run_sync(_extract_tar, spool, dest_path)
                            spool = None
                if parser is None:
                    names += await trio.to_thread.run_sync(_extract_tar, spool, dest_path)
                    spool = None
                else:
                    parser.close()
            finally:
                if spool is not None:
                    await trio.to_thread.run_sync(spool.close)
        return names

    async def download_single(self, file: str) -> bytes:
        """``GET /session/{name}/download_single``: one small file's content."""
        response = await self.api.request(
            "GET", f"{self.path}/download_single", params={"file": file, **self.owner_params()}
        )
        return response.body

    async def list_files(self, path: str = ".") -> FileListing:
        """``GET /session/{name}/files``: the entries of *path* inside the session."""
        data = await self.api.fetch_json(
            "GET",
            f"{self.path}/files",
            params={"path": path, **self.owner_params()},
            json_body={"path": path},
        )
        if not isinstance(data, dict):
            raise MalformedResponse("is not an object", value=data, field="file listing")
        raw_files = data.get("files", [])
        if isinstance(raw_files, str):
            try:
                raw_files = json.loads(raw_files) if raw_files else []
            except ValueError:
                raise MalformedResponse("is not JSON", value=raw_files, field="files") from None
        if not isinstance(raw_files, list):
            raise MalformedResponse("is not a list", value=raw_files, field="files")
        entries: list[FileEntry] = []
        for item in raw_files:
            try:
                entries.append(
                    FileEntry(
                        filename=str(item["filename"]),
                        size=int(item.get("size", 0)),
                        mode=str(item.get("mode", "")),
                        mtime=float(item.get("mtime", 0)),
                    )
                )
            except (KeyError, TypeError, ValueError, AttributeError):
                raise MalformedResponse("is not a file entry", value=item, field="files") from None
        errors = data.get("errors") or ""
        return FileListing(
            folder_path=str(data.get("folder_path", path)),
            files=tuple(entries),
            errors=errors if isinstance(errors, str) else json.dumps(errors),
        )

    async def apps(self) -> list[AppInfo]:
        """``GET /stream/session/{name}/apps``: the app services the session offers."""
        data = await self.api.fetch_json(
            "GET", f"{self.stream_path}/apps", params=self.owner_params()
        )
        if not isinstance(data, list):
            raise MalformedResponse("is not a list", value=data, field="apps answer")
        return [AppInfo.from_json(item) for item in data]

    async def start_service(
        self,
        app: str,
        *,
        port: int | None = None,
        envs: Mapping[str, str] | None = None,
        arguments: Mapping[str, Any] | None = None,
        login_session_token: str | None = None,
    ) -> dict[str, Any]:
        """``POST /session/{name}/start-service``: start *app* for the app proxy.

        Returns the answer, whose ``token`` and ``wsproxy_addr`` (both checked
        to be text) make the browser URL
        ``{wsproxy_addr}/v2/proxy/{token}/{session id}/add?app={app}``.
        *envs* and *arguments* are sent as JSON text, as the official client
        sends them.
        """
        body = _drop_none(
            {
                "app": app,
                "port": port,
                "envs": json.dumps(dict(envs)) if envs else None,
                "arguments": json.dumps(dict(arguments)) if arguments else None,
                "login_session_token": login_session_token,
            }
        )
        data = await self.api.fetch_json(
            "POST", f"{self.path}/start-service", params=self.owner_params(), json_body=body
        )
        if not isinstance(data, dict):
            raise MalformedResponse("is not an object", value=data, field="start-service answer")
        for key in ("token", "wsproxy_addr"):
            if not isinstance(data.get(key), str):
                raise MalformedResponse("is missing or not a string", value=data, field=key)
        return data

    async def shutdown_service(self, service_name: str) -> None:
        """``POST /session/{name}/shutdown-service``: stop the app *service_name*."""
        await self.api.request(
            "POST",
            f"{self.path}/shutdown-service",
            params=self.owner_params(),
            json_body={"service_name": service_name},
        )

    async def logs(self) -> str:
        """``GET /session/{name}/logs``: the console log of the session's main kernel."""
        data = await self.api.fetch_json("GET", f"{self.path}/logs", params=self.owner_params())
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, dict) or not isinstance(result.get("logs", ""), str):
            raise MalformedResponse("has no result.logs text", value=data, field="logs answer")
        logs: str = result.get("logs", "")
        return logs

    async def status_history(self) -> dict[str, Any]:
        """``GET /session/{name}/status-history``: when the session entered each status."""
        data = await self.api.fetch_json(
            "GET", f"{self.path}/status-history", params=self.owner_params()
        )
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, dict):
            raise MalformedResponse("has no result object", value=data, field="status history")
        return result

    def events(self, scope: str = "*") -> AbstractAsyncContextManager[AsyncIterator[SSEEvent]]:
        """``GET /events/session`` for this session: ``async with sess.events() as evs``.

        *scope* is ``*``, ``session`` or ``kernel``.  Each event's ``data`` is
        a JSON object (``sessionId``, ``ownerAccessKey``, ``reason``, ...).
        """
        params: dict[str, Any] = {"scope": scope}
        if self.id is not None:
            params["sessionId"] = str(self.id)
        else:
            params["name"] = self.name
        if self.owner_access_key:
            params["ownerAccessKey"] = self.owner_access_key
        return self.api.events("/events/session", params=params)


def session_events(
    api: APIClient, *, group: str = "*", scope: str = "*"
) -> AbstractAsyncContextManager[AsyncIterator[SSEEvent]]:
    """Lifecycle events of every session the keypair may see (``name=*``)."""
    params: QueryParams = {"name": "*", "group": group, "scope": scope}
    return api.events("/events/session", params=params)


async def _open_spool() -> Any:
    return await trio.to_thread.run_sync(
        lambda: tempfile.TemporaryFile(prefix="bai-download-", suffix=".tar")
    )


def _extract_tar(spool: Any, dest: Path) -> list[str]:
    try:
        spool.seek(0)
        dest.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(fileobj=spool, mode="r:*") as archive:
                names = archive.getnames()
                archive.extractall(dest, filter="data")
        except tarfile.FilterError as exc:
            raise BackendClientError(f"refused to extract a downloaded file: {exc}") from None
        except tarfile.TarError as exc:
            raise MalformedResponse(
                f"is not a tar archive ({exc})", value=None, field="downloaded data"
            ) from None
        return names
    finally:
        spool.close()
