"""A blocking facade over the async client, for scripts and notebooks.

``with SyncAPIClient() as api: sess = api.create_session("python", name="s1")``
runs a Trio event loop in one background thread for the life of the ``with``
block; every method hands its coroutine to that loop (``trio.from_thread``)
and waits for the answer, so one connection pool serves all calls.

Guarantees: exceptions are the async client's own (they cross the thread
unchanged); leaving the block closes the connection pool and joins the
thread; calling a blocking method from inside a Trio task raises
``RuntimeError`` instead of deadlocking.  Event streams and the WebSocket
streams of :mod:`bai.client.stream` are not offered here: use
:class:`~bai.client.request.APIClient` for those.  Sessions and virtual
folders have blocking handles (:class:`SyncComputeSession`,
:class:`SyncVFolder`).
"""

from __future__ import annotations

import functools
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, TypeVar

import trio

from bai.client.admin import SessionPage, list_sessions
from bai.client.exceptions import BackendClientError
from bai.client.multipart import ProgressCallback
from bai.client.request import APIClient
from bai.client.session import AppInfo, ComputeSession, ExecutionResult, FileListing
from bai.client.settings import APIConfig
from bai.client.shared_config import delete_config, get_config, set_config
from bai.client.vfolder import FolderEntry, Transferred, VFolder

__all__ = ["SyncAPIClient", "SyncComputeSession", "SyncVFolder"]

T = TypeVar("T")


class SyncAPIClient:
    """Blocking twin of :class:`~bai.client.request.APIClient` (use as a context manager)."""

    def __init__(self, config: APIConfig | None = None) -> None:
        self.config = APIConfig.from_env() if config is None else config
        self._api: APIClient | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    def __enter__(self) -> SyncAPIClient:
        self._thread = threading.Thread(target=self._main, name="bai-client-loop", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        if self._thread is not None:
            self._thread.join()
        self._token = self._stop = self._api = self._thread = None

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:
            if not self._ready.is_set():
                self._startup_error = exc
                self._ready.set()
            else:
                raise

    async def _serve(self) -> None:
        async with APIClient(self.config) as api:
            self._api = api
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)`` on the client's loop and return its result."""
        if self._token is None:
            raise BackendClientError("SyncAPIClient used outside its `with` block")
        return trio.from_thread.run(functools.partial(fn, *args, **kwargs), trio_token=self._token)

    @property
    def api(self) -> APIClient:
        """The async client living on the background loop (use it only through :meth:`call`)."""
        if self._api is None:
            raise BackendClientError("SyncAPIClient used outside its `with` block")
        return self._api

    def hello(self) -> dict[str, Any]:
        """``GET /``: the server's versions."""
        return self.call(self.api.hello)

    def create_session(self, image: str, *, name: str, **options: Any) -> SyncComputeSession:
        """Create (or reuse) a session; options as :meth:`ComputeSession.create`."""
        session = self.call(ComputeSession.create, self.api, image, name=name, **options)
        return SyncComputeSession(self, session)

    def session(self, name: str, *, owner_access_key: str | None = None) -> SyncComputeSession:
        """A handle on an existing session (no request is sent)."""
        return SyncComputeSession(
            self, ComputeSession(self.api, name, owner_access_key=owner_access_key)
        )

    def list_sessions(self, **options: Any) -> SessionPage:
        """One page of sessions; options as :func:`bai.client.admin.list_sessions`."""
        return self.call(list_sessions, self.api, **options)

    def vfolder(self, name: str) -> SyncVFolder:
        """A handle on a virtual folder (no request is sent).

        Calls on no single folder (``VFolder.create``, ``list``, ``trash``...)
        go through :meth:`call`: ``client.call(VFolder.list, client.api)``.
        """
        return SyncVFolder(self, VFolder(self.api, name))

    def get_config(self, key: str, *, prefix: bool = False) -> Any:
        return self.call(get_config, self.api, key, prefix=prefix)

    def set_config(self, key: str, value: str | Mapping[str, Any]) -> None:
        self.call(set_config, self.api, key, value)

    def delete_config(self, key: str, *, prefix: bool = False) -> None:
        self.call(delete_config, self.api, key, prefix=prefix)


class SyncComputeSession:
    """Blocking twin of :class:`~bai.client.session.ComputeSession`."""

    def __init__(self, client: SyncAPIClient, session: ComputeSession) -> None:
        self._client = client
        self.session = session

    def __repr__(self) -> str:
        return f"Sync{self.session!r}"

    @property
    def name(self) -> str:
        return self.session.name

    @property
    def id(self) -> uuid.UUID | None:
        return self.session.id

    @property
    def status(self) -> str | None:
        return self.session.status

    @property
    def created(self) -> bool | None:
        return self.session.created

    @property
    def service_ports(self) -> list[dict[str, Any]]:
        return self.session.service_ports

    def info(self) -> dict[str, Any]:
        return self._client.call(self.session.info)

    def destroy(self, *, forced: bool = False, recursive: bool = False) -> dict[str, Any]:
        return self._client.call(self.session.destroy, forced=forced, recursive=recursive)

    def restart(self) -> None:
        self._client.call(self.session.restart)

    def rename(self, new_name: str) -> None:
        self._client.call(self.session.rename, new_name)

    def execute(
        self,
        code: str = "",
        *,
        mode: str = "query",
        run_id: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> ExecutionResult:
        return self._client.call(
            self.session.execute, code, mode=mode, run_id=run_id, options=options
        )

    def run(
        self,
        code: str = "",
        *,
        mode: str = "query",
        options: Mapping[str, Any] | None = None,
        read_input: Callable[[bool], str] | None = None,
        on_result: Callable[[ExecutionResult], None] | None = None,
    ) -> list[ExecutionResult]:
        """Drive a whole run and return every answer; see :meth:`ComputeSession.run`.

        *read_input* (called with whether a password is asked) and *on_result*
        (called with each answer as it arrives) run in a worker thread.
        """

        async def read(is_password: bool) -> str:
            assert read_input is not None
            return await trio.to_thread.run_sync(read_input, is_password)

        async def drive() -> list[ExecutionResult]:
            results: list[ExecutionResult] = []
            stream = self.session.run(
                code, mode=mode, options=options, read_input=read if read_input else None
            )
            async with aclosing(stream) as answers:
                async for result in answers:
                    results.append(result)
                    if on_result is not None:
                        await trio.to_thread.run_sync(on_result, result)
            return results

        return self._client.call(drive)

    def interrupt(self) -> None:
        self._client.call(self.session.interrupt)

    def complete(self, code: str, **options: Any) -> list[str]:
        return self._client.call(self.session.complete, code, **options)

    def upload(
        self,
        files: Sequence[str | os.PathLike[str]],
        *,
        basedir: str | os.PathLike[str] | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self._client.call(self.session.upload, files, basedir=basedir, progress=progress)

    def download(
        self,
        files: Sequence[str],
        *,
        dest: str | os.PathLike[str] = ".",
        progress: ProgressCallback | None = None,
    ) -> list[str]:
        return self._client.call(self.session.download, files, dest=dest, progress=progress)

    def download_single(self, file: str) -> bytes:
        return self._client.call(self.session.download_single, file)

    def list_files(self, path: str = ".") -> FileListing:
        return self._client.call(self.session.list_files, path)

    def logs(self) -> str:
        return self._client.call(self.session.logs)

    def apps(self) -> list[AppInfo]:
        return self._client.call(self.session.apps)

    def start_service(self, app: str, **options: Any) -> dict[str, Any]:
        """Options as :meth:`ComputeSession.start_service`."""
        return self._client.call(self.session.start_service, app, **options)

    def shutdown_service(self, service_name: str) -> None:
        self._client.call(self.session.shutdown_service, service_name)

    def status_history(self) -> dict[str, Any]:
        return self._client.call(self.session.status_history)


class SyncVFolder:
    """Blocking twin of :class:`~bai.client.vfolder.VFolder` (its per-folder calls).

    Progress callbacks run on the client's event-loop thread: keep them short.
    """

    def __init__(self, client: SyncAPIClient, folder: VFolder) -> None:
        self._client = client
        self.folder = folder

    def __repr__(self) -> str:
        return f"Sync{self.folder!r}"

    @property
    def name(self) -> str:
        return self.folder.name

    def info(self) -> dict[str, Any]:
        return self._client.call(self.folder.info)

    def delete(self) -> None:
        self._client.call(self.folder.delete)

    def rename(self, new_name: str) -> None:
        self._client.call(self.folder.rename, new_name)

    def update_options(
        self, *, permission: str | None = None, cloneable: bool | None = None
    ) -> None:
        self._client.call(self.folder.update_options, permission=permission, cloneable=cloneable)

    def clone(self, target_name: str, **options: Any) -> dict[str, Any]:
        return self._client.call(self.folder.clone, target_name, **options)

    def mkdir(self, path: str, *, parents: bool = False, exist_ok: bool = False) -> None:
        self._client.call(self.folder.mkdir, path, parents=parents, exist_ok=exist_ok)

    def list_files(self, path: str = ".") -> list[FolderEntry]:
        return self._client.call(self.folder.list_files, path)

    def rename_file(self, target_path: str, new_name: str) -> None:
        self._client.call(self.folder.rename_file, target_path, new_name)

    def move_file(self, src: str, dst: str) -> None:
        self._client.call(self.folder.move_file, src, dst)

    def delete_files(self, files: Sequence[str], *, recursive: bool = False) -> None:
        self._client.call(self.folder.delete_files, files, recursive=recursive)

    def upload(
        self, sources: Sequence[str | os.PathLike[str]], **options: Any
    ) -> list[Transferred]:
        """Options as :meth:`VFolder.upload <bai.client.vfolder.VFolder.upload>`."""
        return self._client.call(self.folder.upload, sources, **options)

    def download(
        self, paths: Sequence[str | os.PathLike[str]], **options: Any
    ) -> list[Transferred]:
        """Options as :meth:`VFolder.download <bai.client.vfolder.VFolder.download>`."""
        return self._client.call(self.folder.download, paths, **options)

    def invite(self, perm: str, emails: Sequence[str]) -> dict[str, Any]:
        return self._client.call(self.folder.invite, perm, emails)

    def share(self, permission: str, emails: Sequence[str]) -> dict[str, Any]:
        return self._client.call(self.folder.share, permission, emails)

    def unshare(self, emails: Sequence[str]) -> dict[str, Any]:
        return self._client.call(self.folder.unshare, emails)

    def leave(self, shared_user_uuid: str | None = None) -> None:
        self._client.call(self.folder.leave, shared_user_uuid)
