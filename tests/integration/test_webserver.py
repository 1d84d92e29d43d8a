"""The webserver (session mode) of ``bai up``: logins, the relay, logout, refusals.

Each test starts the embedded cluster in-process and talks to its webserver
(and, for other settings, to a second webserver started against the same
API) over HTTP, as a browser or the official client in session mode does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import trio
import trio_websocket

from bai.common.config import parse_config
from bai.common.config.schema import WebserverConfig
from bai.embedded import SESSION_ENV_NAME, EmbeddedHandle
from bai.manager.models import users
from bai.manager.models.identity import hash_password
from bai.webserver.server import WebserverService

from support.distributed import private_redis_db
from support.official import embedded_cluster

EMAIL = "admin@lablup.com"
PASSWORD = "correct horse battery staple"


async def set_password(handle: EmbeddedHandle, email: str, password: str) -> None:
    hashed = await trio.to_thread.run_sync(hash_password, password)
    async with handle.manager.ctx.db.begin() as conn:
        await conn.execute(sa.update(users).where(users.c.email == email).values(password=hashed))


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EmbeddedHandle]:
    async with embedded_cluster(tmp_path / "data") as handle:
        await set_password(handle, EMAIL, PASSWORD)
        yield handle


@asynccontextmanager
async def webserver(handle: EmbeddedHandle, extra: str = "") -> AsyncIterator[str]:
    """A second webserver relaying to *handle*'s API, with *extra* TOML tables."""
    config = parse_config(
        WebserverConfig,
        f'[webserver]\nservice-addr = "127.0.0.1:0"\n[api]\nendpoint = "{handle.endpoint}"\n'
        + extra,
        source="test",
    )
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(WebserverService(config).serve)
        yield url
        nursery.cancel_scope.cancel()


def cookie(session_id: str) -> dict[str, str]:
    return {"Cookie": f"AIOHTTP_SESSION={session_id}"}


async def login(client: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/server/login", json={"username": EMAIL, "password": password})


async def test_login_relays_signed_requests_until_logout(cluster: EmbeddedHandle) -> None:
    env = (cluster.client_env.parent / SESSION_ENV_NAME).read_text()
    assert f"export BACKEND_ENDPOINT={cluster.webserver}\n" in env
    assert "export BACKEND_ENDPOINT_TYPE=session\n" in env
    async with httpx.AsyncClient(base_url=cluster.webserver) as client:
        response = await login(client)
        assert response.status_code == 200, response.text
        answer = response.json()
        admin = cluster.keypairs[0]
        assert answer == {
            "authenticated": True,
            "data": {"access_key": admin.access_key, "role": "superadmin", "status": "active"},
        }
        assert admin.secret_key not in response.text
        set_cookie = response.headers["set-cookie"]
        session_id = response.cookies["AIOHTTP_SESSION"]
        assert response.headers["x-backendai-sessionid"] == session_id
        assert len(session_id) == 32
        assert "HttpOnly" in set_cookie and "Path=/" in set_cookie
        assert "Max-Age=604800" in set_cookie

        check = await client.post("/server/login-check")
        assert check.json() == {
            "authenticated": True,
            "data": answer["data"],
            "session_id": session_id,
        }
        # Signed with the session's keypair: the manager sees the admin's key.
        echoed = await client.get("/func/auth", params={"echo": "hi there"})
        assert echoed.status_code == 200, echoed.text
        assert echoed.json() == {"authorized": "yes", "echo": "hi there"}
        posted = await client.post("/func/auth", json={"echo": "x" * 100_000})
        assert posted.json() == {"authorized": "yes", "echo": "x" * 100_000}
        # A body of unknown length (chunked) is passed on as it comes.

        async def pieces() -> AsyncIterator[bytes]:
            yield b'{"echo": "'
            for _ in range(20):
                await trio.lowlevel.checkpoint()
                yield b"y" * 10_000
            yield b'"}'

        chunked = await client.post(
            "/func/auth", content=pieces(), headers={"Content-Type": "application/json"}
        )
        assert chunked.json() == {"authorized": "yes", "echo": "y" * 200_000}
        # The version probe goes unsigned, with or without a session.
        version = await client.get("/func/")
        assert version.status_code == 200 and version.json()["version"].startswith("v")
        # The client's own Authorization header is not what the manager checks.
        forged_auth = await client.get(
            "/func/auth",
            params={"echo": "a"},
            headers={"Authorization": "BackendAI signMethod=HMAC-SHA256, credential=x:y"},
        )
        assert forged_auth.status_code == 200

        # A stream is relayed as it comes: the event stream's head arrives while it runs.
        with trio.fail_after(10):
            async with client.stream("GET", "/func/events/session") as events:
                assert events.status_code == 200
                assert events.headers["content-type"].startswith("text/event-stream")

        again = await login(client)
        assert again.status_code == 400
        assert again.json()["title"] == "You have already logged in."

        out = await client.post("/server/logout")
        assert out.status_code == 200
        assert "Max-Age=0" in out.headers["set-cookie"]
        gone = await client.get("/func/auth", params={"echo": "a"}, headers=cookie(session_id))
        assert gone.status_code == 401
        assert "unknown, expired or logged out" in gone.json()["detail"]
        by_header = await client.post(
            "/server/login-check", headers={"X-BackendAI-SessionID": session_id}
        )
        assert by_header.json()["authenticated"] is False


async def test_refused_logins_and_cookies_change_nothing(cluster: EmbeddedHandle) -> None:
    async with httpx.AsyncClient(base_url=cluster.webserver) as client:
        wrong = await login(client, "wrong password")
        assert wrong.status_code == 200
        assert wrong.json()["authenticated"] is False
        assert wrong.json()["data"]["details"]
        assert "set-cookie" not in wrong.headers

        missing = await client.post("/server/login", json={"username": EMAIL})
        assert missing.status_code == 400
        assert missing.json()["title"] == "You must provide the password field."
        not_json = await client.post("/server/login", content=b"{nope")
        assert not_json.status_code == 400

        anonymous = await client.get("/func/auth", params={"echo": "a"})
        assert anonymous.status_code == 401
        assert anonymous.json()["type"] == "https://api.backend.ai/probs/auth-failed"
        assert "log in first" in anonymous.json()["detail"]
        for forged in ("0" * 32, "../../etc", "a" * 5000):
            response = await client.get("/func/auth", params={"echo": "a"}, headers=cookie(forged))
            assert response.status_code == 401, forged
            assert "set-cookie" not in response.headers
        check = await client.post("/server/login-check", headers=cookie("0" * 32))
        assert check.json() == {"authenticated": False, "data": None, "session_id": None}
        assert (await client.get("/server/login")).status_code == 405
        encoded = await client.post(
            "/server/login", content=b"iv:payload", headers={"X-BackendAI-Encoded": "true"}
        )
        assert encoded.status_code == 400 and "X-BackendAI-Encoded" in encoded.json()["detail"]
        pipeline = await client.get("/pipeline/api/x")
        assert pipeline.status_code == 404 and "pipeline" in pipeline.json()["detail"]
        assert (await client.get("/nowhere")).status_code == 404
        assert (await client.get("/func/ping")).json()["details"] == "Success"
        # After all that, a good login still works (failures were below the limit).
        assert (await login(client)).json()["authenticated"] is True


async def test_repeated_failures_block_the_user_name(cluster: EmbeddedHandle) -> None:
    extra = '[session]\nlogin-allowed-fail-count = 2\nlogin-block-time = "2s"\n'
    async with webserver(cluster, extra) as url, httpx.AsyncClient(base_url=url) as client:
        for _ in range(2):
            assert (await login(client, "wrong")).json()["authenticated"] is False
        blocked = await login(client)
        assert blocked.status_code == 429
        assert blocked.json()["title"] == "Too many failed login attempts"
        assert "set-cookie" not in blocked.headers
        await trio.sleep(2.2)
        assert (await login(client)).json()["authenticated"] is True


async def test_a_session_expires_after_max_age(cluster: EmbeddedHandle) -> None:
    async with webserver(cluster, '[session]\nmax-age = "1s"\n') as url:
        async with httpx.AsyncClient(base_url=url) as client:
            response = await login(client)
            assert "Max-Age=1" in response.headers["set-cookie"]
            session_id = response.cookies["AIOHTTP_SESSION"]
        await trio.sleep(2.1)
        async with httpx.AsyncClient(base_url=url) as client:
            expired = await client.get(
                "/func/auth", params={"echo": "a"}, headers=cookie(session_id)
            )
            assert expired.status_code == 401
            assert "expired" in expired.json()["detail"]


async def test_sessions_in_redis_are_shared_by_webservers(
    cluster: EmbeddedHandle, redis_url: str
) -> None:
    base = redis_url.rsplit("/", 1)[0].removeprefix("redis://")
    async with private_redis_db(redis_url) as db:
        extra = f'[redis]\ntype = "redis"\naddr = "{base}"\ndb = {db}\n'
        async with webserver(cluster, extra) as first, webserver(cluster, extra) as second:
            async with httpx.AsyncClient(base_url=first) as client:
                session_id = (await login(client)).cookies["AIOHTTP_SESSION"]
            async with httpx.AsyncClient(base_url=second, headers=cookie(session_id)) as client:
                echoed = await client.get("/func/auth", params={"echo": "shared"})
                assert echoed.json() == {"authorized": "yes", "echo": "shared"}
                assert (await client.post("/server/logout")).status_code == 200
            async with httpx.AsyncClient(base_url=first, headers=cookie(session_id)) as client:
                assert (await client.get("/func/auth", params={"echo": "a"})).status_code == 401


async def test_a_websocket_without_a_session_is_refused(cluster: EmbeddedHandle) -> None:
    url = cluster.webserver.replace("http://", "ws://") + "/func/stream/session/x/execute"
    with pytest.raises(trio_websocket.ConnectionRejected) as refused:
        async with trio_websocket.open_websocket_url(url):
            pass
    assert refused.value.status_code == 401
    assert b"log in first" in (refused.value.body or b"")
    with pytest.raises(trio_websocket.ConnectionRejected) as forged:
        async with trio_websocket.open_websocket_url(
            url, extra_headers=[(b"cookie", b"AIOHTTP_SESSION=" + b"f" * 32)]
        ):
            pass
    assert forged.value.status_code == 401
