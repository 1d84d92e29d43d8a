"""Shared harness of the API integration tests: the real app on hypercorn, signed calls.

Imported by the ``test_api_*`` modules (it holds no tests itself).
:func:`running_api` seeds a database with the default fixture, serves the
API on ``127.0.0.1`` port 0 with :func:`~bai.manager.api.app.serve_api`,
and yields an :class:`Api` whose :meth:`Api.call` signs requests with
:func:`bai.common.auth.sign_request` exactly as a client would.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import sqlalchemy as sa
import trio

from bai.common.auth import sign_request
from bai.common.config import ManagerConfig, parse_config
from bai.common.events import InProcEventBus
from bai.manager.api.app import PUBLIC_RATE_LIMIT, serve_api
from bai.manager.api.auth import AUTH_CACHE_TTL
from bai.manager.api.ratelimit import RateLimiter
from bai.manager.context import ManagerContext
from bai.manager.db import Database
from bai.manager.fixtures import default_fixture, populate
from bai.manager.models import keypairs, users

API_VERSION = "v6.20220615"
PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True)
class Key:
    """A keypair of the seeded database and its owner."""

    access_key: str
    secret_key: str
    email: str
    user_id: uuid.UUID


_NO_BODY: Any = object()


@dataclass
class Api:
    """A running API server and the keypairs of the default fixture."""

    base_url: str
    host: str
    db: Database
    ctx: ManagerContext
    http: httpx.AsyncClient
    admin: Key
    user: Key

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: Key | None = None,
        json_body: Any = _NO_BODY,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        version: str = API_VERSION,
        now: datetime | None = None,
        sign_method: str | None = None,
    ) -> httpx.Response:
        """Send one request; signed with *key* when given (as *sign_method* if set)."""
        target = path + ("?" + urlencode(params) if params else "")
        if content is None:
            content = b"" if json_body is _NO_BODY else json.dumps(json_body).encode()
        sent: dict[str, str] = {"Content-Type": "application/json"}
        if key is not None:
            sent = sign_request(
                method=sign_method or method,
                path=target,
                host=self.host,
                api_version=version,
                access_key=key.access_key,
                secret_key=key.secret_key,
                now=now,
            )
        sent.update(headers or {})
        return await self.http.request(
            method, self.base_url + target, content=content, headers=sent
        )

    async def update_keypair(self, key: Key, **values: Any) -> None:
        """Change columns of *key*'s keypair row."""
        async with self.db.begin() as conn:
            await conn.execute(
                sa.update(keypairs).where(keypairs.c.access_key == key.access_key).values(**values)
            )


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    """Check that *response* is an RFC 7807 problem of *kind*; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["type"] == f"https://api.backend.ai/probs/{kind}"
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    return body


async def seeded_keys(db: Database) -> dict[str, Key]:
    """Seed *db* with the default fixture; its keypairs by owner email."""
    await populate(db, default_fixture())
    rows = await db.fetch(
        sa.select(keypairs.c.access_key, keypairs.c.secret_key, users.c.email, users.c.uuid).join(
            users, keypairs.c.user == users.c.uuid
        )
    )
    return {row.email: Key(row.access_key, row.secret_key, row.email, row.uuid) for row in rows}


def manager_config(extra: str = "") -> ManagerConfig:
    """A manager config serving on a free loopback port."""
    return parse_config(ManagerConfig, '[manager]\nservice-addr = "127.0.0.1:0"\n' + extra)


@asynccontextmanager
async def running_api(
    db: Database,
    *,
    config: ManagerConfig | None = None,
    rate_limiter: RateLimiter | None = None,
    public_rate_limit: int = PUBLIC_RATE_LIMIT,
    auth_cache_ttl: float = AUTH_CACHE_TTL,
) -> AsyncIterator[Api]:
    """Serve the API over *db* (seeded with the default fixture) until the block ends."""
    keys = await seeded_keys(db)
    ctx = ManagerContext(config=config or manager_config(), db=db, bus=InProcEventBus())
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(
            lambda task_status: serve_api(
                ctx,
                rate_limiter=rate_limiter,
                public_rate_limit=public_rate_limit,
                auth_cache_ttl=auth_cache_ttl,
                task_status=task_status,
            )
        )
        base_url = urls[0]
        async with httpx.AsyncClient(timeout=10.0) as http:
            yield Api(
                base_url=base_url,
                host=base_url.removeprefix("http://"),
                db=db,
                ctx=ctx,
                http=http,
                admin=keys["admin@lablup.com"],
                user=keys["user@lablup.com"],
            )
        nursery.cancel_scope.cancel()
