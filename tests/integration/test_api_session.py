"""The session routes over real HTTP, in the embedded and the distributed deployment.

A real manager, a real agent with local kernels, signed requests: what a
client sees is what these tests pin, down to the spec's example answers.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from bai.client import APIClient, ComputeSession
from bai.common.auth import sign_request
from bai.common.types import SessionStatus

from support.api import API_VERSION
from support.api_session import (
    RESOURCES,
    Backends,
    Deployment,
    problem,
    running_deployment,
    unique_name,
)


@pytest.fixture
async def deployment(backends: Backends, tmp_path: Path) -> AsyncIterator[Deployment]:
    # A short long-poll so that a run of a second or two needs continue calls.
    manager = {"execute-flush-timeout": "0.3s"}
    async with running_deployment(backends, tmp_path, manager=manager) as running:
        yield running


async def test_create_reuse_info_and_destroy(deployment: Deployment) -> None:
    name = unique_name()
    created = await deployment.create(name=name, tag="example-tag")
    session_id = uuid.UUID(created["sessionId"])
    assert created == {
        "sessionId": str(session_id),
        "sessionName": name,
        "sessId": name,
        "status": "RUNNING",
        "statusInfo": created["statusInfo"],
        "servicePorts": created["servicePorts"],
        "created": True,
    }
    # The image's app, then the two every kernel has.
    assert [port["name"] for port in created["servicePorts"]] == ["http", "sshd", "ttyd"]

    # reuseIfExists (the default) answers the running session; without it, a conflict.
    reused = await deployment.api.call(
        "POST",
        "/session/_/create",
        key=deployment.api.user,
        json_body={"image": "python", "clientSessionToken": name},
    )
    assert reused.status_code == 200
    assert reused.json()["created"] is False
    assert reused.json()["sessionId"] == str(session_id)
    refused = await deployment.api.call(
        "POST",
        "/session",
        key=deployment.api.user,
        json_body={"image": "python", "name": name, "reuseIfExists": False},
    )
    body = refused.json()
    problem(refused, 409, "session-already-exists")
    assert body["data"] == {"existingSessionId": str(session_id)}

    info = await deployment.info(name)
    assert info["sessionId"] == str(session_id)
    assert info["status"] == "RUNNING"
    assert info["lang"] == info["image"] == "python:3.11"
    assert info["tag"] == "example-tag"
    assert info["memoryLimit"] == 256 * 1024
    assert info["age"] >= 0
    assert info["numQueriesExecuted"] == 0
    assert info["requestedSlots"] == {"cpu": "1", "mem": "268435456"}
    assert [k["clusterRole"] for k in info["kernels"]] == ["main"]
    # By id and by id prefix too, but not by another keypair.
    assert (await deployment.info(str(session_id)))["sessionName"] == name
    assert (await deployment.info(str(session_id)[:8]))["sessionName"] == name
    other = await deployment.api.call("GET", f"/session/{name}", key=deployment.api.admin)
    problem(other, 404, "session-not-found")
    # An admin reaches it with owner_access_key.
    as_owner = await deployment.api.call(
        "GET",
        f"/session/{name}",
        key=deployment.api.admin,
        params={"owner_access_key": deployment.api.user.access_key},
    )
    assert as_owner.json()["sessionId"] == str(session_id)

    gone = await deployment.destroy(name)
    assert gone.status_code == 200, gone.text
    assert set(gone.json()) == {"stats"}
    assert (await deployment.info(str(session_id)))["status"] == "TERMINATED"
    late = await deployment.api.call(
        "POST", f"/session/{name}", key=deployment.api.user, json_body={"mode": "query", "code": ""}
    )
    problem(late, 409, "session-not-running")
    history = await deployment.api.call(
        "GET", f"/session/{session_id}/status-history", key=deployment.api.user
    )
    result = history.json()["result"]
    assert list(result) == [
        "PENDING",
        "SCHEDULED",
        "PREPARING",
        "CREATING",
        "RUNNING",
        "TERMINATING",
        "TERMINATED",
    ]
    stamps = [datetime.fromisoformat(value) for value in result.values()]
    assert stamps == sorted(stamps)


async def test_query_mode_answers_as_the_spec_examples(deployment: Deployment) -> None:
    name = unique_name()
    await deployment.create(name=name)
    hello = await deployment.execute(
        name, mode="query", code="print('Hello, world!')", runId="5facbf2f2697c1b7"
    )
    assert hello == {
        "runId": "5facbf2f2697c1b7",
        "status": "finished",
        "exitCode": 0,
        "console": [["stdout", "Hello, world!\n"]],
        "options": None,
    }

    failed = await deployment.execute(
        name, mode="query", code="a = 123\nprint('what happens now?')\na = a / 0"
    )
    assert len(failed["runId"]) >= 8  # assigned by the server
    assert failed["status"] == "finished"
    assert failed["console"][0] == ["stdout", "what happens now?\n"]
    assert failed["console"][1][0] == "stderr"
    assert "ZeroDivisionError: division by zero" in failed["console"][1][1]

    # Global state lives on between runs of one session.
    assert await deployment.run(name, "x = 6") == ("", "")
    assert await deployment.run(name, "print(x * 7)") == ("42\n", "")

    ticks = "import time\nfor i in range(4):\n    print(f'Tick {i+1}')\n    time.sleep(0.2)\n"
    first = await deployment.execute(name, mode="query", code=ticks + "print('done')")
    assert first["status"] == "continued"
    steps, text = 1, "".join(t for _, t in first["console"])
    result = first
    while result["status"] == "continued":
        result = await deployment.execute(name, mode="continue", code="", runId=first["runId"])
        steps += 1
        text += "".join(t for _, t in result["console"])
    assert result["status"] == "finished" and steps >= 2
    assert text == "Tick 1\nTick 2\nTick 3\nTick 4\ndone\n"

    asking = await deployment.execute(
        name,
        mode="query",
        code="print('What is your name?')\nname = input('>> ')\nprint(f'Hello, {name}!')",
    )
    assert asking["status"] == "waiting-input"
    assert asking["options"] == {"is_password": False}
    assert asking["console"] == [["stdout", "What is your name?\n>> "]]
    answered = await deployment.execute(name, mode="input", code="Lablup", runId=asking["runId"])
    assert answered["status"] == "finished"
    assert answered["console"] == [["stdout", "Hello, Lablup!\n"]]

    completions = await deployment.api.call(
        "POST",
        f"/session/{name}/complete",
        key=deployment.api.user,
        json_body={"code": "pri", "options": {"post": "", "line": "pri", "row": 0, "col": 3}},
    )
    assert completions.status_code == 200
    assert "print" in completions.json()["result"]
    await trio.sleep(1.2)  # query counts are written once a second
    assert (await deployment.info(name))["numQueriesExecuted"] == 6  # query runs only


async def test_interrupt_restart_and_rename(deployment: Deployment) -> None:
    name = unique_name()
    await deployment.create(name=name)
    sleeper = await deployment.execute(
        name,
        mode="query",
        code="import time\ntry:\n    time.sleep(30)\nexcept KeyboardInterrupt:\n"
        "    print('interrupted')\n",
    )
    assert sleeper["status"] == "continued"
    stopped = await deployment.api.call(
        "POST", f"/session/{name}/interrupt", key=deployment.api.user
    )
    assert stopped.status_code == 204
    result, console = sleeper, list(sleeper["console"])
    with trio.fail_after(10):
        while result["status"] == "continued":
            result = await deployment.execute(name, mode="continue", runId=sleeper["runId"])
            console += result["console"]
    assert result["status"] == "finished"
    assert ["stdout", "interrupted\n"] in console

    await deployment.run(name, "kept = 1")
    restarted = await deployment.api.call("PATCH", f"/session/{name}", key=deployment.api.user)
    assert restarted.status_code == 204
    assert (await deployment.info(name))["status"] == "RUNNING"
    _, err = await deployment.run(name, "print(kept)")
    assert "NameError" in err

    new_name = unique_name("renamed")
    renamed = await deployment.api.call(
        "POST", f"/session/{name}/rename", key=deployment.api.user, params={"name": new_name}
    )
    assert renamed.status_code == 204
    assert (await deployment.info(new_name))["sessionName"] == new_name
    missing = await deployment.api.call("GET", f"/session/{name}", key=deployment.api.user)
    problem(missing, 404, "session-not-found")
    matches = await deployment.api.call(
        "GET", "/session/_/match", key=deployment.api.user, params={"id": "renamed"}
    )
    assert [m["name"] for m in matches.json()["matches"]] == [new_name]


async def test_files_batch_mode_and_logs(deployment: Deployment) -> None:
    name = unique_name()
    await deployment.create(name=name)
    uploaded = await deployment.upload(
        name,
        [
            ("main.py", b"import helper\nprint(helper.GREETING)\n"),
            ("helper.py", b"GREETING = 'hi from a file'\n"),
            ("data/numbers.txt", b"1\n2\n3\n"),
        ],
    )
    assert uploaded.status_code == 204, uploaded.text

    batch = await deployment.execute(
        name,
        mode="batch",
        code="",
        options={"build": "", "exec": "python main.py", "buildLog": False},
    )
    console = list(batch["console"])
    while batch["status"] != "finished":
        batch = await deployment.execute(name, mode="continue", runId=batch["runId"])
        console += batch["console"]
    assert batch["exitCode"] == 0
    assert "".join(t for k, t in console if k == "stdout") == "hi from a file\n"

    listing = await deployment.api.call(
        "GET", f"/session/{name}/files", key=deployment.api.user, params={"path": "data"}
    )
    assert listing.status_code == 200
    entries = json.loads(listing.json()["files"])
    assert [e["filename"] for e in entries] == ["numbers.txt"]
    assert listing.json()["folder_path"].endswith("/data")

    single = await deployment.api.call(
        "GET",
        f"/session/{name}/download_single",
        key=deployment.api.user,
        params={"file": "data/numbers.txt"},
    )
    assert single.status_code == 200 and single.content == b"1\n2\n3\n"

    download = await deployment.api.http.request(
        "GET",
        deployment.api.base_url + f"/session/{name}/download?files=main.py&files=data",
        headers=_signed_headers(deployment, f"/session/{name}/download?files=main.py&files=data"),
    )
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("multipart/mixed; boundary=")
    names = _tar_names(download.content, download.headers["content-type"])
    assert names == [["main.py"], ["data", "data/numbers.txt"]]

    logs = await deployment.api.call("GET", f"/session/{name}/logs", key=deployment.api.user)
    assert logs.status_code == 200
    assert isinstance(logs.json()["result"]["logs"], str)
    by_query = await deployment.api.call(
        "GET", "/session/_/logs", key=deployment.api.user, params={"session_name": name}
    )
    assert by_query.status_code == 200
    assert isinstance(by_query.json()["result"]["logs"], str)


def _signed_headers(deployment: Deployment, target: str) -> dict[str, str]:
    key = deployment.api.user
    return sign_request(
        method="GET",
        path=target,
        host=deployment.api.host,
        api_version=API_VERSION,
        access_key=key.access_key,
        secret_key=key.secret_key,
    )


def _tar_names(body: bytes, content_type: str) -> list[list[str]]:
    boundary = content_type.split("boundary=", 1)[1].encode()
    names = []
    for part in body.split(b"--" + boundary)[1:-1]:
        head, _, data = part.partition(b"\r\n\r\n")
        assert b"Content-Type: application/x-tar" in head
        with tarfile.open(fileobj=io.BytesIO(data.removesuffix(b"\r\n"))) as archive:
            names.append(sorted(archive.getnames()))
    return names


async def test_batch_sessions_dependencies_and_waiting(deployment: Deployment) -> None:
    first = await deployment.create(
        name=unique_name("job"),
        type="batch",
        startupCommand="python -c 'print(1)'",
        enqueueOnly=True,
    )
    assert first["status"] == "PENDING" and first["servicePorts"] == []
    follower = await deployment.create(
        name=unique_name("after"),
        dependencies=[first["sessionId"]],
        enqueueOnly=True,
    )
    cluster = deployment.cluster
    done = await cluster.wait_status(uuid.UUID(first["sessionId"]), SessionStatus.TERMINATED)
    assert done.result.value == "SUCCESS"
    running = await cluster.wait_status(uuid.UUID(follower["sessionId"]), SessionStatus.RUNNING)
    assert running.status is SessionStatus.RUNNING

    # A delayed start: starts_at in the future keeps the session PENDING.
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    delayed = await deployment.create(name=unique_name("later"), starts_at=later, maxWaitSeconds=1)
    assert delayed["status"] == "TIMEOUT"
    relative = await deployment.create(name=unique_name("rel"), starts_at="1h", enqueueOnly=True)
    info = await deployment.info(relative["sessionId"])
    assert datetime.fromisoformat(info["startsAt"]) > datetime.now(UTC) + timedelta(minutes=59)

    # recursive destroy ends the dependents first.
    base = await deployment.create(name=unique_name("base"))
    dependent = await deployment.create(
        name=unique_name("dep"), dependencies=[base["sessionName"]], enqueueOnly=True
    )
    gone = await deployment.destroy(base["sessionName"], recursive="true")
    assert gone.status_code == 200
    assert (await deployment.info(dependent["sessionId"]))["status"] in ("CANCELLED", "TERMINATED")
    assert (await deployment.info(base["sessionId"]))["status"] == "TERMINATED"


async def test_cluster_sessions_and_admin_options(deployment: Deployment) -> None:
    pair = await deployment.create(
        name=unique_name("pair"), cluster_size=2, config={"resources": RESOURCES}
    )
    assert pair["status"] == "RUNNING"
    info = await deployment.info(pair["sessionId"])
    assert [k["clusterHostname"] for k in info["kernels"]] == ["main1", "sub1"]
    out, _ = await deployment.run(
        pair["sessionId"], "import os; print(os.environ['BACKENDAI_CLUSTER_HOSTS'])"
    )
    assert out == "main1,sub1\n"
    # The test host may have two cores: make room for the next sessions.
    assert (await deployment.destroy(pair["sessionId"])).status_code == 200

    env = await deployment.create(
        name=unique_name("env"),
        config={"resources": RESOURCES, "environ": {"MYCONFIG": "XXX"}},
    )
    out, _ = await deployment.run(env["sessionId"], "import os; print(os.environ['MYCONFIG'])")
    assert out == "XXX\n"
    assert (await deployment.destroy(env["sessionId"])).status_code == 200

    agent_id = deployment.cluster.agents[0].agent_id
    admin = deployment.api.admin
    pinned = await deployment.create(
        admin,
        name=unique_name("pin"),
        priority=5,
        config={"resources": RESOURCES, "agentList": [agent_id]},
        owner_access_key=deployment.api.user.access_key,
    )
    owned = await deployment.info(pinned["sessionId"])
    assert owned["ownerAccessKey"] == deployment.api.user.access_key
    assert owned["kernels"][0]["agent"] == agent_id


async def test_the_sdk_drives_every_route(deployment: Deployment, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "hello.py").write_text("print('hello from the sdk')\n")
    async with APIClient(deployment.sdk_config(deployment.api.user)) as api:
        session = await ComputeSession.create(
            api, "python", name=unique_name("sdk"), resources=RESOURCES
        )
        assert session.status == "RUNNING" and session.created
        results = [r async for r in session.run("print(sum(range(10)))")]
        assert results[-1].console[0].data == "45\n"
        await session.upload([source / "hello.py"], basedir=source)
        listing = await session.list_files(".")
        assert "hello.py" in [entry.filename for entry in listing.files]
        fetched = await session.download(["hello.py"], dest=tmp_path / "out")
        assert fetched == ["hello.py"]
        assert (tmp_path / "out" / "hello.py").read_text() == "print('hello from the sdk')\n"
        assert await session.download_single("hello.py") == b"print('hello from the sdk')\n"
        assert "print" in await session.complete("pri")
        history = await session.status_history()
        assert "RUNNING" in history
        assert isinstance(await session.logs(), str)
        await session.restart()
        await session.rename(unique_name("sdk2"))
        assert (await session.info())["status"] == "RUNNING"
        stats = await session.destroy()
        assert "stats" in stats
