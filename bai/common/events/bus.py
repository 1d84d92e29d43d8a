"""The event bus interface both deployment modes use, and the parts every bus shares.

:class:`EventBus` is the one interface of the in-process bus
(:mod:`bai.common.events.inproc`) and the Redis Streams bus
(:mod:`bai.common.events.redis`).  :class:`Broadcaster` is the local fan-out
of broadcast subscriptions both use, and :func:`follow_events` a lasting
broadcast subscription that outlives overflows.

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
"""

from __future__ import annotations

import abc
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass

import trio

from bai.common.errors import BaiError, InvalidValue
from bai.common.events.types import Event, EventTypes

__all__ = [
    "DEFAULT_MAX_BACKLOG",
    "DEFAULT_SUBSCRIBER_BUFFER",
    "Broadcaster",
    "BusReadHealth",
    "Consumer",
    "Delivery",
    "EventBus",
    "EventBusError",
    "SubscriberOverflow",
    "Subscription",
    "check_group_name",
    "event_type_filter",
    "follow_events",
    "wanted",
]

log = logging.getLogger(__name__)

#: Events a subscription may hold unread before it is cut off.
DEFAULT_SUBSCRIBER_BUFFER = 1024
#: Events an anycast group (or a Redis stream) keeps before dropping the oldest.
DEFAULT_MAX_BACKLOG = 100_000


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
