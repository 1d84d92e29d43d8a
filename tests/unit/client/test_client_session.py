"""The session SDK against a signature-checking HTTP server with spec-shaped answers."""

from __future__ import annotations

import io
import json
import socket
import tarfile
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from quart import Response

from bai.client import (
    APIClient,
    BackendAPIError,
    BackendClientError,
    ComputeSession,
    ExecutionResult,
    InvalidAPIParameters,
    MalformedResponse,
    NotFound,
    ServerError,
    SyncAPIClient,
    delete_config,
    get_config,
    list_sessions,
    set_config,
)
from bai.client.exceptions import error_from_response
from bai.common.errors import InvalidValue

from support.fakemanager import (
    FakeManager,
    Recorded,
    json_response,
    manager,
    problem,
    result,
    sse_response,
)

__all__ = ["manager"]

SESSION_ID = "12c45b55-ce3c-418d-9c58-223bbba307f1"


def created(status: str = "RUNNING", is_new: bool = True) -> dict[str, Any]:
    return {
        "sessionId": SESSION_ID,
        "sessionName": "s1",
        "status": status,
        "servicePorts": [{"name": "jupyter", "protocol": "http"}],
        "created": is_new,
    }


async def test_create_sends_the_spec_body_and_reads_the_answer(manager: FakeManager) -> None:
    manager.answer("POST", "/session", created(), status=201)
    async with APIClient(manager.config(vfolder_mounts=("home",))) as api:
        session = await ComputeSession.create(
            api,
            "python:3.11",
            name="s1",
            resources={"cpu": 2, "mem": "4g"},
            environ={"A": "1"},
            mounts=["data"],
            mount_map={"data": "/mnt/data"},
            tag="exp-1",
            max_wait=30,
        )
    body = manager.last().json()
    assert body == {
        "name": "s1",
        "image": "python:3.11",
        "type": "interactive",
        "domain": "default",
        "group": "default",
        "cluster_size": 1,
        "cluster_mode": "single-node",
        "enqueueOnly": False,
        "maxWaitSeconds": 30,
        "reuseIfExists": True,
        "tag": "exp-1",
        "config": {
            "mounts": ["data", "home"],
            "mount_map": {"data": "/mnt/data"},
            "environ": {"A": "1"},
            "resources": {"cpu": "2", "mem": "4g"},
        },
    }
    assert str(session.id) == SESSION_ID
    assert (session.status, session.created) == ("RUNNING", True)
    assert session.service_ports == [{"name": "jupyter", "protocol": "http"}]


async def test_batch_creation_carries_the_startup_command(manager: FakeManager) -> None:
    manager.answer("POST", "/session", created("PENDING"), status=201)
    async with APIClient(manager.config()) as api:
        session = await ComputeSession.create(
            api,
            "python",
            name="job-1",
            type="batch",
            startup_command="python train.py",
            enqueue_only=True,
            dependencies=["prep-1"],
            owner_access_key="AKIAOTHER",
        )
    body = manager.last().json()
    assert (body["type"], body["startupCommand"], body["enqueueOnly"]) == (
        "batch",
        "python train.py",
        True,
    )
    assert body["dependencies"] == ["prep-1"]
    assert body["owner_access_key"] == "AKIAOTHER"
    assert session.status == "PENDING"


async def test_problem_body_becomes_a_typed_error(manager: FakeManager) -> None:
    async def reject(recorded: Recorded) -> Response:
        response = problem(400, "invalid-api-params", "Invalid API parameters", "unknown image")
        body = json.loads(await response.get_data())
        body["field"] = "image"
        return json_response(body, 400)

    manager.add("POST", "/session", reject)
    async with APIClient(manager.config()) as api:
        with pytest.raises(InvalidAPIParameters) as caught:
            await ComputeSession.create(api, "nope", name="s1")
    error = caught.value
    assert (error.status, error.error_type, error.title) == (
        400,
        "invalid-api-params",
        "Invalid API parameters",
    )
    assert error.detail == "unknown image"
    assert error.data["field"] == "image"
    assert "unknown image" in str(error)


async def test_non_json_server_failure_is_a_server_error(manager: FakeManager) -> None:
    async def broken(recorded: Recorded) -> Response:
        return Response("upstream exploded", status=502, content_type="text/plain")

    manager.add("GET", "/session/s1", broken)
    async with APIClient(manager.config()) as api:
        with pytest.raises(ServerError) as caught:
            await ComputeSession(api, "s1").info()
    assert caught.value.status == 502
    assert caught.value.detail == "upstream exploded"


async def test_unreachable_endpoint_names_the_endpoint() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = FakeManager().config(endpoint=f"http://127.0.0.1:{port}")
    async with APIClient(config) as api:
        with pytest.raises(BackendClientError, match=f"127.0.0.1:{port}"):
            await ComputeSession(api, "s1").info()


async def test_query_run_continues_until_finished(manager: FakeManager) -> None:
    manager.answer_each(
        "POST",
        "/session/s1",
        [
            result("continued", [["stdout", "Tick 1\n"]], run_id="server-run"),
            result("continued", [["stdout", "Tick 2\n"], ["stderr", "warn\n"]], "server-run"),
            result("finished", [["stdout", "done\n"]], "server-run", exitCode=0),
        ],
    )
    async with APIClient(manager.config()) as api:
        session = ComputeSession(api, "s1")
        async with aclosing(session.run("for i in ...")) as stream:
            answers = [r async for r in stream]
    assert [a.status for a in answers] == ["continued", "continued", "finished"]
    assert [(c.kind, c.data) for a in answers for c in a.console] == [
        ("stdout", "Tick 1\n"),
        ("stdout", "Tick 2\n"),
        ("stderr", "warn\n"),
        ("stdout", "done\n"),
    ]
    sent = [r.json() for r in manager.requests if r.method == "POST"]
    assert sent[0] == {"mode": "query", "code": "for i in ...", "runId": None}
    assert sent[1:] == [{"mode": "continue", "code": "", "runId": "server-run"}] * 2


async def test_waiting_input_asks_the_reader(manager: FakeManager) -> None:
    manager.answer_each(
        "POST",
        "/session/s1",
        [
            result("waiting-input", [["stdout", "Password: "]], options={"is_password": True}),
            result("finished", [["stdout", "ok\n"]], exitCode=0),
        ],
    )
    asked: list[bool] = []

    async def reader(is_password: bool) -> str:
        asked.append(is_password)
        return "hunter2"

    async with (
        APIClient(manager.config()) as api,
        aclosing(ComputeSession(api, "s1").run("x", read_input=reader)) as stream,
    ):
        answers = [r async for r in stream]
    assert asked == [True]
    assert answers[-1].is_final
    assert manager.last().json() == {"mode": "input", "code": "hunter2", "runId": "r1"}


async def test_waiting_input_without_reader_is_an_error(manager: FakeManager) -> None:
    manager.answer("POST", "/session/s1", result("waiting-input", [], options={}))
    async with APIClient(manager.config()) as api:
        with pytest.raises(BackendClientError, match="input"):
            async with aclosing(ComputeSession(api, "s1").run("input()")) as stream:
                async for _ in stream:
                    pass


async def test_batch_run_sends_build_options_and_walks_the_phases(manager: FakeManager) -> None:
    manager.answer_each(
        "POST",
        "/session/s1",
        [
            result("clean-finished", [], exitCode=0),
            result("build-finished", [["stdout", "built\n"]], exitCode=0),
            result("finished", [["stdout", "ran\n"]], exitCode=3),
        ],
    )
    async with APIClient(manager.config()) as api:
        options = {"clean": "*", "build": "make", "exec": "./main"}
        stream = ComputeSession(api, "s1").run(mode="batch", options=options)
        async with aclosing(stream) as results:
            answers: list[ExecutionResult] = [r async for r in results]
    assert [(a.status, a.exit_code) for a in answers] == [
        ("clean-finished", 0),
        ("build-finished", 0),
        ("finished", 3),
    ]
    first = next(r for r in manager.requests if r.method == "POST").json()
    assert first["mode"] == "batch"
    assert first["options"] == {"clean": "*", "build": "make", "buildLog": False, "exec": "./main"}


async def test_malformed_execute_answer_is_a_client_error(manager: FakeManager) -> None:
    manager.answer("POST", "/session/s1", {"result": {"runId": "r", "console": []}})
    async with APIClient(manager.config()) as api:
        with pytest.raises(MalformedResponse) as caught:
            await ComputeSession(api, "s1").execute("1")
    assert caught.value.field == "result.status"
    assert isinstance(caught.value, BackendClientError)


async def test_upload_sends_files_as_standard_form_data(
    manager: FakeManager, tmp_path: Path
) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "main.py").write_text("import pkg.mod\n")
    (tmp_path / "pkg" / "mod.py").write_bytes(b"\x00\x01binary")

    async def accept(recorded: Recorded) -> Response:
        return Response("", status=204)

    manager.add("POST", "/session/s 1/upload", accept)
    progress: list[int] = []
    async with APIClient(manager.config()) as api:
        await ComputeSession(api, "s 1").upload(
            [tmp_path / "main.py", tmp_path / "pkg" / "mod.py"],
            basedir=tmp_path,
            progress=progress.append,
        )
    seen = manager.last()
    assert seen.raw_target == "/session/s%201/upload"
    assert seen.form_files == [
        ("src", "main.py", b"import pkg.mod\n"),
        ("src", "pkg/mod.py", b"\x00\x01binary"),
    ]
    assert sum(progress) == 15 + 8


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def multipart_mixed(parts: list[bytes], boundary: str = "dl-boundary") -> Response:
    body = b""
    for part in parts:
        body += f"--{boundary}\r\nContent-Type: application/x-tar\r\n\r\n".encode() + part + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return Response(body, content_type=f"multipart/mixed; boundary={boundary}")


async def test_download_unpacks_every_tar_part(manager: FakeManager, tmp_path: Path) -> None:
    async def send(recorded: Recorded) -> Response:
        return multipart_mixed(
            [tar_of({"out/result.txt": b"42\n"}), tar_of({"model.bin": bytes(range(256)) * 400})]
        )

    manager.add("GET", "/session/s1/download", send)
    received: list[int] = []
    async with APIClient(manager.config()) as api:
        names = await ComputeSession(api, "s1").download(
            ["out/result.txt", "model.bin"], dest=tmp_path / "dl", progress=received.append
        )
    assert names == ["out/result.txt", "model.bin"]
    assert (tmp_path / "dl" / "out" / "result.txt").read_bytes() == b"42\n"
    assert (tmp_path / "dl" / "model.bin").read_bytes() == bytes(range(256)) * 400
    seen = manager.last()
    assert seen.query["files"] == ["out/result.txt", "model.bin"]
    assert json.loads(seen.body) == {"files": ["out/result.txt", "model.bin"]}
    assert sum(received) > 256 * 400


async def test_download_refuses_paths_escaping_the_destination(
    manager: FakeManager, tmp_path: Path
) -> None:
    async def send(recorded: Recorded) -> Response:
        return multipart_mixed([tar_of({"../../escaped.txt": b"gotcha"})])

    manager.add("GET", "/session/s1/download", send)
    async with APIClient(manager.config()) as api:
        with pytest.raises(BackendClientError, match="refused"):
            await ComputeSession(api, "s1").download(["x"], dest=tmp_path / "dl")
    assert not (tmp_path / "escaped.txt").exists()


async def test_download_accepts_a_plain_tar_answer(manager: FakeManager, tmp_path: Path) -> None:
    async def send(recorded: Recorded) -> Response:
        return Response(tar_of({"a.txt": b"A"}), content_type="application/x-tar")

    manager.add("GET", "/session/s1/download", send)
    async with APIClient(manager.config()) as api:
        assert await ComputeSession(api, "s1").download(["a.txt"], dest=tmp_path) == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "A"


async def test_list_files_parses_the_json_string(manager: FakeManager) -> None:
    files = [{"filename": "main.py", "size": 12, "mode": "-rw-r--r--", "mtime": 1700000000.5}]
    manager.answer(
        "GET",
        "/session/s1/files",
        {"files": json.dumps(files), "folder_path": "/home/work", "errors": ""},
    )
    async with APIClient(manager.config()) as api:
        listing = await ComputeSession(api, "s1").list_files(".")
    assert listing.folder_path == "/home/work"
    assert [(f.filename, f.size, f.mode) for f in listing.files] == [("main.py", 12, "-rw-r--r--")]
    assert manager.last().query == {"path": ["."]}


async def test_logs_and_status_history(manager: FakeManager) -> None:
    manager.answer("GET", "/session/s1/logs", {"result": {"logs": "line 1\nline 2\n"}})
    manager.answer(
        "GET", "/session/s1/status-history", {"result": {"PENDING": "2024-01-01T00:00:00Z"}}
    )
    async with APIClient(manager.config()) as api:
        session = ComputeSession(api, "s1", owner_access_key="AKIAOWNER")
        assert await session.logs() == "line 1\nline 2\n"
        assert await session.status_history() == {"PENDING": "2024-01-01T00:00:00Z"}
    assert manager.last().query == {"owner_access_key": ["AKIAOWNER"]}


async def test_destroy_restart_rename_interrupt(manager: FakeManager) -> None:
    manager.answer("DELETE", "/session/s1", {"stats": {"cpu_used": 10}})

    async def no_content(recorded: Recorded) -> Response:
        return Response("", status=204)

    for method, path in [
        ("PATCH", "/session/s1"),
        ("POST", "/session/s1/rename"),
        ("POST", "/session/s2/interrupt"),
    ]:
        manager.add(method, path, no_content)
    async with APIClient(manager.config()) as api:
        session = ComputeSession(api, "s1")
        assert await session.destroy(forced=True) == {"stats": {"cpu_used": 10}}
        assert manager.last().query == {"forced": ["true"]}
        await session.restart()
        await session.rename("s2")
        assert manager.last().query == {"name": ["s2"]}
        await session.interrupt()
    assert session.name == "s2"
    assert [r.method + " " + r.path for r in manager.requests] == [
        "DELETE /session/s1",
        "PATCH /session/s1",
        "POST /session/s1/rename",
        "POST /session/s2/interrupt",
    ]


async def test_unknown_session_is_not_found(manager: FakeManager) -> None:
    async def missing(recorded: Recorded) -> Response:
        return problem(404, "session-not-found", "No such session.", "s9")

    manager.add("DELETE", "/session/s9", missing)
    async with APIClient(manager.config()) as api:
        with pytest.raises(NotFound, match="No such session"):
            await ComputeSession(api, "s9").destroy()


async def test_session_events_identify_the_session(manager: FakeManager) -> None:
    async def stream(recorded: Recorded) -> Response:
        return sse_response([("session_terminated", {"sessionId": SESSION_ID, "reason": "x"})])

    manager.add("GET", "/events/session", stream)
    async with APIClient(manager.config()) as api:
        async with ComputeSession(api, "s1", owner_access_key="AKIAO").events() as events:
            names = [e.event async for e in events]
        assert manager.last().query == {"scope": ["*"], "name": ["s1"], "ownerAccessKey": ["AKIAO"]}
        async with ComputeSession(api, SESSION_ID).events(scope="session") as events:
            async for _ in events:
                pass
        assert manager.last().query == {"scope": ["session"], "sessionId": [SESSION_ID]}
    assert names == ["session_terminated"]


async def test_list_sessions_queries_graphql(manager: FakeManager) -> None:
    manager.answer(
        "POST",
        "/admin/gql",
        {
            "data": {
                "compute_session_list": {
                    "items": [{"id": SESSION_ID, "name": "s1", "status": "RUNNING"}],
                    "total_count": 7,
                }
            }
        },
    )
    async with APIClient(manager.config()) as api:
        page = await list_sessions(
            api, fields=["id", "name", "status"], statuses=["RUNNING", "PENDING"], limit=5
        )
    assert page.total_count == 7
    assert page.items == [{"id": SESSION_ID, "name": "s1", "status": "RUNNING"}]
    sent = manager.last().json()
    assert "compute_session_list" in sent["query"]
    assert "items { id name status }" in sent["query"]
    assert sent["variables"] == {
        "limit": 5,
        "offset": 0,
        "status": "RUNNING,PENDING",
        "access_key": None,
    }


async def test_graphql_errors_raise_with_their_messages(manager: FakeManager) -> None:
    manager.answer("POST", "/admin/gql", {"data": None, "errors": [{"message": "no such field"}]})
    async with APIClient(manager.config()) as api:
        with pytest.raises(BackendAPIError) as caught:
            await list_sessions(api, fields=["id"])
    assert caught.value.error_type == "graphql-error"
    assert caught.value.detail == "no such field"


async def test_field_names_cannot_inject_graphql(manager: FakeManager) -> None:
    async with APIClient(manager.config()) as api:
        with pytest.raises(InvalidValue, match="field"):
            await list_sessions(api, fields=["id } mutation { x"])
    assert manager.requests == []


async def test_shared_config_routes(manager: FakeManager) -> None:
    manager.answer("POST", "/config/get", {"result": {"a/b": "1"}})
    manager.answer("POST", "/config/set", {"result": "ok"})
    manager.answer("POST", "/config/delete", {"result": "ok"})
    async with APIClient(manager.config()) as api:
        assert await get_config(api, "a", prefix=True) == {"a/b": "1"}
        await set_config(api, "a/b", "2")
        await set_config(api, "a/c", {"x": "1"})
        await delete_config(api, "a", prefix=True)
    assert [(r.path, r.json()) for r in manager.requests] == [
        ("/config/get", {"key": "a", "prefix": True}),
        ("/config/set", {"key": "a/b", "value": "2"}),
        ("/config/set", {"key": "a/c", "value": {"x": "1"}}),
        ("/config/delete", {"key": "a", "prefix": True}),
    ]


async def test_sync_facade_runs_code_from_a_plain_thread(manager: FakeManager) -> None:
    manager.answer("POST", "/session", created(), status=201)
    manager.answer_each(
        "POST",
        "/session/s1",
        [
            result("continued", [["stdout", "a\n"]]),
            result("finished", [["stdout", "b\n"]], exitCode=0),
        ],
    )
    manager.answer("DELETE", "/session/s1", {})
    config = manager.config()

    def script() -> tuple[list[str], list[str]]:
        streamed: list[str] = []
        with SyncAPIClient(config) as api:
            session = api.create_session("python", name="s1")
            results = session.run(
                "print('a'); print('b')",
                on_result=lambda r: streamed.extend(str(c.data) for c in r.console),
            )
            session.destroy()
        return [str(c.data) for r in results for c in r.console], streamed

    output, streamed = await trio.to_thread.run_sync(script)
    assert output == streamed == ["a\n", "b\n"]
    assert [r.method for r in manager.requests] == ["POST", "POST", "POST", "DELETE"]


async def test_sync_facade_refuses_to_block_a_trio_task(manager: FakeManager) -> None:
    config = manager.config()
    client = await trio.to_thread.run_sync(lambda: SyncAPIClient(config).__enter__())
    try:
        with pytest.raises(RuntimeError):
            client.hello()
        assert await trio.to_thread.run_sync(client.hello) == {
            "version": "v6.20220615",
            "manager": "fake",
        }
    finally:
        await trio.to_thread.run_sync(client.__exit__, None, None, None)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
RESULT_SHAPED = st.fixed_dictionaries(
    {},
    optional={
        "runId": JSON_VALUES,
        "status": st.sampled_from(["finished", "continued"]) | JSON_VALUES,
        "console": JSON_VALUES,
        "exitCode": JSON_VALUES,
        "options": JSON_VALUES,
        "files": JSON_VALUES,
    },
)


@given(JSON_VALUES | RESULT_SHAPED | st.builds(lambda r: {"result": r}, RESULT_SHAPED))
def test_any_execute_answer_parses_or_is_refused_cleanly(answer: Any) -> None:
    try:
        parsed = ExecutionResult.from_json(answer)
    except MalformedResponse as exc:
        assert exc.field
    else:
        assert isinstance(parsed.status, str)
        assert all(isinstance(item.kind, str) for item in parsed.console)


@given(
    st.integers(min_value=400, max_value=599),
    st.binary(max_size=200) | JSON_VALUES.map(lambda v: json.dumps(v).encode()),
)
def test_any_error_body_becomes_a_typed_error(status: int, body: bytes) -> None:
    error = error_from_response(status, "", body)
    assert error.status == status
    assert isinstance(error.title, str) and error.title
    assert isinstance(error.type, str) and error.type
    assert str(error).startswith(f"{status} ")
    assert isinstance(error, ServerError) == (status >= 500)
