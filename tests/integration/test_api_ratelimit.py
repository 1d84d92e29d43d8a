"""Both rate limiters keep the same contract; the Redis one is shared through Redis.

The window is shortened to a fraction of a second so that it can roll
during the test.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import coredis
import pytest
import trio

from bai.common.config import RedisConfig
from bai.manager.api.ratelimit import (
    MemoryRateLimiter,
    RateLimiter,
    RateLimiterUnavailable,
    RedisRateLimiter,
    open_rate_limiter,
)
from bai.manager.db import Database

from support.api import manager_config, running_api
from support.distributed import private_redis_db

WINDOW = 0.6


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        async with MemoryRateLimiter(window=WINDOW) as memory:
            yield memory
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"bai-test:{uuid.uuid4().hex}:"
    async with RedisRateLimiter(url, prefix=prefix, window=WINDOW) as redis:
        yield redis
    async with coredis.Redis.from_url(url) as client:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(keys)


async def test_admits_up_to_the_limit(limiter: RateLimiter) -> None:
    decisions = [await limiter.hit("k", 3) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert 0 < decisions[3].retry_after <= WINDOW


async def test_the_window_rolls(limiter: RateLimiter) -> None:
    assert (await limiter.hit("k", 1)).allowed
    assert not (await limiter.hit("k", 1)).allowed
    await trio.sleep(WINDOW + 0.05)
    assert (await limiter.hit("k", 1)).allowed


async def test_keys_and_zero_limits(limiter: RateLimiter) -> None:
    assert (await limiter.hit("a", 1)).allowed
    assert (await limiter.hit("b", 1)).allowed
    assert not (await limiter.hit("c", 0)).allowed


async def test_concurrent_hits_never_exceed_the_limit(limiter: RateLimiter) -> None:
    admitted = 0

    async def one() -> None:
        nonlocal admitted
        if (await limiter.hit("busy", 10)).allowed:
            admitted += 1

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(one)
    assert admitted == 10


async def test_two_redis_limiters_share_the_counts(redis_url: str) -> None:
    prefix = f"bai-test:{uuid.uuid4().hex}:"
    async with (
        RedisRateLimiter(redis_url, prefix=prefix) as first,
        RedisRateLimiter(redis_url, prefix=prefix) as second,
    ):
        assert (await first.hit("k", 2)).allowed
        assert (await second.hit("k", 2)).remaining == 0
        assert not (await first.hit("k", 2)).allowed
        async with coredis.Redis.from_url(redis_url) as client:
            await client.delete([prefix + "k"])


async def test_unreachable_redis_fails_at_startup() -> None:
    with pytest.raises(RateLimiterUnavailable):
        async with RedisRateLimiter("redis://127.0.0.1:1/0", op_timeout=2.0):
            pass


async def test_redis_config_selects_the_redis_limiter(redis_url: str) -> None:
    async with open_rate_limiter(RedisConfig(type="redis")) as limiter:
        assert isinstance(limiter, RedisRateLimiter)


async def test_the_api_counts_in_redis_when_configured(db: Database, redis_url: str) -> None:
    # A Redis database of its own: the manager's keys are fixed and every test run (the
    # other backend's, a parallel worker's) signs with the same fixture keypair.
    async with private_redis_db(redis_url) as redis_db:
        config = manager_config(
            f'[redis]\ntype = "redis"\naddr = "127.0.0.1:6379"\ndb = {redis_db}\n'
        )
        async with running_api(db, config=config) as api:
            await api.update_keypair(api.user, rate_limit=2)
            statuses = [
                (await api.call("GET", "/auth", key=api.user, params={"echo": "x"})).status_code
                for _ in range(3)
            ]
            assert statuses == [200, 200, 429]
            async with coredis.Redis.from_url(config.redis.url) as client:
                key = f"bai:ratelimit:ak:{api.user.access_key}"
                assert await client.zcard(key) == 2
                await client.delete([key])


async def test_a_failing_limiter_does_not_take_the_api_down(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    never_opened = RedisRateLimiter("redis://127.0.0.1:1/0")
    with caplog.at_level(logging.WARNING, logger="bai.manager.api.app"):
        async with running_api(db, rate_limiter=never_opened) as api:
            response = await api.call("GET", "/auth", key=api.user, params={"echo": "x"})
    assert response.status_code == 200
    assert "X-RateLimit-Limit" not in response.headers
    assert any("without rate limits" in record.getMessage() for record in caplog.records)
