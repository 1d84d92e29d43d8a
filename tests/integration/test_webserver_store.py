"""The webserver's session stores: what expires, what a corrupt entry reads as, flushing.

The same checks run against the in-memory store of ``bai up`` and the Redis
store of the distributed mode (a real Redis).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import coredis
import pytest
import trio

from bai.webserver.store import (
    SESSION_KEY_PREFIX,
    LoginHistory,
    MemorySessionStore,
    RedisSessionStore,
    SessionStore,
    StoreUnavailable,
)

from support.distributed import private_redis_db
from support.net import free_port


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        yield MemorySessionStore()
        return
    redis_url: str = request.getfixturevalue("redis_url")
    async with private_redis_db(redis_url) as db:
        url = f"{redis_url.rsplit('/', 1)[0]}/{db}"
        async with RedisSessionStore(url, op_timeout=5.0) as redis_store:
            yield redis_store
            await redis_store.flush()


async def test_sessions_expire_and_can_be_deleted(store: SessionStore) -> None:
    data = {"created": 1, "session": {"authenticated": True}}
    await store.save("a" * 32, data, ttl=1)
    await store.save("b" * 32, data, ttl=60)
    assert await store.load("a" * 32) == data
    await trio.sleep(1.3)
    assert await store.load("a" * 32) is None
    assert await store.load("b" * 32) == data
    await store.delete("b" * 32)
    await store.delete("c" * 32)  # unknown: nothing happens
    assert await store.load("b" * 32) is None


async def test_login_histories_expire_and_flush_forgets_everything(store: SessionStore) -> None:
    assert await store.history("someone") == LoginHistory()
    await store.set_history("someone", LoginHistory(123.5, 3), ttl=1)
    assert await store.history("someone") == LoginHistory(123.5, 3)
    await trio.sleep(1.3)
    assert await store.history("someone") == LoginHistory()
    await store.set_history("someone", LoginHistory(1.0, 1), ttl=60)
    await store.save("d" * 32, {"created": 1, "session": {}}, ttl=60)
    await store.flush()
    assert await store.history("someone") == LoginHistory()
    assert await store.load("d" * 32) is None


async def test_corrupt_redis_entries_read_as_absent(redis_url: str) -> None:
    async with private_redis_db(redis_url) as db:
        url = f"{redis_url.rsplit('/', 1)[0]}/{db}"
        async with RedisSessionStore(url, op_timeout=5.0) as store:
            client: coredis.Redis[bytes] = coredis.Redis.from_url(url)
            async with client:
                await client.set(SESSION_KEY_PREFIX + "e" * 32, "{not json", ex=60)
                await client.set("login_history_x", '{"login_fail_count": "many"}', ex=60)
            assert await store.load("e" * 32) is None
            assert await store.history("x") == LoginHistory()
            await store.flush()


async def test_an_unreachable_redis_is_a_store_error() -> None:
    with pytest.raises(StoreUnavailable, match="PING"):
        async with RedisSessionStore(f"redis://127.0.0.1:{free_port()}/0", op_timeout=2.0):
            pass
