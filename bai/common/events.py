"""Typed cluster events, their wire codec, and the event bus interface.

Every component reports what happens to sessions, kernels, agents, background
tasks and code executions as small immutable event objects.  This module
defines

* one :class:`Event` subclass per event name (``session_started``,
  ``kernel_terminated``, ``agent_heartbeat``, ...), whose fields follow the
  spec's SSE event data (session id, owner access key, reason, exit code,
  background-task progress);
* :func:`encode_event` / :func:`decode_event`, an exact MessagePack round trip;
  decoding anything malformed or unknown raises :class:`InvalidEvent`;
* :class:`EventBus`, the one interface both deployment modes use, and
  :class:`InProcEventBus`, its Trio memory implementation for the embedded
  ``bai up`` mode.  The Redis Streams implementation lives in
  :mod:`bai.common.events_redis` so that embedded mode never imports a Redis
  client.

Session and kernel events (:class:`SessionEvent`, :class:`KernelEvent`) are
the public record of status changes: only the manager's one transition
function publishes them, so a subscriber sees each change once.  An agent
reports the end of its kernels with :class:`AgentKernelTerminated`, which the
manager consumes (anycast) to move the kernel on and which no public stream
shows.

Delivery model (the same for every implementation):

* :meth:`EventBus.publish` sends one event; the producer does not choose who
  gets it.
* **Broadcast** -- :meth:`EventBus.subscribe`: every open subscription receives
  every event published after ``subscribe`` returned, in publication order per
  producer.  A subscription that falls more than ``buffer_size`` events behind
  is cut off with :class:`SubscriberOverflow` rather than slowing the bus down.
* **Anycast** -- :meth:`EventBus.consume`: consumers that share a *group* name
  split the events between them; each event goes to exactly one consumer of
  each group, which must :meth:`Delivery.ack` it.  A consumer that goes away
  (its context exits, its task is cancelled, its process or connection dies)
  before acknowledging loses its claim, and the event is delivered again to
  another consumer of the group: anycast is at-least-once and never loses an
  event to a crash.  A group starts receiving events when its first consumer
  opens, and from then on keeps events for it even while no consumer is open.

Events are shared between receivers: treat them (including the
``agent_info`` dict of :class:`AgentHeartbeat`) as read-only.
"""

from __future__ import annotations

import abc
import functools
import logging
import math
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias, Union

import msgspec
import trio

from bai.common.errors import BaiError, InvalidValue
from bai.common.types import AccessKey, AgentId, KernelId, SessionId

if TYPE_CHECKING:
    from bai.common.config import RedisConfig

__all__ = [
    "DEFAULT_MAX_BACKLOG",
    "DEFAULT_SUBSCRIBER_BUFFER",
    "EVENT_TYPES",
    "AgentEvent",
    "AgentHeartbeat",
    "AgentKernelTerminated",
    "AgentStarted",
    "AgentTerminated",
    "BgtaskCancelled",
    "BgtaskDone",
    "BgtaskEvent",
    "BgtaskFailed",
    "BgtaskUpdated",
    "Broadcaster",
    "BusReadHealth",
    "Consumer",
    "Delivery",
    "DoSchedule",
    "Event",
    "EventBus",
    "EventBusError",
    "EventTypes",
    "ExecutionCancelled",
    "ExecutionEvent",
    "ExecutionFinished",
    "ExecutionStarted",
    "ExecutionTimeout",
    "InProcEventBus",
    "InvalidEvent",
    "KernelCancelled",
    "KernelCreating",
    "KernelEvent",
    "KernelPreparing",
    "KernelPulling",
    "KernelStarted",
    "KernelTerminated",
    "KernelTerminating",
    "SessionCancelled",
    "SessionCreating",
    "SessionEnqueued",
    "SessionEvent",
    "SessionFailure",
    "SessionPreparing",
    "SessionPulling",
    "SessionResult",
    "SessionScheduled",
    "SessionStarted",
    "SessionSuccess",
    "SessionTerminated",
    "SessionTerminating",
    "SubscriberOverflow",
    "Subscription",
    "check_group_name",
    "decode_event",
    "encode_event",
    "event_type_filter",
    "follow_events",
    "running_event_bus",
    "wanted",
]

log = logging.getLogger(__name__)

#: Events a subscription may hold unread before it is cut off.
DEFAULT_SUBSCRIBER_BUFFER = 1024
#: Events an anycast group (or a Redis stream) keeps before dropping the oldest.
DEFAULT_MAX_BACKLOG = 100_000


# --------------------------------------------------------------------------
# Event types
# --------------------------------------------------------------------------


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="name"):
    """Base of every event.  ``name`` is the fixed wire name of the concrete class."""

    name: ClassVar[str]


class SessionEvent(Event, frozen=True, kw_only=True):
    """A compute session changed state.

    Mirrors the spec's session SSE data: ``sessionId``, ``ownerAccessKey`` and a
    short ``reason`` (kebab-case, may be empty).
    """

    session_id: SessionId
    owner_access_key: AccessKey
    session_name: str = ""
    reason: str = ""


#: Outcome of a batch session, as the spec's ``result`` field reports it.
SessionResult: TypeAlias = Literal["UNDEFINED", "SUCCESS", "FAILURE"]


class SessionEnqueued(SessionEvent, frozen=True, tag="session_enqueued"):
    """The session entered the pending queue."""


class SessionScheduled(SessionEvent, frozen=True, tag="session_scheduled"):
    """The scheduler placed the session on agents."""


class SessionPreparing(SessionEvent, frozen=True, tag="session_preparing"):
    """Resources are allocated and the agents are preparing the kernels."""


class SessionPulling(SessionEvent, frozen=True, tag="session_pulling"):
    """An agent is pulling the session image."""


class SessionCreating(SessionEvent, frozen=True, tag="session_creating"):
    """The kernels' containers or processes are being created."""


class SessionStarted(SessionEvent, frozen=True, tag="session_started"):
    """The session is ready to run code."""


class SessionTerminating(SessionEvent, frozen=True, tag="session_terminating"):
    """The session is being destroyed."""


class SessionTerminated(SessionEvent, frozen=True, tag="session_terminated"):
    """The session is gone; ``result`` is meaningful for batch sessions only."""

    result: SessionResult = "UNDEFINED"
    exit_code: int | None = None


class SessionSuccess(SessionEvent, frozen=True, tag="session_success"):
    """A batch session's main program exited successfully."""

    exit_code: int | None = None


class SessionFailure(SessionEvent, frozen=True, tag="session_failure"):
    """The session failed: a batch session's result became FAILURE, or a started
    session went to ERROR (it holds its kernels until destroyed)."""

    exit_code: int | None = None


class SessionCancelled(SessionEvent, frozen=True, tag="session_cancelled"):
    """The session ended before it started: cancelled, or its creation failed (ERROR)."""


class KernelEvent(Event, frozen=True, kw_only=True):
    """A kernel (one container or process of a session) changed state."""

    kernel_id: KernelId
    session_id: SessionId
    reason: str = ""


class KernelPreparing(KernelEvent, frozen=True, tag="kernel_preparing"):
    """The agent is preparing the kernel."""


class KernelPulling(KernelEvent, frozen=True, tag="kernel_pulling"):
    """The agent is pulling the kernel's image."""


class KernelCreating(KernelEvent, frozen=True, tag="kernel_creating"):
    """The agent is creating the kernel's container or process."""


class KernelStarted(KernelEvent, frozen=True, tag="kernel_started"):
    """The kernel runner is up."""


class KernelTerminating(KernelEvent, frozen=True, tag="kernel_terminating"):
    """The agent is stopping the kernel."""


class KernelTerminated(KernelEvent, frozen=True, tag="kernel_terminated"):
    """The kernel is gone; ``exit_code`` is its main process's status when known."""

    exit_code: int | None = None


class KernelCancelled(KernelEvent, frozen=True, tag="kernel_cancelled"):
    """The kernel ended before it started: cancelled, or its creation failed (ERROR)."""


class AgentEvent(Event, frozen=True, kw_only=True):
    """An agent reports about itself or its kernels."""

    agent_id: AgentId


class AgentStarted(AgentEvent, frozen=True, tag="agent_started"):
    """The agent came up and is ready for kernels."""

    reason: str = ""


class AgentHeartbeat(AgentEvent, frozen=True, tag="agent_heartbeat"):
    """Periodic liveness report with the agent's info (slots, address, version, ...)."""

    agent_info: dict[str, Any]


class AgentTerminated(AgentEvent, frozen=True, tag="agent_terminated"):
    """The agent is shutting down or was declared lost."""

    reason: str = ""


class AgentKernelTerminated(AgentEvent, frozen=True, tag="agent_kernel_terminated"):
    """The agent's report that one of its kernels is gone, for the manager to act on.

    Not a :class:`KernelEvent`: the public ``kernel_terminated`` follows from
    the manager's transition, so streams of kernel events never show a kernel's
    end twice.
    """

    kernel_id: KernelId
    session_id: SessionId
    reason: str = ""
    exit_code: int | None = None


class BgtaskEvent(Event, frozen=True, kw_only=True):
    """Progress of a background task, as the spec's background-task SSE reports it."""

    task_id: uuid.UUID
    message: str | None = None


class BgtaskUpdated(BgtaskEvent, frozen=True, tag="bgtask_updated"):
    """Progress report; ``current_progress`` is meaningless when ``total_progress`` is 0."""

    current_progress: int = 0
    total_progress: int = 0


class BgtaskDone(BgtaskEvent, frozen=True, tag="bgtask_done"):
    """The background task completed."""


class BgtaskFailed(BgtaskEvent, frozen=True, tag="bgtask_failed"):
    """The background task failed; ``message`` says why."""


class BgtaskCancelled(BgtaskEvent, frozen=True, tag="bgtask_cancelled"):
    """The background task was cancelled (usually by a shutdown)."""


class ExecutionEvent(Event, frozen=True, kw_only=True):
    """A code execution in a session changed state."""

    session_id: SessionId


class ExecutionStarted(ExecutionEvent, frozen=True, tag="execution_started"):
    """A run started in the session."""


class ExecutionFinished(ExecutionEvent, frozen=True, tag="execution_finished"):
    """The run finished."""


class ExecutionTimeout(ExecutionEvent, frozen=True, tag="execution_timeout"):
    """The run exceeded its time limit."""


class ExecutionCancelled(ExecutionEvent, frozen=True, tag="execution_cancelled"):
    """The run was interrupted or cancelled."""


class DoSchedule(Event, frozen=True, tag="do_schedule"):
    """Asks every manager's scheduler to run a scheduling pass now.

    ``origin`` names the dispatcher of the process that asked (empty when it
    has none); that dispatcher was woken directly and ignores its own echo.
    """

    origin: str = ""


#: Every concrete event class, in a stable order.
EVENT_TYPES: tuple[type[Event], ...] = (
    SessionEnqueued,
    SessionScheduled,
    SessionPreparing,
    SessionPulling,
    SessionCreating,
    SessionStarted,
    SessionTerminating,
    SessionTerminated,
    SessionSuccess,
    SessionFailure,
    SessionCancelled,
    KernelPreparing,
    KernelPulling,
    KernelCreating,
    KernelStarted,
    KernelTerminating,
    KernelTerminated,
    KernelCancelled,
    AgentStarted,
    AgentHeartbeat,
    AgentTerminated,
    AgentKernelTerminated,
    BgtaskUpdated,
    BgtaskDone,
    BgtaskFailed,
    BgtaskCancelled,
    ExecutionStarted,
    ExecutionFinished,
    ExecutionTimeout,
    ExecutionCancelled,
    DoSchedule,
)

# msgspec keeps the tag in the struct config only; expose it as the ``name``
# class attribute so code can write ``SessionStarted.name`` or ``event.name``.
for _event_type in EVENT_TYPES:
    _tag = _event_type.__struct_config__.tag
    assert isinstance(_tag, str)
    _event_type.name = _tag
del _event_type, _tag

_EVENT_NAMES = frozenset(event_type.name for event_type in EVENT_TYPES)

#: A filter on event classes; base classes such as :class:`SessionEvent` match all their kinds.
EventTypes: TypeAlias = Iterable[type[Event]]


# --------------------------------------------------------------------------
# Codec
# --------------------------------------------------------------------------


class InvalidEvent(InvalidValue):
    """Bytes that are not a well-formed event of a known name."""


class _NameOnly(msgspec.Struct):
    name: str


_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Event] = msgspec.msgpack.Decoder(
    Union[EVENT_TYPES]  # noqa: UP007  (a Union built from the registry tuple)
)
_name_decoder = msgspec.msgpack.Decoder(_NameOnly)


def encode_event(event: Event) -> bytes:
    """Serialize *event* to MessagePack bytes that :func:`decode_event` turns back into it.

    Raises :class:`InvalidEvent` if the event holds something MessagePack cannot
    carry (for example an arbitrary object inside ``agent_info``).
    """
    try:
        return _encoder.encode(event)
    except (msgspec.EncodeError, TypeError, OverflowError) as exc:
        raise InvalidEvent(f"{event.name} event cannot be encoded: {exc}", value=event) from None


def decode_event(data: bytes | bytearray | memoryview) -> Event:
    """Parse bytes made by :func:`encode_event` back into the event.

    Unknown fields are ignored (so newer producers may add fields), but a
    missing name, an unknown name, a missing or mistyped field, or bytes that
    are not MessagePack raise :class:`InvalidEvent` naming the problem.
    """
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise _explain_invalid(data, exc) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"event is not valid MessagePack: {exc}", value=bytes(data)) from None
    except TypeError:
        raise InvalidEvent("event payload must be bytes", value=data) from None


def _explain_invalid(
    data: bytes | bytearray | memoryview, exc: msgspec.ValidationError
) -> InvalidEvent:
    try:
        name = _name_decoder.decode(data).name
    except msgspec.DecodeError:
        return InvalidEvent(
            f"event must be a map with a string 'name': {exc}", value=bytes(data), field="name"
        )
    if name not in _EVENT_NAMES:
        return InvalidEvent("unknown event name", value=name, field="name")
    return InvalidEvent(f"malformed event: {exc}", value=bytes(data), field=name)


# --------------------------------------------------------------------------
# Bus interface
# --------------------------------------------------------------------------


class EventBusError(BaiError):
    """The event bus could not do what was asked (backend unreachable, timed out, ...)."""


class SubscriberOverflow(EventBusError):
    """A subscription fell too far behind and was cut off; later events were not delivered to it."""


class Subscription:
    """The receiving end of a broadcast subscription.

    Iterate it (``async for event in subscription``) or call :meth:`receive`.
    Iteration ends when the bus closes.  Once the ``subscribe`` context has
    exited, receiving raises :class:`trio.ClosedResourceError`.
    """

    def __init__(self, receive_channel: trio.MemoryReceiveChannel[Event]) -> None:
        self._receive_channel = receive_channel
        self._overflowed = False

    async def receive(self) -> Event:
        """Wait for the next event.

        Raises :class:`trio.EndOfChannel` when the bus has closed and
        :class:`SubscriberOverflow` once the buffered events are drained after
        the subscription fell behind.
        """
        try:
            return await self._receive_channel.receive()
        except trio.EndOfChannel:
            if self._overflowed:
                raise SubscriberOverflow(
                    "subscription fell behind by more than its buffer and was cut off"
                ) from None
            raise

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class _Subscriber:
    __slots__ = ("send_channel", "subscription", "types")

    def __init__(self, types: tuple[type[Event], ...] | None, buffer_size: int) -> None:
        send_channel, receive_channel = trio.open_memory_channel[Event](buffer_size)
        self.send_channel = send_channel
        self.subscription = Subscription(receive_channel)
        self.types = types


class Broadcaster:
    """The local fan-out every bus implementation uses for broadcast subscriptions.

    :meth:`deliver` never blocks: a subscriber whose buffer is full is removed
    and its subscription ends with :class:`SubscriberOverflow`, so one slow
    reader cannot stall the bus or the other subscribers.
    """

    def __init__(self) -> None:
        self._subscribers: set[_Subscriber] = set()
        self._closed = False

    def deliver(self, event: Event) -> None:
        """Hand *event* to every subscriber that wants it, without blocking."""
        overflowed: list[_Subscriber] = []
        for subscriber in self._subscribers:
            if not wanted(event, subscriber.types):
                continue
            try:
                subscriber.send_channel.send_nowait(event)
            except trio.WouldBlock:
                overflowed.append(subscriber)
        for subscriber in overflowed:
            log.warning("event subscriber fell behind and was cut off")
            subscriber.subscription._overflowed = True
            self._subscribers.discard(subscriber)
            subscriber.send_channel.close()

    def close(self) -> None:
        """End every subscription (after its buffered events) and refuse new ones."""
        self._closed = True
        for subscriber in self._subscribers:
            subscriber.send_channel.close()
        self._subscribers.clear()

    @contextmanager
    def subscription(self, types: EventTypes | None, buffer_size: int) -> Iterator[Subscription]:
        """Register a subscription for the ``with`` block; it gets every event delivered meanwhile.

        On exit the subscription is unregistered and closed.  Raises
        :class:`InvalidValue` for a bad *types* filter or a *buffer_size*
        below 1.
        """
        if buffer_size < 1:
            raise InvalidValue(
                "buffer size must be at least 1", value=buffer_size, field="buffer_size"
            )
        subscriber = _Subscriber(event_type_filter(types), buffer_size)
        if self._closed:
            subscriber.send_channel.close()
        else:
            self._subscribers.add(subscriber)
        try:
            yield subscriber.subscription
        finally:
            self._subscribers.discard(subscriber)
            subscriber.send_channel.close()
            subscriber.subscription._receive_channel.close()


def event_type_filter(types: EventTypes | None) -> tuple[type[Event], ...] | None:
    """Validate a ``types`` argument and turn it into an ``isinstance`` filter (``None``: all)."""
    if types is None:
        return None
    selected = tuple(types)
    for event_type in selected:
        if not (isinstance(event_type, type) and issubclass(event_type, Event)):
            raise InvalidValue(
                "event filter must list Event classes", value=event_type, field="types"
            )
    return selected


def wanted(event: Event, types: tuple[type[Event], ...] | None) -> bool:
    """Whether *event* passes a filter made by :func:`event_type_filter`."""
    return types is None or isinstance(event, types)


def check_group_name(group: str) -> None:
    """Reject an empty or non-string consumer group name with :class:`InvalidValue`."""
    if not isinstance(group, str) or not group:
        raise InvalidValue(
            "consumer group name must be a non-empty string", value=group, field="group"
        )


class Delivery:
    """One anycast event handed to one consumer, waiting for :meth:`ack`."""

    __slots__ = ("_ack", "_acked", "event")

    def __init__(self, event: Event, ack: Callable[[], Awaitable[None]]) -> None:
        self.event = event
        self._ack = ack
        self._acked = False

    @property
    def acked(self) -> bool:
        """Whether :meth:`ack` has completed."""
        return self._acked

    async def ack(self) -> None:
        """Mark the event handled so it is never delivered again; a second call does nothing.

        Raises :class:`trio.ClosedResourceError` if the consumer has already
        closed (the event has then been given back to the group), and
        :class:`EventBusError` if the backend could not record the
        acknowledgement (the event will then be delivered again).
        """
        if self._acked:
            await trio.lowlevel.checkpoint()
            return
        await self._ack()
        self._acked = True


class Consumer(abc.ABC):
    """One member of an anycast consumer group.

    Iterate it (``async for delivery in consumer``) or call :meth:`receive`;
    call ``await delivery.ack()`` once the event is handled.  Iteration ends
    when the bus closes.
    """

    @abc.abstractmethod
    async def receive(self) -> Delivery:
        """Wait for the next event of the group that no other consumer has.

        Raises :class:`trio.EndOfChannel` once the bus is closed and
        :class:`trio.ClosedResourceError` after the consumer's context exited.
        """

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Delivery:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


@dataclass(frozen=True, slots=True)
class BusReadHealth:
    """How well this process has been reading its bus, on the Trio clock.

    *since* is when the current unbroken run of successful reads began (after
    the bus started, or after the last failed read); *last* is when the latest
    read succeeded, so every event published before it has been read.
    """

    since: float
    last: float


class EventBus(trio.abc.AsyncResource):
    """Publishes events and delivers them by broadcast and by anycast.

    A bus is a Trio service: run ``await nursery.start(bus.serve)`` and it is
    usable once ``start`` returns; it stops when ``serve`` is cancelled or
    :meth:`aclose` is called (``async with bus:`` calls it on exit).  See the
    module docstring for the delivery guarantees every implementation keeps.
    Once the bus has stopped, subscriptions and consumers end, and
    publishing, subscribing or consuming raises :class:`trio.ClosedResourceError`.
    """

    @abc.abstractmethod
    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the bus until cancelled or closed; report started once it is usable.

        Raises :class:`EventBusError` if the backend cannot be reached at start.
        """

    @abc.abstractmethod
    async def publish(self, event: Event) -> None:
        """Send *event* to every subscriber and to one consumer of every group.

        When this returns the event is on the bus.  If it raises, the event may
        or may not have been published (a backend's reply can be lost); it
        raises :class:`InvalidEvent` for an event that cannot be encoded and
        :class:`EventBusError` when the backend is unreachable or too slow.
        """

    @abc.abstractmethod
    def subscribe(
        self,
        *,
        types: EventTypes | None = None,
        buffer_size: int = DEFAULT_SUBSCRIBER_BUFFER,
    ) -> AbstractAsyncContextManager[Subscription]:
        """Open a broadcast subscription: ``async with bus.subscribe() as subscription:``.

        The subscription receives every event published after the ``async
        with`` entered its body (only instances of *types*, when given), in
        order per producer, until the block exits.
        """

    @abc.abstractmethod
    def consume(
        self, group: str, *, types: EventTypes | None = None
    ) -> AbstractAsyncContextManager[Consumer]:
        """Join anycast consumer *group*: ``async with bus.consume("g") as consumer:``.

        Events not matching *types* are acknowledged for the whole group
        without being delivered, so all consumers of one group must pass the
        same *types*.  When the block exits, every delivery not yet
        acknowledged goes back to the group for another consumer.
        """

    def read_health(self) -> BusReadHealth | None:
        """This process's reads of the bus (see :class:`BusReadHealth`); ``None`` while they fail.

        What a silence on the bus proves depends on it: nothing was heard
        only if the bus was being read.  A bus in this process's memory
        cannot fail to be read, which is this default.
        """
        return BusReadHealth(since=-math.inf, last=trio.current_time())


# --------------------------------------------------------------------------
# In-process implementation
# --------------------------------------------------------------------------


class _InProcGroup:
    def __init__(self, name: str, max_backlog: int) -> None:
        self.name = name
        self.max_backlog = max_backlog
        self.queue: deque[Event] = deque()
        self.lot = trio.lowlevel.ParkingLot()

    def put(self, event: Event) -> None:
        if len(self.queue) >= self.max_backlog:
            dropped = self.queue.popleft()
            log.warning(
                "consumer group %r is %d events behind; dropped the oldest (%s)",
                self.name,
                self.max_backlog,
                dropped.name,
            )
        self.queue.append(event)
        self.lot.unpark()

    def give_back(self, events: list[Event]) -> None:
        # Returned events go first so a redelivery does not wait behind newer events.
        self.queue.extendleft(reversed(events))
        self.lot.unpark(count=len(events))


class _InProcConsumer(Consumer):
    def __init__(
        self, bus: InProcEventBus, group: _InProcGroup, types: tuple[type[Event], ...] | None
    ) -> None:
        self._bus = bus
        self._group = group
        self._types = types
        self._unacked: dict[int, Event] = {}
        self._serial = 0
        self._closed = False

    async def receive(self) -> Delivery:
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while True:
            if self._closed:
                raise trio.ClosedResourceError("consumer is closed")
            if self._bus._closed:
                raise trio.EndOfChannel
            queue = self._group.queue
            if queue:
                event = queue.popleft()
                if not wanted(event, self._types):
                    continue
                self._serial += 1
                serial = self._serial
                self._unacked[serial] = event
                if not parked:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return Delivery(event, functools.partial(self._ack, serial))
            parked = True
            await self._group.lot.park()

    async def _ack(self, serial: int) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError(
                "consumer closed before the ack; the event was given back"
            )
        self._unacked.pop(serial, None)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._group.give_back(list(self._unacked.values()))
        self._unacked.clear()


class InProcEventBus(EventBus):
    """The event bus of one Trio process, built on memory channels.

    Usable as soon as it is constructed; :meth:`serve` is optional and only
    ties the bus's life to a task like other services.  Each published event
    is encoded and decoded once, so embedded mode sees exactly the values (and
    the encoding errors) distributed mode sees, and receivers never share
    objects with the producer.  A group keeps at most *max_backlog*
    unconsumed events, dropping the oldest with a warning, like the Redis
    stream's length cap.
    """

    def __init__(self, *, max_backlog: int = DEFAULT_MAX_BACKLOG) -> None:
        if max_backlog < 1:
            raise InvalidValue("backlog must be at least 1", value=max_backlog, field="max_backlog")
        self._max_backlog = max_backlog
        self._broadcaster = Broadcaster()
        self._groups: dict[str, _InProcGroup] = {}
        self._closed = False
        self._closed_event = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Report started at once, then close the bus when cancelled or closed."""
        task_status.started()
        try:
            await self._closed_event.wait()
        finally:
            self._close()

    async def publish(self, event: Event) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("event bus is closed")
        copy = decode_event(encode_event(event))
        self._broadcaster.deliver(copy)
        for group in self._groups.values():
            group.put(copy)

    @asynccontextmanager
    async def subscribe(
        self,
        *,
        types: EventTypes | None = None,
        buffer_size: int = DEFAULT_SUBSCRIBER_BUFFER,
    ) -> AsyncIterator[Subscription]:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("event bus is closed")
        with self._broadcaster.subscription(types, buffer_size) as subscription:
            yield subscription

    @asynccontextmanager
    async def consume(
        self, group: str, *, types: EventTypes | None = None
    ) -> AsyncIterator[Consumer]:
        check_group_name(group)
        type_filter = event_type_filter(types)
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("event bus is closed")
        state = self._groups.get(group)
        if state is None:
            state = self._groups[group] = _InProcGroup(group, self._max_backlog)
        consumer = _InProcConsumer(self, state, type_filter)
        try:
            yield consumer
        finally:
            consumer.close()

    async def aclose(self) -> None:
        """Stop the bus: end every subscription and consumer; idempotent."""
        self._close()
        await trio.lowlevel.checkpoint()

    def _close(self) -> None:
        self._closed = True
        self._closed_event.set()
        self._broadcaster.close()
        for group in self._groups.values():
            group.lot.unpark_all()


async def follow_events(
    bus: EventBus,
    types: EventTypes,
    handle: Callable[[Event], Awaitable[None]],
    *,
    buffer_size: int,
    on_overflow: Callable[[], None],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Broadcast-subscribe to *types* for good, awaiting ``handle(event)`` for each event.

    Reports started once the first subscription is open, so nothing published
    after that is missed.  When the subscriber falls behind (the subscription
    ends with :class:`SubscriberOverflow`), ``on_overflow()`` is called and a
    new subscription opened: the events in between are lost, which the caller
    makes up for.  Returns when the bus closes the subscription.
    """
    started = False
    while True:
        async with bus.subscribe(types=types, buffer_size=buffer_size) as events:
            if not started:
                started = True
                task_status.started()
            try:
                async for event in events:
                    await handle(event)
            except SubscriberOverflow:
                on_overflow()
                continue
        return


def event_bus_for(redis: RedisConfig) -> EventBus:
    """The (not yet started) event bus a daemon's ``[redis]`` section names.

    ``type = "inproc"`` gives an :class:`InProcEventBus` that only this process
    sees; ``"redis"`` a Redis Streams bus (imported only then, so the embedded
    mode never loads the Redis client).
    """
    if redis.type == "inproc":
        return InProcEventBus()
    from bai.common.events_redis import RedisEventBus

    return RedisEventBus(redis.url)


@asynccontextmanager
async def running_event_bus(redis: RedisConfig) -> AsyncIterator[EventBus]:
    """Serve the bus *redis* names (see :func:`event_bus_for`) for the ``async with`` block.

    The bus stops only after the block has exited, even when the block is
    cancelled: a daemon's services still publish (``kernel_terminated``,
    ``agent_terminated``) and hand back consumed events while they clean up
    after the cancellation that stops the daemon.  Raises
    :class:`trio.TooSlowError` if the bus does not start within the
    section's ``connect-timeout``.
    """
    bus = event_bus_for(redis)
    async with trio.open_nursery() as nursery:
        bus_scope = trio.CancelScope()

        async def serve(*, task_status: trio.TaskStatus[None]) -> None:
            with bus_scope:
                await bus.serve(task_status=task_status)

        with trio.fail_after(float(redis.connect_timeout)):
            await nursery.start(serve)
        # Shielded only now, so that the start above still honours its deadline.
        bus_scope.shield = True
        try:
            yield bus
        finally:
            bus_scope.cancel()
