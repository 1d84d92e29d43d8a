"""Event types, the event codec, and the in-process bus's own behaviour.

The delivery contract shared by both bus implementations is tested in
``tests/integration/test_event_bus_contract.py``.
"""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

import msgspec
import pytest
import trio
import trio.testing

from bai.common.config import AgentConfig, parse_config
from bai.common.errors import InvalidValue
from bai.common.events import (
    EVENT_TYPES,
    AgentHeartbeat,
    AgentKernelTerminated,
    AgentStarted,
    AgentStatsReported,
    AgentTerminated,
    BgtaskCancelled,
    BgtaskDone,
    BgtaskFailed,
    BgtaskUpdated,
    DoSchedule,
    Event,
    EventBusError,
    ExecutionCancelled,
    ExecutionFinished,
    ExecutionStarted,
    ExecutionTimeout,
    InProcEventBus,
    InvalidEvent,
    KernelCancelled,
    KernelCreating,
    KernelEvent,
    KernelPreparing,
    KernelPulling,
    KernelStarted,
    KernelTerminated,
    KernelTerminating,
    SessionCancelled,
    SessionCreating,
    SessionEnqueued,
    SessionEvent,
    SessionFailure,
    SessionPreparing,
    SessionPulling,
    SessionScheduled,
    SessionStarted,
    SessionSuccess,
    SessionTerminated,
    SessionTerminating,
    decode_event,
    encode_event,
    follow_events,
    running_event_bus,
)
from bai.common.events.redis import RedisEventBus
from bai.common.types import AccessKey, AgentId, KernelId, SessionId

ISSUE_EVENT_NAMES = [
    "session_enqueued",
    "session_scheduled",
    "session_preparing",
    "session_pulling",
    "session_creating",
    "session_started",
    "session_terminating",
    "session_terminated",
    "session_success",
    "session_failure",
    "session_cancelled",
    "kernel_preparing",
    "kernel_pulling",
    "kernel_creating",
    "kernel_started",
    "kernel_terminating",
    "kernel_terminated",
    "kernel_cancelled",
    "agent_started",
    "agent_heartbeat",
    "agent_terminated",
    "agent_kernel_terminated",
    "agent_stats",
    "bgtask_updated",
    "bgtask_done",
    "bgtask_failed",
    "bgtask_cancelled",
    "execution_started",
    "execution_finished",
    "execution_timeout",
    "execution_cancelled",
    "do_schedule",
]

SID = SessionId(uuid.UUID("0b7a3d52-6f1e-4c57-9d6e-2f1f5c1e9a10"))
KID = KernelId(uuid.UUID("5d1c9e0a-8b3f-4a7e-b2c4-7e6f0a9d3b21"))
AK = AccessKey("AKIAIOSFODNN7EXAMPLE")
TASK = uuid.UUID("9f3e2d1c-0b4a-4c5d-8e6f-1a2b3c4d5e6f")
S = TypeVar("S", bound=SessionEvent)
K = TypeVar("K", bound=KernelEvent)


def session(cls: type[S], **fields: Any) -> S:
    return cls(session_id=SID, owner_access_key=AK, session_name="mysession-01", **fields)


def kernel(cls: type[K], **fields: Any) -> K:
    return cls(kernel_id=KID, session_id=SID, **fields)


SAMPLES: list[Event] = [
    session(SessionEnqueued),
    session(SessionScheduled),
    session(SessionPreparing, reason="scheduled"),
    session(SessionPulling, reason="cr.backend.ai/python:3.11"),
    session(SessionCreating),
    session(SessionStarted),
    session(SessionTerminating, reason="user-requested"),
    session(SessionTerminated, reason="self-terminated", result="SUCCESS", exit_code=0),
    session(SessionSuccess, exit_code=0),
    session(SessionFailure, reason="task-failed", exit_code=-9),
    session(SessionCancelled, reason="pending-timeout"),
    kernel(KernelPreparing),
    kernel(KernelPulling, reason="python:3.11"),
    kernel(KernelCreating),
    kernel(KernelStarted),
    kernel(KernelTerminating, reason="user-requested"),
    kernel(KernelTerminated, reason="oom-killed", exit_code=137),
    kernel(KernelCancelled, reason="bootstrap-failed"),
    AgentStarted(agent_id=AgentId("i-node01"), reason="restarted"),
    AgentHeartbeat(
        agent_id=AgentId("i-node01"),
        agent_info={
            "addr": "tcp://10.0.0.5:6001",
            "available_slots": {"cpu": "16", "mem": "68719476736", "cuda.device": "2"},
            "compute_plugins": ["cpu", "mem", "cuda"],
            "version": "bai 0.1",
            "nested": {"ok": True, "ratio": 0.5, "none": None},
        },
    ),
    AgentTerminated(agent_id=AgentId("i-node01"), reason="agent-lost"),
    AgentKernelTerminated(
        agent_id=AgentId("i-node01"),
        kernel_id=KID,
        session_id=SID,
        reason="self-terminated",
        exit_code=137,
        last_stat={"cpu_used": {"current": "120", "capacity": None, "unit_hint": "msec"}},
    ),
    AgentStatsReported(
        agent_id=AgentId("i-node01"),
        kernels={str(KID): {"cpu_used": {"current": "120", "capacity": None, "unit_hint": "msec"}}},
    ),
    BgtaskUpdated(task_id=TASK, current_progress=3, total_progress=10, message="node01"),
    BgtaskDone(task_id=TASK),
    BgtaskFailed(task_id=TASK, message="image not found"),
    BgtaskCancelled(task_id=TASK, message="server shutdown"),
    ExecutionStarted(session_id=SID),
    ExecutionFinished(session_id=SID),
    ExecutionTimeout(session_id=SID),
    ExecutionCancelled(session_id=SID),
    DoSchedule(origin="3f2a9c"),
]


def test_every_event_name_of_the_issue_has_one_class() -> None:
    names = [event_type.name for event_type in EVENT_TYPES]
    assert sorted(names) == sorted(ISSUE_EVENT_NAMES)
    assert len(set(names)) == len(names)


def test_samples_cover_every_event_type() -> None:
    assert [type(event) for event in SAMPLES] == list(EVENT_TYPES)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda event: event.name)
def test_event_round_trips_exactly(event: Event) -> None:
    data = encode_event(event)
    assert isinstance(data, bytes)
    decoded = decode_event(data)
    assert decoded == event
    assert type(decoded) is type(event)
    assert decoded.name == type(event).name
    assert msgspec.msgpack.decode(data)["name"] == event.name


def test_defaults_round_trip_and_stay_small() -> None:
    event = SessionStarted(session_id=SID, owner_access_key=AK)
    assert decode_event(encode_event(event)) == event
    assert event.reason == "" and event.session_name == ""
    assert b"reason" not in encode_event(event)


def test_events_are_immutable_and_keyword_only() -> None:
    event = kernel(KernelStarted)
    with pytest.raises(AttributeError):
        event.reason = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        KernelStarted(KID, SID)  # type: ignore[call-arg]


def test_unknown_fields_from_a_newer_producer_are_ignored() -> None:
    data = msgspec.msgpack.encode({"name": "execution_started", "session_id": str(SID), "new": 1})
    assert decode_event(data) == ExecutionStarted(session_id=SID)


def _raw(**fields: Any) -> bytes:
    return msgspec.msgpack.encode(fields)


@pytest.mark.parametrize(
    ("data", "message_part"),
    [
        (b"", "not valid MessagePack"),
        (b"\xc1", "not valid MessagePack"),
        (encode_event(DoSchedule())[:-2], "not valid MessagePack"),
        (msgspec.msgpack.encode([1, 2]), "map with a string 'name'"),
        (_raw(session_id=str(SID)), "map with a string 'name'"),
        (_raw(name=7), "map with a string 'name'"),
        (_raw(name="session_exploded"), "unknown event name"),
        (_raw(name="session_started", owner_access_key=AK), "`session_id`"),
        (_raw(name="kernel_started", kernel_id="nope", session_id=str(SID)), "kernel_id"),
        (_raw(name="bgtask_updated", task_id=str(TASK), current_progress="3"), "current_progress"),
        (
            _raw(name="session_terminated", session_id=str(SID), owner_access_key=AK, result="MEH"),
            "result",
        ),
    ],
)
def test_malformed_events_raise_invalid_event(data: bytes, message_part: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_event(data)
    assert isinstance(caught.value, InvalidValue)
    assert message_part in str(caught.value)


def test_unknown_event_error_names_the_event() -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_event(_raw(name="session_exploded"))
    assert caught.value.field == "name"
    assert "session_exploded" in str(caught.value)


def test_non_bytes_payload_is_rejected() -> None:
    with pytest.raises(InvalidEvent, match="must be bytes"):
        decode_event("session_started")  # type: ignore[arg-type]


def test_unencodable_event_is_rejected() -> None:
    event = AgentHeartbeat(agent_id=AgentId("a"), agent_info={"when": object()})
    with pytest.raises(InvalidEvent, match="agent_heartbeat event cannot be encoded"):
        encode_event(event)


async def test_inproc_publish_rejects_events_that_could_not_cross_a_network() -> None:
    async with InProcEventBus() as bus, bus.subscribe() as subscription:
        with pytest.raises(InvalidEvent):
            await bus.publish(AgentHeartbeat(agent_id=AgentId("a"), agent_info={"x": object()}))
        await bus.publish(DoSchedule())
        assert await subscription.receive() == DoSchedule()


async def test_inproc_receivers_do_not_share_objects_with_the_producer() -> None:
    info: dict[str, Any] = {"slots": {"cpu": "4"}}
    async with InProcEventBus() as bus, bus.subscribe() as subscription:
        await bus.publish(AgentHeartbeat(agent_id=AgentId("a"), agent_info=info))
        info["slots"]["cpu"] = "999"
        received = await subscription.receive()
    assert isinstance(received, AgentHeartbeat)
    assert received.agent_info == {"slots": {"cpu": "4"}}


async def test_inproc_group_backlog_drops_the_oldest_events() -> None:
    async with InProcEventBus(max_backlog=3) as bus:
        async with bus.consume("workers"):
            pass
        for n in range(5):
            await bus.publish(BgtaskUpdated(task_id=TASK, current_progress=n))
        async with bus.consume("workers") as consumer:
            got = []
            for _ in range(3):
                delivery = await consumer.receive()
                await delivery.ack()
                got.append(delivery.event)
    assert [e.current_progress for e in got if isinstance(e, BgtaskUpdated)] == [2, 3, 4]


async def test_inproc_bus_stops_with_its_serve_task() -> None:
    bus = InProcEventBus()
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        async with bus.consume("workers") as consumer:
            nursery.cancel_scope.cancel()
            with pytest.raises(trio.EndOfChannel):
                await consumer.receive()
    with pytest.raises(trio.ClosedResourceError):
        await bus.publish(DoSchedule())


async def test_running_event_bus_serves_its_users_cleanup_then_stops() -> None:
    redis = parse_config(AgentConfig, '[redis]\ntype = "inproc"').redis
    with trio.CancelScope() as daemon:
        async with running_event_bus(redis) as bus, bus.subscribe() as subscription:
            daemon.cancel()
            try:
                await trio.sleep_forever()
            finally:
                # What an agent does while it stops: report, and hear the report.
                with trio.CancelScope(shield=True):
                    await bus.publish(AgentTerminated(agent_id=AgentId("i-a"), reason="shutdown"))
                    assert isinstance(await subscription.receive(), AgentTerminated)
    with pytest.raises(trio.ClosedResourceError):
        await bus.publish(DoSchedule())


async def test_follow_events_resubscribes_after_overflow_and_ends_with_the_bus() -> None:
    seen: list[str] = []
    overflows: list[bool] = []
    release = trio.Event()

    async def handle(event: Event) -> None:
        assert isinstance(event, DoSchedule)
        seen.append(event.origin)
        if event.origin == "first":
            # Stall so that the next events overflow the one-slot buffer.
            await release.wait()

    bus = InProcEventBus()
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.serve)

        async def follow(*, task_status: trio.TaskStatus[None]) -> None:
            await follow_events(
                bus,
                (DoSchedule,),
                handle,
                buffer_size=1,
                on_overflow=lambda: overflows.append(True),
                task_status=task_status,
            )
            seen.append("returned")

        await nursery.start(follow)
        await bus.publish(AgentStarted(agent_id=AgentId("i-a")))
        for origin in ("first", "lost-1", "lost-2", "lost-3"):
            await bus.publish(DoSchedule(origin=origin))
        await trio.testing.wait_all_tasks_blocked()
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert overflows == [True]
        await bus.publish(DoSchedule(origin="after"))
        await trio.testing.wait_all_tasks_blocked()
        assert seen[0] == "first" and seen[-1] == "after"
        assert "lost-3" not in seen
        await bus.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert seen[-1] == "returned"
        nursery.cancel_scope.cancel()


async def test_receive_after_consumer_closed_is_refused() -> None:
    async with InProcEventBus() as bus:
        async with bus.consume("workers") as consumer:
            pass
        with pytest.raises(trio.ClosedResourceError):
            await consumer.receive()


async def test_second_ack_is_harmless() -> None:
    async with InProcEventBus() as bus, bus.consume("workers") as consumer:
        await bus.publish(DoSchedule())
        delivery = await consumer.receive()
        assert not delivery.acked
        await delivery.ack()
        await delivery.ack()
        assert delivery.acked


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda bus: bus.subscribe(types=[dict]), "types"),
        (lambda bus: bus.subscribe(buffer_size=0), "buffer_size"),
        (lambda bus: bus.consume(""), "group"),
        (lambda bus: bus.consume("g", types=["session_started"]), "types"),
    ],
)
async def test_bad_bus_arguments_raise_invalid_value(call: Any, field: str) -> None:
    async with InProcEventBus() as bus:
        with pytest.raises(InvalidValue) as caught:
            async with call(bus):
                pass
    assert caught.value.field == field


def test_bad_settings_raise_invalid_value() -> None:
    with pytest.raises(InvalidValue) as caught:
        RedisEventBus("redis://127.0.0.1:6379/0", claim_idle=0)
    assert caught.value.field == "claim_idle"
    with pytest.raises(InvalidValue):
        InProcEventBus(max_backlog=0)


async def test_redis_bus_fails_fast_when_redis_is_unreachable() -> None:
    # Port 1 on loopback refuses connections, so no Redis is needed for this test.
    bus = RedisEventBus("redis://127.0.0.1:1/0", op_timeout=2.0)
    async with trio.open_nursery() as nursery:
        with pytest.raises(EventBusError, match="PING"):
            await nursery.start(bus.serve)


async def test_redis_bus_refuses_work_before_it_is_served() -> None:
    bus = RedisEventBus("redis://127.0.0.1:1/0")
    with pytest.raises(EventBusError, match="not running"):
        await bus.publish(DoSchedule())
