"""`bai run`, `bai start`, `bai rm`, `bai logs` and `bai events` as a user sees them.

Each test runs the real ``bai`` click command (in a worker thread, since the
command starts its own Trio loop) against the signature-checking HTTP server
of ``support.fakemanager`` and checks the printed lines, the exit status
and the requests that reached the server.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import trio
from click.testing import CliRunner, Result
from quart import Response

from bai.cli.main import cli

from support.fakemanager import (
    FakeManager,
    Recorded,
    json_response,
    manager,
    problem,
    result,
    sse_response,
)

__all__ = ["invoke", "manager"]

SESSION_ID = "12c45b55-ce3c-418d-9c58-223bbba307f1"


async def invoke(
    fake: FakeManager, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> Result:
    """Run ``bai ARGS`` with BACKEND_* pointing at *fake* (plus *env*)."""
    environment: dict[str, str | None] = {k: None for k in os.environ if k.startswith("BACKEND_")}
    environment.update(fake.env())
    environment.update(env or {})
    runner = CliRunner()
    return await trio.to_thread.run_sync(
        functools.partial(runner.invoke, cli, list(args), env=environment, input=stdin)
    )


def created(status: str = "RUNNING", is_new: bool = True) -> dict[str, Any]:
    return {"sessionId": SESSION_ID, "status": status, "servicePorts": [], "created": is_new}


def any_session_path(fake: FakeManager) -> str:
    create = next(r for r in fake.requests if (r.method, r.path) == ("POST", "/session"))
    return f"/session/{create.json()['name']}"


async def test_run_prints_the_official_lines_and_the_output(manager: FakeManager) -> None:
    async def create(recorded: Recorded) -> Response:
        name = recorded.json()["name"]
        manager.answer_each(
            "POST",
            f"/session/{name}",
            [
                result("continued", [["stdout", "hello "]]),
                result("finished", [["stdout", "world\n"]], exitCode=0),
            ],
        )
        manager.answer("DELETE", f"/session/{name}", {})
        return json_response(created(), 201)

    manager.add("POST", "/session", create)
    run = await invoke(manager, "run", "--rm", "-c", 'print("hello world")', "python")
    assert run.exit_code == 0, run.output
    assert run.stdout == "hello world\n"
    name = any_session_path(manager).rsplit("/", 1)[1]
    assert re.fullmatch(r"[0-9a-f]{10}", name)
    assert run.stderr.splitlines() == [
        f"∙ Session token prefix: {name}",
        f"✔ [0] Session {name} is ready.",
        "✔ [0] Execution finished. (exit code = 0)",
        "✔ [0] Cleaned up the session.",
    ]
    body = manager.requests[0].json()
    assert (body["image"], body["name"]) == ("python", name)
    assert manager.requests[1].json() == {
        "mode": "query",
        "code": 'print("hello world")',
        "runId": None,
    }
    assert manager.last().method == "DELETE"


async def test_run_passes_resources_environment_and_name(manager: FakeManager) -> None:
    manager.answer("POST", "/session", created(is_new=False))
    manager.answer_each("POST", "/session/mysess", [result("finished", [], exitCode=0)])
    run = await invoke(
        manager,
        "run", "-t", "mysess", "-r", "cpu=2", "-r", "mem=256", "-r", "cuda.shares=0.5",
        "-e", "A=1", "-e", "B=x=y", "-m", "data:/mnt/d", "--tag", "t1", "-c", "1", "python",
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    assert "✔ [0] Reusing session mysess..." in run.stderr
    body = manager.requests[0].json()
    assert body["name"] == "mysess"
    assert body["config"]["resources"] == {"cpu": "2", "mem": "256m", "cuda.shares": "0.5"}
    assert body["config"]["environ"] == {"A": "1", "B": "x=y"}
    assert body["config"]["mounts"] == ["data"]
    assert body["config"]["mount_map"] == {"data": "/mnt/d"}
    assert body["tag"] == "t1"


async def test_run_uploads_files_and_runs_them_in_batch_mode(
    manager: FakeManager, tmp_path: Path
) -> None:
    (tmp_path / "main.c").write_text("int main(){return 3;}\n")
    manager.answer("POST", "/session", created())

    async def accept(recorded: Recorded) -> Response:
        return Response("", status=204)

    manager.add("POST", "/session/job/upload", accept)
    manager.answer_each(
        "POST",
        "/session/job",
        [
            result("clean-finished", [], exitCode=0),
            result("build-finished", [["stdout", "cc main.c\n"]], exitCode=0),
            result("finished", [["stderr", "oops\n"]], exitCode=3),
        ],
    )
    run = await invoke(
        manager, "run", "-t", "job", "--exec", "./main", "--basedir", str(tmp_path),
        "c", str(tmp_path / "main.c"),
    )  # fmt: skip
    assert run.exit_code == 3
    assert run.stdout == "cc main.c\n"
    assert "oops\n" in run.stderr
    assert "✔ [0] Uploading done." in run.stderr
    assert "✔ [0] Clean finished. (exit code = 0)" in run.stderr
    assert "✔ [0] Build finished. (exit code = 0)" in run.stderr
    assert "✔ [0] Execution finished. (exit code = 3)" in run.stderr
    upload = next(r for r in manager.requests if r.path.endswith("/upload"))
    assert upload.form_files == [("src", "main.c", b"int main(){return 3;}\n")]
    batch = next(r for r in manager.requests if r.path == "/session/job").json()
    assert batch["mode"] == "batch"
    assert batch["options"] == {"clean": "*", "build": "*", "buildLog": False, "exec": "./main"}


async def test_run_reads_input_from_stdin(manager: FakeManager) -> None:
    manager.answer("POST", "/session", created())
    manager.answer_each(
        "POST",
        "/session/s1",
        [
            result("waiting-input", [["stdout", "name? "]], options={"is_password": False}),
            result("finished", [["stdout", "hi Ann\n"]], exitCode=0),
        ],
    )
    run = await invoke(manager, "run", "-t", "s1", "-c", "input()", "python", stdin="Ann\n")
    assert run.exit_code == 0, run.output
    assert run.stdout == "name? hi Ann\n"
    assert manager.last().json() == {"mode": "input", "code": "Ann", "runId": "r1"}


async def test_run_cleans_up_even_when_execution_fails(manager: FakeManager) -> None:
    manager.answer("POST", "/session", created())

    async def crash(recorded: Recorded) -> Response:
        return problem(500, "internal-server-error", "Internal server error", "kernel vanished")

    manager.add("POST", "/session/s1", crash)
    manager.answer("DELETE", "/session/s1", {})
    run = await invoke(manager, "run", "--rm", "-t", "s1", "-c", "1", "python")
    assert run.exit_code == 1
    assert "✘ Internal server error [500 Internal Server Error]" in run.stderr
    assert "➜ kernel vanished" in run.stderr
    assert "✔ [0] Cleaned up the session." in run.stderr
    assert manager.last().method == "DELETE"


async def test_run_reports_a_rejected_creation(manager: FakeManager) -> None:
    async def reject(recorded: Recorded) -> Response:
        return problem(400, "invalid-api-params", "Invalid API parameters", "unknown image 'x'")

    manager.add("POST", "/session", reject)
    run = await invoke(manager, "run", "-c", "1", "x")
    assert run.exit_code == 1
    assert "✘ Invalid API parameters [400 Bad Request]" in run.stderr
    assert "unknown image 'x'" in run.stderr
    assert run.stdout == ""


async def test_run_with_queued_session_runs_nothing(manager: FakeManager) -> None:
    manager.answer("POST", "/session", created("PENDING"))
    run = await invoke(manager, "run", "--enqueue-only", "-t", "q1", "-c", "1", "python")
    assert run.exit_code == 0
    assert "∙ Session ID q1 is enqueued for scheduling." in run.stderr
    assert manager.requests[0].json()["enqueueOnly"] is True
    assert len(manager.requests) == 1


async def test_quiet_run_prints_only_the_output(manager: FakeManager) -> None:
    manager.answer("POST", "/session", created())
    manager.answer_each(
        "POST", "/session/s1", [result("finished", [["stdout", "42\n"]], exitCode=0)]
    )
    run = await invoke(manager, "run", "-q", "-t", "s1", "-c", "print(42)", "python")
    assert (run.exit_code, run.stdout, run.stderr) == (0, "42\n", "")


async def test_run_usage_errors(manager: FakeManager, tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("")
    both = await invoke(manager, "run", "-c", "1", "python", str(tmp_path / "a.py"))
    neither = await invoke(manager, "run", "python")
    bad_resource = await invoke(manager, "run", "-r", "cpu", "-c", "1", "python")
    batch_code = await invoke(manager, "run", "--type", "batch", "-c", "1", "python")
    assert [r.exit_code for r in (both, neither, bad_resource, batch_code)] == [2, 2, 2, 2]
    assert "either source files or command-line code" in both.stderr
    assert '"-c" option' in neither.stderr
    assert "expected KEY=VALUE, got 'cpu'" in bad_resource.stderr
    assert "--exec" in batch_code.stderr
    assert manager.requests == []


async def test_run_without_keypair_says_what_to_set(manager: FakeManager) -> None:
    run = await invoke(
        manager,
        "run",
        "-c",
        "1",
        "python",
        env={"BACKEND_ACCESS_KEY": "", "BACKEND_SECRET_KEY": ""},
    )
    assert run.exit_code == 2
    assert "BACKEND_ACCESS_KEY" in run.stderr
    assert "client.env" in run.stderr


async def test_batch_type_waits_for_the_session_result(manager: FakeManager) -> None:
    create_seen = trio.Event()

    async def create(recorded: Recorded) -> Response:
        create_seen.set()
        return json_response(created("RUNNING"), 201)

    async def events(recorded: Recorded) -> Response:
        async def later() -> Any:
            await create_seen.wait()
            for name, data in [
                ("session_started", {"sessionId": "other", "reason": ""}),
                ("session_started", {"sessionId": SESSION_ID, "reason": ""}),
                ("session_failure", {"sessionId": SESSION_ID, "exitCode": 7, "reason": "x"}),
            ]:
                yield f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            await trio.sleep_forever()

        response = Response(later(), content_type="text/event-stream")
        response.timeout = None
        return response

    manager.add("POST", "/session", create)
    manager.add("GET", "/events/session", events)
    manager.answer("GET", "/session/job1/logs", {"result": {"logs": "training...\nboom\n"}})
    run = await invoke(
        manager, "run", "--type", "batch", "--exec", "python train.py", "-t", "job1", "python"
    )
    assert run.exit_code == 7, run.output
    assert run.stdout == "training...\nboom\n"
    assert run.stderr.splitlines()[1:] == [
        "✔ [0] Session job1 is ready.",
        "✘ [0] Batch session finished. (result = FAILURE, exit code = 7)",
    ]
    events_request = next(r for r in manager.requests if r.path == "/events/session")
    assert events_request.query["name"] == ["*"]
    body = next(r for r in manager.requests if r.path == "/session").json()
    assert (body["type"], body["startupCommand"]) == ("batch", "python train.py")
    assert manager.requests.index(events_request) < next(
        i for i, r in enumerate(manager.requests) if r.path == "/session"
    )


async def test_start_reports_the_new_session(manager: FakeManager) -> None:
    answer = created()
    answer["servicePorts"] = [{"name": "jupyter"}, {"name": "ttyd"}]
    manager.answer("POST", "/session", answer, status=201)
    start = await invoke(
        manager, "start", "-t", "nb", "-c", "sleep 10", "--type", "batch", "--depends", "d1",
        "python",
    )  # fmt: skip
    assert start.exit_code == 0, start.output
    assert f"∙ Session nb ({SESSION_ID}) is created and ready." in start.stderr
    assert "∙ This session provides the following app services: jupyter, ttyd" in start.stderr
    body = manager.last().json()
    assert (body["startupCommand"], body["dependencies"], body["type"]) == (
        "sleep 10",
        ["d1"],
        "batch",
    )


async def test_rm_reports_each_failure(manager: FakeManager) -> None:
    manager.answer("DELETE", "/session/a", {})

    async def missing(recorded: Recorded) -> Response:
        return problem(404, "session-not-found", "No such session.")

    manager.add("DELETE", "/session/b", missing)
    both = await invoke(manager, "rm", "a", "b", "--forced")
    one = await invoke(manager, "rm", "a")
    assert both.exit_code == 1
    assert "✘ No such session. [404 Not Found]" in both.stderr
    assert '"-o" / "--owner"' in both.stderr
    assert (one.exit_code, one.stderr) == (0, "✔ Done.\n")
    assert [r.query for r in manager.requests] == [{"forced": ["true"]}] * 2 + [{}]


async def test_logs_prints_the_console_log(manager: FakeManager) -> None:
    manager.answer("GET", "/session/s1/logs", {"result": {"logs": "line 1\nline 2"}})
    logs = await invoke(manager, "logs", "s1")
    assert (logs.exit_code, logs.stdout) == (0, "line 1\nline 2\n")
    assert "✔ End of logs." in logs.stderr


async def test_events_prints_each_event_until_the_session_is_gone(manager: FakeManager) -> None:
    async def stream(recorded: Recorded) -> Response:
        return sse_response(
            [
                ("session_preparing", {"sessionId": SESSION_ID, "reason": ""}),
                ("session_terminated", {"sessionId": SESSION_ID, "reason": "user-requested"}),
            ],
            hold_open=True,
        )

    manager.add("GET", "/events/session", stream)
    events = await invoke(manager, "events", "s1")
    assert events.exit_code == 0, events.output
    assert events.stdout.splitlines() == [
        f'session_preparing {{"sessionId": "{SESSION_ID}", "reason": ""}}',
        f'session_terminated {{"sessionId": "{SESSION_ID}", "reason": "user-requested"}}',
    ]
    assert manager.last().query == {"scope": ["*"], "name": ["s1"]}


async def test_run_as_a_real_process_keeps_output_and_exit_status(manager: FakeManager) -> None:
    manager.answer("POST", "/session", created())
    manager.answer_each(
        "POST",
        "/session/proc",
        [result("finished", [["stdout", "out\n"], ["stderr", "err\n"]], exitCode=5)],
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_")}
    environment.update(manager.env())
    bai = [sys.executable, "-c", "from bai.cli.main import cli; cli()"]
    process = await trio.run_process(
        [*bai, "run", "-t", "proc", "-c", "x", "python"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=environment,
    )
    assert process.returncode == 5
    assert process.stdout == b"out\n"
    assert process.stderr.decode().splitlines() == [
        "∙ Session token prefix: proc",
        "✔ [0] Session proc is ready.",
        "err",
        "✔ [0] Execution finished. (exit code = 5)",
    ]


async def test_batch_success_reports_even_when_logs_are_gone(manager: FakeManager) -> None:
    async def create(recorded: Recorded) -> Response:
        # The job ended before the creation was answered.
        return json_response(created("TERMINATED"), 201)

    async def events(recorded: Recorded) -> Response:
        return sse_response(
            [("session_success", {"sessionId": SESSION_ID, "sessionName": "j2", "exitCode": 0})],
            hold_open=True,
        )

    async def gone(recorded: Recorded) -> Response:
        return problem(404, "session-not-found", "No such session.")

    manager.add("POST", "/session", create)
    manager.add("GET", "/events/session", events)
    manager.add("GET", "/session/j2/logs", gone)
    run = await invoke(manager, "run", "--type", "batch", "--exec", "true", "-t", "j2", "python")
    assert run.exit_code == 0, run.output
    assert "The session's output is not available" in run.stderr
    assert "✔ [0] Batch session finished. (result = SUCCESS, exit code = 0)" in run.stderr


async def test_failed_cleanup_is_reported_and_fails_the_run(manager: FakeManager) -> None:
    manager.answer("POST", "/session", created())
    manager.answer_each(
        "POST", "/session/s1", [result("finished", [["stdout", "ok\n"]], exitCode=0)]
    )

    async def refuse(recorded: Recorded) -> Response:
        return problem(409, "session-busy", "The session is busy.")

    manager.add("DELETE", "/session/s1", refuse)
    run = await invoke(manager, "run", "--rm", "-t", "s1", "-c", "1", "python")
    assert run.exit_code == 1
    assert run.stdout == "ok\n"
    assert "✘ [0] Could not clean up the session:\n  The session is busy. [409 Conflict]" in (
        run.stderr
    )
