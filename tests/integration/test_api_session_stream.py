"""`/stream/session/:id/execute`: a whole run over one WebSocket, as `backend.ai run` runs it."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from bai.common.auth import sign_request

from support.api import API_VERSION, Key
from support.api_session import (
    Deployment,
    unique_name,
)


def _headers(deployment: Deployment, target: str, key: Key | None) -> list[tuple[bytes, bytes]]:
    if key is None:
        return []
    signed = sign_request(
        method="GET",
        path=target,
        host=deployment.api.host,
        api_version=API_VERSION,
        access_key=key.access_key,
        secret_key=key.secret_key,
        content_type="application/octet-stream",
    )
    return [(name.encode(), value.encode()) for name, value in signed.items()]


def _open(deployment: Deployment, session: str, key: Key | None) -> Any:
    target = f"/stream/session/{session}/execute"
    url = deployment.api.base_url.replace("http://", "ws://") + target
    return open_websocket_url(url, extra_headers=_headers(deployment, target, key))


async def _messages_until_final(ws: WebSocketConnection, answer: str = "") -> list[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    with trio.fail_after(30):
        while True:
            message = json.loads(await ws.get_message())
            received.append(message)
            if message["status"] in ("finished", "exec-timeout", "error"):
                return received
            if message["status"] == "waiting-input":
                await ws.send_message(answer)


def _close_code(closed: ConnectionClosed) -> int | None:
    return closed.reason.code if closed.reason is not None else None


def _stdout(messages: list[dict[str, Any]]) -> str:
    return "".join(t for m in messages for kind, t in m.get("console", []) if kind == "stdout")


async def test_a_run_streams_its_output_and_takes_input(deployment: Deployment) -> None:
    name = unique_name()
    await deployment.create(name=name)
    code = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.4)\n"
    async with _open(deployment, name, deployment.api.user) as ws:
        await ws.send_message(json.dumps({"mode": "query", "code": code, "options": {}}))
        messages = await _messages_until_final(ws)
        # Output arrives while the code still runs, not all at the end.
        assert len(messages) >= 2
        assert messages[-1]["status"] == "finished" and messages[-1]["exitCode"] == 0
        assert _stdout(messages) == "0\n1\n2\n"
        with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert _close_code(closed.value) == 1000

    ask = "name = input('name? ')\nprint(f'Hello, {name}!')"
    async with _open(deployment, name, deployment.api.user) as ws:
        await ws.send_message(json.dumps({"mode": "query", "code": ask}))
        messages = await _messages_until_final(ws, answer="Lablup")
        assert [m["status"] for m in messages] == ["waiting-input", "finished"]
        assert _stdout(messages) == "name? Hello, Lablup!\n"


async def test_batch_mode_over_the_stream(deployment: Deployment) -> None:
    name = unique_name()
    await deployment.create(name=name)
    uploaded = await deployment.upload(name, [("job.py", b"print('batch says hi')\n")])
    assert uploaded.status_code == 204
    async with _open(deployment, name, deployment.api.user) as ws:
        options = {"clean": None, "build": None, "buildLog": False, "exec": "python job.py"}
        await ws.send_message(json.dumps({"mode": "batch", "code": "", "options": options}))
        messages = await _messages_until_final(ws)
        assert messages[-1]["status"] == "finished" and messages[-1]["exitCode"] == 0
        assert _stdout(messages) == "batch says hi\n"


async def test_refusals_before_and_after_the_upgrade(deployment: Deployment) -> None:
    name = unique_name()
    await deployment.create(name=name)
    with pytest.raises(ConnectionRejected) as unsigned:
        async with _open(deployment, name, None):
            pass
    assert unsigned.value.status_code == 401
    assert json.loads(unsigned.value.body or b"")["type"].endswith("/unauthorized")
    with pytest.raises(ConnectionRejected) as missing:
        async with _open(deployment, "no-such-session", deployment.api.user):
            pass
    assert missing.value.status_code == 404
    assert json.loads(missing.value.body or b"")["type"].endswith("/session-not-found")
    # The session belongs to the user: the admin's own keypair does not see it.
    with pytest.raises(ConnectionRejected) as foreign:
        async with _open(deployment, name, deployment.api.admin):
            pass
    assert foreign.value.status_code == 404

    async with _open(deployment, name, deployment.api.user) as ws:
        await ws.send_message("this is not JSON")
        error = json.loads(await ws.get_message())
        assert error["status"] == "error"
        assert error["type"].endswith("/invalid-api-params")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert _close_code(closed.value) == 1008

    await deployment.destroy(name)
    # A terminated session is still found, and the run says why it cannot start.
    async with _open(deployment, name, deployment.api.user) as ws:
        await ws.send_message(json.dumps({"mode": "query", "code": "print(1)"}))
        error = json.loads(await ws.get_message())
        assert error["type"].endswith("/session-not-running")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
        assert _close_code(closed.value) == 1011
