"""Login blocks kept in Redis (the distributed mode): shared by every manager, expiring,
and selected by the ``[redis]`` section, also behind ``/auth/authorize``."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
import trio

from bai.common.config import RedisConfig, parse_config
from bai.common.config.schema import ManagerConfig
from bai.manager.api.loginblock import (
    LoginBlockerUnavailable,
    MemoryLoginBlocker,
    RedisLoginBlocker,
    open_login_blocker,
)
from bai.manager.db import Database
from bai.manager.models import users
from bai.manager.models.identity import hash_password

from support.api import assert_problem, running_api
from support.distributed import private_redis_db

PASSWORD = "correct horse battery staple"


async def test_two_redis_blockers_share_the_counts(redis_url: str) -> None:
    prefix = f"bai-test:{uuid.uuid4().hex}:"
    async with (
        RedisLoginBlocker(redis_url, block_time=1.0, allowed=2, prefix=prefix) as first,
        RedisLoginBlocker(redis_url, block_time=1.0, allowed=2, prefix=prefix) as second,
    ):
        assert await first.fail("acct") == 1
        assert await second.blocked_for("acct") == 0.0
        assert await second.fail("acct") == 2
        wait = await first.blocked_for("acct")
        assert 0.5 < wait <= 1.0
        await trio.sleep(wait + 0.1)
        assert await second.blocked_for("acct") == 0.0
        assert await first.fail("acct") == 1
        await second.clear("acct")
        assert await first.fail("acct") == 1


async def test_an_unreachable_redis_is_reported() -> None:
    try:
        async with RedisLoginBlocker("redis://127.0.0.1:1/0", block_time=1.0, allowed=1):
            raise AssertionError("entered a blocker without Redis")
    except LoginBlockerUnavailable as exc:
        assert "PING" in str(exc)


async def test_the_redis_section_selects_the_store(redis_url: str) -> None:
    host, port = redis_url.removeprefix("redis://").removesuffix("/0").split(":")
    config = parse_config(RedisConfig, f'type = "redis"\naddr = "{host}:{port}"\n')
    async with open_login_blocker(config, block_time=5.0, allowed=3) as blocker:
        assert isinstance(blocker, RedisLoginBlocker)
    async with open_login_blocker(RedisConfig(), block_time=5.0, allowed=3) as blocker:
        assert isinstance(blocker, MemoryLoginBlocker)


async def test_authorize_blocks_through_redis(db: Database, redis_url: str) -> None:
    host, port = redis_url.removeprefix("redis://").removesuffix("/0").split(":")
    async with private_redis_db(redis_url) as redis_db:
        config = parse_config(
            ManagerConfig,
            f'[manager]\nservice-addr = "127.0.0.1:0"\nlogin-allowed-fail-count = 2\n'
            f'[redis]\ntype = "redis"\naddr = "{host}:{port}"\ndb = {redis_db}\n',
        )
        async with running_api(db, config=config) as api:
            async with api.db.begin() as conn:
                await conn.execute(
                    sa.update(users)
                    .where(users.c.email == api.user.email)
                    .values(password=hash_password(PASSWORD, iterations=1000))
                )
            body = {"type": "keypair", "domain": "default", "username": "user", "password": "x"}
            for _ in range(2):
                wrong = await api.call("POST", "/auth/authorize", json_body=body)
                assert_problem(wrong, 401, "unauthorized")
            right = await api.call(
                "POST", "/auth/authorize", json_body=body | {"password": PASSWORD}
            )
            assert_problem(right, 429, "login-blocked")
