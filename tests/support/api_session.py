"""Shared harness of the session API tests: a real manager, agents and the HTTP API.

Imported by the ``test_api_session*``, ``test_api_events*`` and
``test_official_client`` modules (it holds no tests itself).
:func:`running_deployment` starts one of the two deployments of
ARCHITECTURE.md around :func:`support.registry.running_cluster`:

* ``embedded``: SQLite, the in-process event bus, ``inproc://`` RPC;
* ``distributed``: PostgreSQL, Redis Streams (one connection per component)
  and ``ipc://`` RPC, as separate processes would use them;

and serves the API on a free loopback port.  :class:`Deployment` sends
signed requests (:class:`support.api.Api`) and has shortcuts for the
calls most tests make.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa

from bai.client import APIConfig
from bai.common.auth import sign_request
from bai.embedded import announce_app_proxy
from bai.manager.api.app import serve_api
from bai.manager.db import Database
from bai.manager.models import keypairs, users
from bai.manager.models.identity import keypair_resource_policies

from support.api import API_VERSION, Api, Key, assert_problem
from support.appproxy import start_proxy
from support.registry import Cluster, running_cluster
from support.storage import StorageHandle, start_storage_proxy

MODES = ["embedded", "distributed"]
RESOURCES = {"cpu": "1", "mem": "256m"}


async def fixture_keys(db: Database) -> dict[str, Key]:
    """The default fixture's keypairs by owner email."""
    rows = await db.fetch(
        sa.select(keypairs.c.access_key, keypairs.c.secret_key, users.c.email, users.c.uuid).join(
            users, keypairs.c.user == users.c.uuid
        )
    )
    return {row.email: Key(row.access_key, row.secret_key, row.email, row.uuid) for row in rows}


@dataclass
class Deployment:
    """A running manager with agents and its API; ``api.admin`` and ``api.user`` sign."""

    api: Api
    cluster: Cluster
    mode: str
    #: The storage proxy, when the deployment was started with ``storage=True``.
    storage: StorageHandle | None = None

    @property
    def db(self) -> Database:
        return self.cluster.db

    def sdk_config(self, key: Key) -> APIConfig:
        """Settings for :class:`bai.client.APIClient` with *key*."""
        return APIConfig(
            endpoint=self.api.base_url, access_key=key.access_key, secret_key=key.secret_key
        )

    async def create(self, key: Key | None = None, **body: Any) -> dict[str, Any]:
        """``POST /session`` (python image, 1 CPU and 256m unless *body* says otherwise);
        returns the answer, which must be a success."""
        body.setdefault("image", "python")
        body.setdefault("config", {"resources": RESOURCES})
        response = await self.api.call("POST", "/session", key=key or self.api.user, json_body=body)
        assert response.status_code in (200, 201), response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def info(self, name: str, key: Key | None = None) -> dict[str, Any]:
        response = await self.api.call("GET", f"/session/{name}", key=key or self.api.user)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    async def execute(self, name: str, key: Key | None = None, **body: Any) -> dict[str, Any]:
        """One ``POST /session/:id`` call; returns ``result``."""
        response = await self.api.call(
            "POST", f"/session/{name}", key=key or self.api.user, json_body=body
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()["result"]
        return result

    async def run(self, name: str, code: str, key: Key | None = None) -> tuple[str, str]:
        """Run *code* to the end in query mode: (stdout, stderr)."""
        result = await self.execute(name, key, mode="query", code=code)
        console = list(result["console"])
        while result["status"] == "continued":
            result = await self.execute(name, key, mode="continue", runId=result["runId"])
            console += result["console"]
        assert result["status"] == "finished", result
        out = "".join(text for kind, text in console if kind == "stdout")
        err = "".join(text for kind, text in console if kind == "stderr")
        return out, err

    async def signed(
        self,
        method: str,
        path: str,
        key: Key,
        *,
        content: bytes,
        content_type: str,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        """A request with a body of any type, signed for *content_type*."""
        target = path + ("?" + urlencode(params) if params else "")
        headers = sign_request(
            method=method,
            path=target,
            host=self.api.host,
            api_version=API_VERSION,
            access_key=key.access_key,
            secret_key=key.secret_key,
            content_type=content_type,
        )
        return await self.api.http.request(
            method, self.api.base_url + target, content=content, headers=headers
        )

    async def upload(
        self, name: str, files: list[tuple[str, bytes]], key: Key | None = None
    ) -> httpx.Response:
        """``POST /session/:id/upload`` of ``(path, data)`` pairs as multipart/form-data."""
        boundary = uuid.uuid4().hex
        body = b""
        for path, data in files:
            body += (
                f'--{boundary}\r\nContent-Disposition: form-data; name="src"; '
                f'filename="{path}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            body += data + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        return await self.signed(
            "POST",
            f"/session/{name}/upload",
            key or self.api.user,
            content=body,
            content_type=f"multipart/form-data; boundary={boundary}",
        )

    async def destroy(self, name: str, key: Key | None = None, **params: str) -> httpx.Response:
        return await self.api.call(
            "DELETE", f"/session/{name}", key=key or self.api.user, params=params or None
        )

    async def table_counts(self) -> dict[str, int]:
        """Rows per session table: what a refused request must leave as it was."""
        counts: dict[str, int] = {}
        for table in ("sessions", "kernels", "session_dependencies"):
            result = await self.db.fetch(sa.text(f"SELECT count(*) FROM {table}"))
            counts[table] = int(result.scalar() or 0)
        return counts

    async def allow_many_requests(self) -> None:
        """Lift the rate limit of both keypairs (fuzzing and benchmarks send thousands)."""
        for key in (self.api.admin, self.api.user):
            await self.api.update_keypair(key, rate_limit=10**7)

    async def set_policy(self, **values: Any) -> None:
        """Change the ``default`` keypair resource policy."""
        async with self.db.begin() as conn:
            await conn.execute(
                sa.update(keypair_resource_policies)
                .where(keypair_resource_policies.c.name == "default")
                .values(**values)
            )


def problem(response: httpx.Response, status: int, kind: str, field: str | None = None) -> str:
    """Check an RFC 7807 answer (and the field it names); return its message."""
    body = assert_problem(response, status, kind)
    if field is not None:
        assert body.get("field") == field, body
    detail: str = body.get("detail", "")
    return detail


def unique_name(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class Backends:
    """Where a deployment keeps its state: database URL, Redis URL (or none) and RPC kind."""

    mode: str
    db_url: str
    redis_url: str | None
    rpc: str


def backends_for(mode: str, tmp_path: Path, request: pytest.FixtureRequest) -> Backends:
    """*mode*'s backends (module docs); call it from a synchronous fixture."""
    templates = request.getfixturevalue("db_templates")
    if mode == "embedded":
        return Backends(mode, templates.sqlite_copy(tmp_path / "bai.sqlite3"), None, "inproc")
    db_url = templates.postgres_emptied(request.getfixturevalue("postgres_dsn"))
    return Backends(mode, db_url, request.getfixturevalue("redis_url"), "ipc")


@asynccontextmanager
async def running_deployment(
    backends: Backends,
    tmp_path: Path,
    *,
    agent_count: int = 1,
    manager: dict[str, str | int] | None = None,
    storage: bool = False,
    app_proxy: bool = False,
) -> AsyncIterator[Deployment]:
    """Run a deployment on *backends* (module docs) for the ``async with`` block.

    With *storage*, a storage proxy with one ``vfs`` volume (host ``local:local``)
    runs beside it (:mod:`support.storage`); with *app_proxy*, an app proxy
    announced as the ``default`` resource group's (:mod:`support.appproxy`).
    """
    overrides: dict[str, str | int] = {"service-addr": "127.0.0.1:0", **(manager or {})}
    async with running_cluster(
        backends.db_url,
        tmp_path,
        agent_count=agent_count,
        redis_url=backends.redis_url,
        manager=overrides,
        rpc=backends.rpc,
    ) as cluster:
        proxy = (
            await start_storage_proxy(cluster.nursery, cluster.db, tmp_path / "vfroot")
            if storage
            else None
        )
        if app_proxy:
            apps = await start_proxy(cluster.nursery)
            await announce_app_proxy(cluster.db, "default", apps.service.config, apps.addresses)
        urls: list[str] = await cluster.nursery.start(serve_api, cluster.ctx)
        keys = await fixture_keys(cluster.db)
        async with httpx.AsyncClient(timeout=60.0) as http:
            api = Api(
                base_url=urls[0],
                host=urls[0].removeprefix("http://"),
                db=cluster.db,
                ctx=cluster.ctx,
                http=http,
                admin=keys["admin@lablup.com"],
                user=keys["user@lablup.com"],
            )
            yield Deployment(api, cluster, backends.mode, proxy)
