"""The manager's client of the app proxy (:mod:`bai.manager.appproxy`) and ``bai up``'s proxy.

The client reads the resource group's ``wsproxy_addr`` and ``appproxy/secret``
from a real database (SQLite and PostgreSQL) and talks to a real
:class:`AppProxyService`; every way a proxy can be missing or wrong is a
clear :class:`AppProxyError`.  ``bai up`` runs its own proxy and announces
it, and a browser reaches an app through it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
import trio

from bai.appproxy.server import AppProxyAddresses, AppProxyService
from bai.common.appproxy_api import SECRET_CONFIG_KEY
from bai.embedded import EmbeddedHandle, announce_app_proxy
from bai.manager.appproxy import AppProxyError, register_app, unregister_session
from bai.manager.db import Database
from bai.manager.models.resource import scaling_groups
from bai.manager.models.shared_config import get_config, put_config

from support.appproxy import SECRET, origin, proxy_config, serve_target
from support.net import free_port
from support.official import embedded_service

GROUP = "default"


async def _group(db: Database, name: str = GROUP, wsproxy_addr: str | None = None) -> None:
    async with db.begin() as conn:
        await conn.execute(sa.insert(scaling_groups).values(name=name, wsproxy_addr=wsproxy_addr))


async def _register(db: Database, target: int, **fields: object) -> tuple[uuid.UUID, str, str]:
    session_id = uuid.uuid4()
    values: dict[str, object] = {
        "resource_group": GROUP,
        "session_id": session_id,
        "kernel_host": "127.0.0.1",
        "kernel_port": target,
        "app": "web",
        "protocol": "http",
        "user_id": uuid.uuid4(),
        "access_key": "AKIATEST",
        "open_to_public": False,
    }
    values.update(fields)
    token, address = await register_app(db, **values)  # type: ignore[arg-type]
    return session_id, token, address


async def _fetch_through(address: str, token: str, session_id: uuid.UUID, path: str) -> str:
    """Spend *token* as the user's client does and GET *path* as a browser does."""
    async with httpx.AsyncClient() as client:
        added = await client.get(f"{address}/v2/proxy/{token}/{session_id}/add?app=web")
        assert added.status_code == 200, added.text
        url = added.json()["url"]
    async with httpx.AsyncClient(follow_redirects=True) as browser:
        assert (await browser.get(url)).status_code == 200
        page = await browser.get(origin(url) + path)
    assert page.status_code == 200
    return page.text


async def test_the_manager_registers_apps_and_drops_sessions(
    db: Database, nursery: trio.Nursery
) -> None:
    config = proxy_config()
    proxy: AppProxyAddresses = await nursery.start(AppProxyService(config).serve)
    target: int = await nursery.start(serve_target)
    await _group(db)
    await announce_app_proxy(db, GROUP, config, proxy)
    session_id, token, address = await _register(db, target)
    assert address == proxy.api
    assert await _fetch_through(address, token, session_id, "/from/manager") == (
        "hello from /from/manager?"
    )
    assert await unregister_session(db, resource_group=GROUP, session_id=session_id) == 1
    assert await unregister_session(db, resource_group=GROUP, session_id=session_id) == 0


async def test_a_missing_or_wrong_app_proxy_is_a_clear_error(
    db: Database, nursery: trio.Nursery
) -> None:
    config = proxy_config()
    proxy: AppProxyAddresses = await nursery.start(AppProxyService(config).serve)

    async def error(**fields: object) -> AppProxyError:
        with pytest.raises(AppProxyError) as raised:
            await _register(db, 8080, **fields)
        return raised.value

    unknown = await error(resource_group="nowhere")
    assert (unknown.http_status, unknown.error_type) == (404, "object-not-found")
    await _group(db)
    unset = await error()
    assert (unset.http_status, unset.error_type) == (503, "app-proxy-not-configured")
    assert "wsproxy_addr" in unset.detail
    async with db.begin() as conn:
        await conn.execute(
            sa.update(scaling_groups)
            .where(scaling_groups.c.name == GROUP)
            .values(wsproxy_addr=proxy.api + "/")
        )
    no_secret = await error()
    assert no_secret.http_status == 503 and SECRET_CONFIG_KEY in no_secret.detail
    async with db.begin() as conn:
        await put_config(conn, SECRET_CONFIG_KEY, "not-" + SECRET)
    refused = await error()
    assert (refused.http_status, refused.error_type) == (503, "app-proxy-unavailable")
    assert "secret" in refused.detail
    async with db.begin() as conn:
        await put_config(conn, SECRET_CONFIG_KEY, SECRET)
    bad_protocol = await error(protocol="pty")
    assert bad_protocol.http_status == 400 and "'pty'" in bad_protocol.detail
    bad_body = await error(app="no spaces allowed")
    assert (bad_body.http_status, bad_body.error_type) == (502, "app-proxy-failed")
    # The trailing slash of wsproxy_addr does not matter.
    _, token, address = await _register(db, 8080, protocol="preopen")
    assert token and address == proxy.api
    dead = f"http://127.0.0.1:{free_port()}"
    async with db.begin() as conn:
        await conn.execute(
            sa.update(scaling_groups)
            .where(scaling_groups.c.name == GROUP)
            .values(wsproxy_addr=dead)
        )
    down = await error()
    assert (down.http_status, down.error_type) == (503, "app-proxy-unavailable")
    assert dead in down.detail


async def test_bai_up_runs_and_announces_its_app_proxy(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        handle: EmbeddedHandle = await nursery.start(embedded_service(tmp_path / "data").serve)
        target: int = await nursery.start(serve_target)
        db = handle.manager.ctx.db
        async with db.begin_readonly() as conn:
            row = (
                await conn.execute(
                    sa.select(scaling_groups.c.wsproxy_addr).where(scaling_groups.c.name == GROUP)
                )
            ).one()
            secret = await get_config(conn, SECRET_CONFIG_KEY)
        assert row.wsproxy_addr == handle.appproxy.api
        assert urlsplit(handle.appproxy.api).hostname == "127.0.0.1"
        assert isinstance(secret, str) and len(secret) >= 32
        session_id, token, address = await _register(db, target)
        assert await _fetch_through(address, token, session_id, "/up") == "hello from /up?"
        nursery.cancel_scope.cancel()
