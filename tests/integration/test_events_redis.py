"""Behaviour specific to the Redis Streams event bus, against the real Redis.

The shared contract (broadcast, anycast, redelivery, ordering) is in
``test_event_bus_contract.py``; these tests cover what only Redis has: other
processes' connections dying, foreign stream entries, consumer-name cleanup,
a stream deleted under the bus, and key prefixes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import coredis
import pytest
import trio

from bai.common.events import SessionStarted
from bai.common.events.redis import RedisEventBus
from bai.common.types import AccessKey, SessionId

CLAIM_IDLE = 0.3
POLL_INTERVAL = 0.05
WAIT = 10.0


def started(n: int) -> SessionStarted:
    return SessionStarted(session_id=SessionId(uuid.UUID(int=n)), owner_access_key=AccessKey("AK"))


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[coredis.Redis[bytes]]:
    async with coredis.Redis.from_url(redis_url) as client:
        yield client


class Opener:
    """Starts buses on a per-test prefix and deletes the prefix's keys at the end."""

    def __init__(self, url: str, redis: coredis.Redis[bytes], nursery: trio.Nursery) -> None:
        self.url = url
        self.redis = redis
        self.prefix = f"test:{uuid.uuid4().hex}:"
        self.nursery = nursery
        self.opened: list[RedisEventBus] = []

    async def __call__(
        self, prefix: str | None = None, consumer_expiry: float = 600.0
    ) -> RedisEventBus:
        bus = RedisEventBus(
            self.url,
            prefix=prefix or self.prefix,
            claim_idle=CLAIM_IDLE,
            poll_interval=POLL_INTERVAL,
            op_timeout=2.0,
            consumer_expiry=consumer_expiry,
        )
        await self.nursery.start(bus.serve)
        self.opened.append(bus)
        return bus

    async def cleanup(self) -> None:
        for bus in self.opened:
            await bus.aclose()
        keys = [key async for key in self.redis.scan_iter(match=f"{self.prefix}*")]
        if keys:
            await self.redis.delete(keys)


@pytest.fixture
async def open_bus(
    redis_url: str, redis: coredis.Redis[bytes], nursery: trio.Nursery
) -> AsyncIterator[Opener]:
    opener = Opener(redis_url, redis, nursery)
    try:
        yield opener
    finally:
        await opener.cleanup()


async def consumer_names(redis: coredis.Redis[bytes], bus: RedisEventBus, group: str) -> set[bytes]:
    infos = await redis.xinfo_consumers(bus.stream_key, group)
    return {name for info in infos if isinstance(name := info[b"name"], bytes)}


async def test_event_is_redelivered_when_the_consumers_connection_is_gone(
    open_bus: Opener,
) -> None:
    doomed, survivor_bus = await open_bus(), await open_bus()
    received = trio.Event()

    async def handler_in_doomed_process(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            async with doomed.consume("workers") as consumer:
                task_status.started(scope)
                await consumer.receive()
                received.set()
                await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        handler = await nursery.start(handler_in_doomed_process)
        async with survivor_bus.consume("workers") as survivor:
            await trio.sleep(2 * POLL_INTERVAL)  # let the doomed consumer block in its read first
            await survivor_bus.publish(started(1))
            with trio.fail_after(WAIT):
                await received.wait()
            # The "process" dies: its connections close before it can give the event back.
            await doomed.aclose()
            handler.cancel()
            with trio.fail_after(WAIT):
                delivery = await survivor.receive()
            await delivery.ack()
    assert delivery.event == started(1)


async def test_foreign_entries_are_skipped_and_acknowledged(
    open_bus: Opener, redis: coredis.Redis[bytes]
) -> None:
    bus = await open_bus()
    async with bus.subscribe() as subscription, bus.consume("workers") as consumer:
        await redis.xadd(bus.stream_key, {b"event": b"\x81\xa4name\xa7bogus!!"})
        await redis.xadd(bus.stream_key, {b"other": b"field"})
        await bus.publish(started(2))
        with trio.fail_after(WAIT):
            assert await subscription.receive() == started(2)
            delivery = await consumer.receive()
        assert delivery.event == started(2)
        await delivery.ack()
    pending = await redis.xpending(bus.stream_key, "workers")
    assert pending.pending == 0  # type: ignore[union-attr]


async def test_closed_consumer_removes_its_name(
    open_bus: Opener, redis: coredis.Redis[bytes]
) -> None:
    bus = await open_bus()
    async with bus.consume("workers") as consumer:
        await bus.publish(started(1))
        with trio.fail_after(WAIT):
            await (await consumer.receive()).ack()
        assert await consumer_names(redis, bus, "workers") != set()
    assert await consumer_names(redis, bus, "workers") == set()


async def test_names_left_by_crashed_consumers_expire(
    open_bus: Opener, redis: coredis.Redis[bytes]
) -> None:
    bus = await open_bus(consumer_expiry=0.3)
    async with bus.consume("workers"):
        # A consumer of a process that died after acknowledging everything.
        await bus.publish(started(1))
        reply = await redis.xreadgroup("workers", "ghost", {bus.stream_key: ">"}, count=1)
        assert reply is not None
        [entries] = reply.values()
        await redis.xack(bus.stream_key, "workers", [entries[0].identifier])
        assert b"ghost" in await consumer_names(redis, bus, "workers")
        with trio.fail_after(WAIT):
            while b"ghost" in await consumer_names(redis, bus, "workers"):  # noqa: ASYNC110  (polling Redis)
                await trio.sleep(0.05)


async def test_consumer_recovers_when_the_stream_is_deleted(
    open_bus: Opener, redis: coredis.Redis[bytes]
) -> None:
    bus = await open_bus()
    async with bus.consume("workers") as consumer:
        await trio.sleep(2 * POLL_INTERVAL)
        await redis.delete([bus.stream_key])
        await bus.publish(started(5))
        with trio.fail_after(WAIT):
            delivery = await consumer.receive()
        await delivery.ack()
    assert delivery.event == started(5)


async def test_buses_with_different_prefixes_do_not_see_each_other(open_bus: Opener) -> None:
    mine = await open_bus()
    other = await open_bus(prefix=f"{open_bus.prefix}other:")
    async with other.subscribe() as theirs, mine.subscribe() as ours:
        await mine.publish(started(1))
        await other.publish(started(2))
        with trio.fail_after(WAIT):
            assert await ours.receive() == started(1)
            assert await theirs.receive() == started(2)
        with trio.move_on_after(4 * POLL_INTERVAL):
            leaked = await theirs.receive()
            pytest.fail(f"event leaked across prefixes: {leaked!r}")
