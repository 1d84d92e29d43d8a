"""The event bus contract, run against the in-process bus and the Redis Streams bus.

Each test gets a ``buses`` fixture whose :meth:`Buses.open` returns a started
handle on one shared bus: for the in-process backend always the same object,
for Redis a new connection (standing for another process) on the same stream.
The Redis tests use a unique key prefix and delete their keys afterwards.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import coredis
import pytest
import trio

from bai.common.events import (
    AgentHeartbeat,
    BgtaskDone,
    BgtaskUpdated,
    Consumer,
    DoSchedule,
    Event,
    EventBus,
    ExecutionTimeout,
    InProcEventBus,
    KernelEvent,
    KernelStarted,
    KernelTerminated,
    SessionEvent,
    SessionStarted,
    SessionTerminated,
    SubscriberOverflow,
)
from bai.common.events.redis import RedisEventBus
from bai.common.types import AccessKey, AgentId, KernelId, SessionId

# Small Redis timings so redelivery tests take a fraction of a second.
CLAIM_IDLE = 0.3
POLL_INTERVAL = 0.05
# Long enough for a wrongly redelivered or duplicated event to show up.
SETTLE = CLAIM_IDLE + 6 * POLL_INTERVAL
WAIT = 10.0


class Buses:
    def __init__(self, backend: str, redis_url: str | None, nursery: trio.Nursery) -> None:
        self.backend = backend
        self.redis_url = redis_url
        self.prefix = f"test:{uuid.uuid4().hex}:"
        self._nursery = nursery
        self._opened: list[EventBus] = []

    async def open(self) -> EventBus:
        if self.backend == "inproc" and self._opened:
            return self._opened[0]
        bus: EventBus
        if self.redis_url is None:
            bus = InProcEventBus()
        else:
            bus = RedisEventBus(
                self.redis_url,
                prefix=self.prefix,
                claim_idle=CLAIM_IDLE,
                poll_interval=POLL_INTERVAL,
                op_timeout=2.0,
            )
        await self._nursery.start(bus.serve)
        self._opened.append(bus)
        return bus

    async def close(self) -> None:
        for bus in self._opened:
            await bus.aclose()
        if self.redis_url is not None:
            async with coredis.Redis.from_url(self.redis_url) as redis:
                keys = [key async for key in redis.scan_iter(match=f"{self.prefix}*")]
                if keys:
                    await redis.delete(keys)


@pytest.fixture(params=["inproc", "redis"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return "redis", url
    return "inproc", None


@pytest.fixture
async def buses(backend: tuple[str, str | None], nursery: trio.Nursery) -> AsyncIterator[Buses]:
    name, url = backend
    handles = Buses(name, url, nursery)
    try:
        yield handles
    finally:
        await handles.close()


def started(n: int) -> SessionStarted:
    return SessionStarted(
        session_id=SessionId(uuid.UUID(int=n)),
        owner_access_key=AccessKey("AKIATEST"),
        session_name=f"s{n}",
    )


def progress(task: int, n: int) -> BgtaskUpdated:
    return BgtaskUpdated(task_id=uuid.UUID(int=task), current_progress=n, total_progress=100)


MIXED: list[Event] = [
    started(1),
    SessionTerminated(
        session_id=SessionId(uuid.UUID(int=2)),
        owner_access_key=AccessKey("AKIATEST"),
        reason="self-terminated",
        result="SUCCESS",
        exit_code=0,
    ),
    KernelTerminated(
        kernel_id=KernelId(uuid.UUID(int=3)),
        session_id=SessionId(uuid.UUID(int=2)),
        reason="oom-killed",
        exit_code=137,
    ),
    AgentHeartbeat(
        agent_id=AgentId("i-agent-01"),
        agent_info={"slots": {"cpu": "8", "mem": "34359738368"}, "gpus": [0, 1], "up": True},
    ),
    BgtaskDone(task_id=uuid.UUID(int=4), message=None),
    ExecutionTimeout(session_id=SessionId(uuid.UUID(int=5))),
    DoSchedule(),
]


async def receive_all(consumer: Consumer, count: int) -> list[Event]:
    events = []
    with trio.fail_after(WAIT):
        for _ in range(count):
            delivery = await consumer.receive()
            await delivery.ack()
            events.append(delivery.event)
    return events


async def assert_nothing_more(consumer: Consumer) -> None:
    with trio.move_on_after(SETTLE):
        delivery = await consumer.receive()
        pytest.fail(f"unexpected extra delivery of {delivery.event!r}")


async def test_broadcast_reaches_every_subscriber_in_order(buses: Buses) -> None:
    first, second = await buses.open(), await buses.open()
    sent = [started(n) for n in range(20)]
    async with AsyncExitStack() as stack:
        subscriptions = [
            await stack.enter_async_context(first.subscribe()),
            await stack.enter_async_context(first.subscribe()),
            await stack.enter_async_context(second.subscribe()),
        ]
        for event in sent:
            await first.publish(event)
        for subscription in subscriptions:
            with trio.fail_after(WAIT):
                got = [await subscription.receive() for _ in sent]
            assert got == sent


async def test_every_event_kind_round_trips_through_both_deliveries(buses: Buses) -> None:
    bus = await buses.open()
    async with bus.subscribe() as subscription, bus.consume("handlers") as consumer:
        for event in MIXED:
            await bus.publish(event)
        with trio.fail_after(WAIT):
            broadcast = [await subscription.receive() for _ in MIXED]
        anycast = await receive_all(consumer, len(MIXED))
    assert broadcast == MIXED
    assert anycast == MIXED
    assert [type(event) for event in broadcast] == [type(event) for event in MIXED]


async def test_subscription_type_filter(buses: Buses) -> None:
    bus = await buses.open()
    async with bus.subscribe(types=[SessionEvent]) as subscription:
        for event in MIXED:
            await bus.publish(event)
        await bus.publish(started(99))
        with trio.fail_after(WAIT):
            got = [await subscription.receive() for _ in range(3)]
    assert got == [MIXED[0], MIXED[1], started(99)]


async def test_anycast_delivers_each_event_to_exactly_one_consumer_per_group(
    buses: Buses,
) -> None:
    first, second = await buses.open(), await buses.open()
    sent = [started(n) for n in range(60)]
    received: list[tuple[int, Event]] = []
    audited: list[Event] = []
    all_received = trio.Event()

    async def work(bus: EventBus, index: int, task_status: trio.TaskStatus[None]) -> None:
        async with bus.consume("workers") as consumer:
            task_status.started()
            async for delivery in consumer:
                await trio.sleep(0.005)  # a handler that takes a moment, so work is shared
                await delivery.ack()
                received.append((index, delivery.event))
                if len(received) >= len(sent):
                    all_received.set()

    async with trio.open_nursery() as nursery:
        for index, bus in enumerate([first, first, second]):
            await nursery.start(work, bus, index)
        async with second.consume("auditors") as auditor:
            for event in sent:
                await first.publish(event)
            with trio.fail_after(WAIT):
                await all_received.wait()
            audited = await receive_all(auditor, len(sent))
            await assert_nothing_more(auditor)
        nursery.cancel_scope.cancel()

    assert Counter(event for _, event in received) == Counter(sent)
    assert len({index for index, _ in received}) >= 2, "one consumer took every event"
    assert audited == sent


async def test_unacked_event_goes_to_another_consumer_when_its_consumer_is_cancelled(
    buses: Buses,
) -> None:
    first, second = await buses.open(), await buses.open()
    event = started(7)
    got_it = trio.Event()

    async def crashing_handler(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            async with first.consume("workers") as consumer:
                task_status.started(scope)
                delivery = await consumer.receive()
                assert delivery.event == event
                got_it.set()
                await trio.sleep_forever()  # "handling" when the task is cancelled, never acks

    async with trio.open_nursery() as nursery:
        crashing = await nursery.start(crashing_handler)
        await first.publish(event)
        with trio.fail_after(WAIT):
            await got_it.wait()
        async with second.consume("workers") as survivor:
            crashing.cancel()
            assert await receive_all(survivor, 1) == [event]
            await assert_nothing_more(survivor)


async def test_slow_consumer_keeps_its_event(buses: Buses) -> None:
    first, second = await buses.open(), await buses.open()
    async with first.consume("workers") as slow, second.consume("workers") as idle:
        await first.publish(started(1))
        with trio.fail_after(WAIT):
            delivery = await slow.receive()
        # Hold the event for several claim periods; the other consumer must not get it.
        with trio.move_on_after(4 * CLAIM_IDLE):
            stolen = await idle.receive()
            pytest.fail(f"event was taken from a live consumer: {stolen.event!r}")
        await delivery.ack()
        await assert_nothing_more(idle)


async def test_ack_after_consumer_closed_fails_and_event_is_redelivered(buses: Buses) -> None:
    bus = await buses.open()
    async with bus.consume("workers") as consumer:
        await bus.publish(started(3))
        with trio.fail_after(WAIT):
            delivery = await consumer.receive()
    with pytest.raises(trio.ClosedResourceError):
        await delivery.ack()
    async with bus.consume("workers") as again:
        assert await receive_all(again, 1) == [started(3)]


async def test_group_keeps_events_while_it_has_no_consumer(buses: Buses) -> None:
    bus = await buses.open()
    async with bus.consume("workers"):
        pass
    for n in range(3):
        await bus.publish(started(n))
    async with bus.consume("workers") as consumer:
        assert await receive_all(consumer, 3) == [started(0), started(1), started(2)]


async def test_consumer_type_filter_skips_other_events_for_good(buses: Buses) -> None:
    bus = await buses.open()
    async with bus.consume("kernels", types=[KernelEvent]) as consumer:
        kernel = KernelStarted(
            kernel_id=KernelId(uuid.UUID(int=1)), session_id=SessionId(uuid.UUID(int=2))
        )
        await bus.publish(started(1))
        await bus.publish(kernel)
        await bus.publish(DoSchedule())
        assert await receive_all(consumer, 1) == [kernel]
        await assert_nothing_more(consumer)


async def test_unsubscribed_subscription_gets_nothing_and_holds_nothing_up(buses: Buses) -> None:
    bus = await buses.open()
    async with bus.subscribe() as staying:
        async with bus.subscribe(buffer_size=4) as leaving:
            pass
        sent = [started(n) for n in range(10)]
        for event in sent:
            await bus.publish(event)
        with trio.fail_after(WAIT):
            assert [await staying.receive() for _ in sent] == sent
    with pytest.raises(trio.ClosedResourceError):
        await leaving.receive()


async def test_subscriber_that_falls_behind_is_cut_off_without_hurting_others(
    buses: Buses,
) -> None:
    bus = await buses.open()
    sent = [started(n) for n in range(10)]
    async with bus.subscribe() as keeping_up, bus.subscribe(buffer_size=4) as lagging:
        for event in sent:
            await bus.publish(event)
        # Once the healthy subscriber has everything, the lagging one has been offered everything.
        with trio.fail_after(WAIT):
            assert [await keeping_up.receive() for _ in sent] == sent
        assert [await lagging.receive() for _ in range(4)] == sent[:4]
        with pytest.raises(SubscriberOverflow):
            await lagging.receive()
        await bus.publish(started(10))
        with trio.fail_after(WAIT):
            assert await keeping_up.receive() == started(10)


async def test_order_is_kept_per_producer(buses: Buses) -> None:
    first, second = await buses.open(), await buses.open()
    per_producer = 40

    async def produce(bus: EventBus, task: int) -> None:
        for n in range(per_producer):
            await bus.publish(progress(task, n))

    async with first.subscribe() as subscription, second.consume("ordered") as consumer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce, first, 1)
            nursery.start_soon(produce, second, 2)
        with trio.fail_after(WAIT):
            broadcast = [await subscription.receive() for _ in range(2 * per_producer)]
        anycast = await receive_all(consumer, 2 * per_producer)

    for received in (broadcast, anycast):
        for task in (1, 2):
            steps = [
                event.current_progress
                for event in received
                if isinstance(event, BgtaskUpdated) and event.task_id == uuid.UUID(int=task)
            ]
            assert steps == list(range(per_producer))


async def test_closed_bus_ends_subscriptions_and_refuses_work(buses: Buses) -> None:
    bus = await buses.open()
    async with bus.subscribe() as subscription:
        await bus.aclose()
        with trio.fail_after(WAIT):
            assert [event async for event in subscription] == []
    with pytest.raises(trio.ClosedResourceError):
        await bus.publish(started(1))
    with pytest.raises(trio.ClosedResourceError):
        async with bus.subscribe():
            pass
    with pytest.raises(trio.ClosedResourceError):
        async with bus.consume("workers"):
            pass
