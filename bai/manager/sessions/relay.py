"""Relaying to a running session's main kernel: execute, interrupt, complete, files, logs.

Each call goes to the kernel's agent; an error the agent answers becomes the
session error it means.  Each execute call is counted as a query and a use
of the session (:class:`~bai.manager.sessions.activity.SessionActivity`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import secrets
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

import trio

from bai.common.agent_api import AgentErrorType, AgentMethod
from bai.common.errors import BaiError
from bai.common.rpc import RemoteError
from bai.common.scratch_paths import ScratchPathError, split_path, split_upload_paths
from bai.common.types import RUNNING_STATUSES, STARTED_KERNEL_STATUSES, KernelStatus
from bai.manager.errors import AgentNotFound, AgentUnavailable
from bai.manager.sessions.activity import SessionActivity
from bai.manager.sessions.errors import (
    AgentError,
    InvalidSessionRequest,
    KernelFileError,
    SessionFileTooLarge,
    SessionNotRunning,
)
from bai.manager.sessions.model import KernelInfo, SessionInfo, SessionRef
from bai.manager.sessions.queries import SessionLookup
from bai.manager.sessions.state import ClusterLink, Timeouts

__all__ = [
    "EXECUTE_MODES",
    "MAX_DOWNLOAD_FILES",
    "MAX_UPLOAD_FILES",
    "MAX_UPLOAD_FILE_SIZE",
    "Relay",
]

log = logging.getLogger(__name__)

#: Files one upload may carry, and bytes per file (the spec's limits).
MAX_UPLOAD_FILES: Final = 20
MAX_UPLOAD_FILE_SIZE: Final = 1024 * 1024
#: Paths one download may name.
MAX_DOWNLOAD_FILES: Final = 5
#: The execute modes of the spec.
EXECUTE_MODES: Final = ("query", "batch", "continue", "input", "complete")
_RUN_ID_MAX: Final = 256


def _map_remote(exc: RemoteError, path_field: str | None = None) -> BaiError:
    """The registry error for an error an agent answered to a kernel operation.

    *path_field* names the request's field that a refused path came from.
    """
    detail = exc.detail if isinstance(exc.detail, Mapping) else {}
    field_name = detail.get("field") if isinstance(detail.get("field"), str) else None
    problem = detail.get("problem")
    message = exc.remote_message
    kind = exc.remote_type
    if kind == AgentErrorType.SCRATCH_PATH_ERROR and path_field is not None:
        field_name = path_field
    if kind in (
        AgentErrorType.INVALID_REQUEST,
        AgentErrorType.RUN_ERROR,
        AgentErrorType.SCRATCH_PATH_ERROR,
    ):
        if isinstance(problem, str):
            # The agent's message already names its field and value: say them once.
            return InvalidSessionRequest(problem, value=detail.get("value"), field=field_name)
        return InvalidSessionRequest(message, value=None, field=field_name)
    if kind == AgentErrorType.FILE_TOO_LARGE and isinstance(problem, str):
        return SessionFileTooLarge(problem, value=detail.get("value"), field=path_field)
    if kind == AgentErrorType.KERNEL_FILE_ERROR:
        return KernelFileError(message)
    if kind == AgentErrorType.FILE_OPERATION_TIMEOUT:
        return AgentUnavailable(message)
    if kind in (
        AgentErrorType.KERNEL_NOT_FOUND,
        AgentErrorType.KERNEL_NOT_RUNNING,
        AgentErrorType.RUNNER_LINK_ERROR,
    ):
        return SessionNotRunning(f"the session's kernel is not running: {message}")
    return AgentError(f"{kind}: {message}")


class Relay:
    """Calls on the main kernel of a session, through its agent."""

    def __init__(
        self,
        cluster: ClusterLink,
        lookup: SessionLookup,
        timeouts: Timeouts,
        activity: SessionActivity,
    ) -> None:
        self._cluster = cluster
        self._lookup = lookup
        self._rpc_timeout = timeouts.rpc
        self._flush_timeout = timeouts.flush
        self._activity = activity

    def running_main(self, info: SessionInfo) -> KernelInfo:
        """The session's main kernel; SessionNotRunning unless it runs on a known agent."""
        kernel = info.main_kernel
        if info.status not in RUNNING_STATUSES or kernel.status not in (
            KernelStatus.RUNNING,
            KernelStatus.RUNNING_DEGRADED,
        ):
            raise SessionNotRunning(f"session {info.name} is {info.status.value}, not RUNNING")
        if kernel.agent is None:
            raise SessionNotRunning(f"session {info.name} has no agent")
        return kernel

    async def kernel_call(
        self,
        kernel: KernelInfo,
        method: str,
        args: Mapping[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - per-call deadline
        path_field: str | None = None,
    ) -> Any:
        """Call *method* on *kernel*'s agent; its errors become the session errors they mean."""
        assert kernel.agent is not None
        try:
            return await self._cluster.call(kernel.agent, method, dict(args), timeout=timeout)
        except RemoteError as exc:
            raise _map_remote(exc, path_field) from None
        except AgentNotFound as exc:
            raise SessionNotRunning(str(exc)) from None

    async def execute(
        self,
        session: SessionRef,
        *,
        mode: str,
        code: str = "",
        run_id: str | None = None,
        options: Mapping[str, Any] | None = None,
        flush_timeout: float | None = None,
    ) -> dict[str, Any]:
        """One execute call of the spec's long-poll, relayed to the main kernel.

        *mode* is ``query`` or ``batch`` (a new run; *run_id* is generated
        when missing), ``continue`` or ``input`` (the same *run_id*; *code*
        carries the input), or ``complete``.  Returns the Execution Result
        Object ``{runId, status, exitCode, console, options}`` the agent
        answered once the run finished a step or *flush_timeout* seconds
        (``manager.execute-flush-timeout`` by default) passed (status
        ``continued``); for ``complete``, ``{"status": "finished",
        "completions": [...]}``.  Raises :class:`InvalidSessionRequest`,
        :class:`SessionNotRunning`, :class:`AgentUnavailable` or
        :class:`AgentError`.
        """
        if mode not in EXECUTE_MODES:
            raise InvalidSessionRequest(
                f"must be one of {', '.join(EXECUTE_MODES)}", value=mode, field="mode"
            )
        if not isinstance(code, str):
            raise InvalidSessionRequest("must be a string", value=code, field="code")
        info = await self._lookup.resolve(session)
        if mode == "complete":
            return {"status": "finished", "completions": await self.complete(info, code, options)}
        kernel = self.running_main(info)
        if run_id is None or run_id == "":
            if mode in ("continue", "input"):
                raise InvalidSessionRequest(
                    f"a {mode} call must name the run it continues", value=run_id, field="runId"
                )
            run_id = secrets.token_hex(8)
        if not isinstance(run_id, str) or len(run_id) > _RUN_ID_MAX:
            raise InvalidSessionRequest(
                f"must be a string of at most {_RUN_ID_MAX} characters", value=run_id, field="runId"
            )
        if options is not None and not isinstance(options, Mapping):
            raise InvalidSessionRequest("must be an object", value=options, field="options")
        flush = self._flush_timeout if flush_timeout is None else flush_timeout
        if not 0 < flush <= 3600:
            raise InvalidSessionRequest(
                "must be between 0 and 3600 seconds", value=flush, field="flush_timeout"
            )
        args: dict[str, Any] = {
            "kernel_id": str(kernel.id),
            "run_id": run_id,
            "mode": mode,
            "code": code,
            "flush_timeout": flush,
        }
        if mode == "batch":
            args["options"] = dict(options or {})
        result: dict[str, Any] = await self.kernel_call(
            kernel, AgentMethod.EXECUTE, args, timeout=flush + self._rpc_timeout
        )
        if mode in ("query", "batch"):
            self._activity.count_query(info.id)
        else:
            self._activity.touch(info.id)
        return result

    async def interrupt(self, session: SessionRef) -> None:
        """Send an interrupt to the main kernel's current run (no guarantee it stops)."""
        kernel = self.running_main(await self._lookup.resolve(session))
        await self.kernel_call(kernel, AgentMethod.INTERRUPT_KERNEL, {"kernel_id": str(kernel.id)})

    async def complete(
        self, session: SessionRef, code: str, options: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Auto-completion candidates for *code* from the main kernel (may be empty)."""
        kernel = self.running_main(await self._lookup.resolve(session))
        args: dict[str, Any] = {"kernel_id": str(kernel.id), "code": code}
        if options:
            args["options"] = {
                k: options[k] for k in ("post", "line", "row", "col") if options.get(k) is not None
            }
        result = await self.kernel_call(kernel, AgentMethod.GET_COMPLETIONS, args)
        return [item for item in result if isinstance(item, str)]

    async def upload_files(
        self, session: SessionRef, files: Sequence[tuple[str, bytes]]
    ) -> list[dict[str, Any]]:
        """Write *files* (``(path, data)``) under the main kernel's ``/home/work``.

        At most :data:`MAX_UPLOAD_FILES` files of :data:`MAX_UPLOAD_FILE_SIZE`
        bytes each, with paths inside ``/home/work`` (checked before anything
        is sent); the agent writes all of them or, when it refuses one, none.
        Returns ``[{"path": absolute path, "size": bytes}]``.
        """
        if len(files) > MAX_UPLOAD_FILES:
            raise InvalidSessionRequest(
                f"at most {MAX_UPLOAD_FILES} files may be uploaded at once",
                value=len(files),
                field="files",
            )
        for path, data in files:
            if len(data) > MAX_UPLOAD_FILE_SIZE:
                raise SessionFileTooLarge(
                    f"a file may have at most {MAX_UPLOAD_FILE_SIZE} bytes",
                    value=len(data),
                    field=path,
                )
        with _refused_paths():
            split_upload_paths([path for path, _ in files], field="files")
        kernel = self.running_main(await self._lookup.resolve(session))
        written: list[dict[str, Any]] = await self.kernel_call(
            kernel,
            AgentMethod.UPLOAD_FILES,
            {
                "kernel_id": str(kernel.id),
                "files": [{"path": path, "data": bytes(data)} for path, data in files],
            },
            path_field="files",
        )
        return written

    async def download_files(self, session: SessionRef, paths: Sequence[str]) -> list[bytes]:
        """A tar archive of each path (file or folder) under the main kernel's ``/home/work``."""
        if not 1 <= len(paths) <= MAX_DOWNLOAD_FILES:
            raise InvalidSessionRequest(
                f"name 1 to {MAX_DOWNLOAD_FILES} files", value=len(paths), field="files"
            )
        return await self._download(session, paths, "files")

    async def download_single(self, session: SessionRef, path: str) -> bytes:
        """The content of one regular file under the main kernel's ``/home/work``."""
        (archive,) = await self._download(session, [path], "file")
        return await trio.to_thread.run_sync(_single_file, archive, path)

    async def _download(
        self, session: SessionRef, paths: Sequence[str], path_field: str
    ) -> list[bytes]:
        with _refused_paths():
            for path in paths:
                split_path(path, field=path_field)
        kernel = self.running_main(await self._lookup.resolve(session))
        archives = []
        for path in paths:
            data = await self.kernel_call(
                kernel,
                AgentMethod.DOWNLOAD_FILE,
                {"kernel_id": str(kernel.id), "path": path},
                path_field=path_field,
            )
            archives.append(bytes(data))
        return archives

    async def list_files(self, session: SessionRef, path: str = ".") -> dict[str, Any]:
        """The main kernel's listing of *path*: ``{"files": JSON text, "errors", "abspath"}``."""
        with _refused_paths():
            split_path(path, allow_root=True)
        kernel = self.running_main(await self._lookup.resolve(session))
        result: dict[str, Any] = await self.kernel_call(
            kernel,
            AgentMethod.LIST_FILES,
            {"kernel_id": str(kernel.id), "path": path},
            path_field="path",
        )
        return result

    async def get_logs(self, session: SessionRef) -> str:
        """The main kernel's recent console log (the runner's output), as text."""
        info = await self._lookup.resolve(session)
        kernel = info.main_kernel
        if kernel.agent is None or kernel.status not in STARTED_KERNEL_STATUSES:
            raise SessionNotRunning(f"session {info.name} has no running kernel to read logs from")
        result = await self.kernel_call(kernel, AgentMethod.GET_LOGS, {"kernel_id": str(kernel.id)})
        logs = result.get("logs", "") if isinstance(result, Mapping) else ""
        return logs if isinstance(logs, str) else ""


@contextlib.contextmanager
def _refused_paths() -> Iterator[None]:
    """Refuse a path the agent would refuse as a bad request, before asking it."""
    try:
        yield
    except ScratchPathError as exc:
        raise InvalidSessionRequest(exc.problem, value=exc.value, field=exc.field) from None


def _single_file(archive: bytes, path: str) -> bytes:
    """The content of the one regular file in a tar archive from ``download_file``."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
            members = tar.getmembers()
            files = [m for m in members if m.isfile()]
            if len(files) != 1 or len(members) != 1:
                raise InvalidSessionRequest(
                    "names a folder, not a single file", value=path, field="file"
                )
            handle = tar.extractfile(files[0])
            if handle is None:
                raise InvalidSessionRequest("cannot be read", value=path, field="file")
            return handle.read()
    except tarfile.TarError as exc:
        raise AgentError(f"the agent sent an unreadable archive: {exc}") from None
