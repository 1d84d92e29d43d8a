"""The in-process event bus, for the embedded ``bai up`` mode.

:class:`InProcEventBus` keeps every delivery guarantee of
:mod:`bai.common.events.bus` within one Trio process, on memory channels and
parking lots; it imports no Redis client.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from bai.common.errors import InvalidValue
from bai.common.events.bus import (
    DEFAULT_MAX_BACKLOG,
    DEFAULT_SUBSCRIBER_BUFFER,
    Broadcaster,
    Consumer,
    Delivery,
    EventBus,
    Subscription,
    check_group_name,
    event_type_filter,
    wanted,
)
from bai.common.events.codec import decode_event, encode_event
from bai.common.events.types import Event, EventTypes

__all__ = ["InProcEventBus"]

log = logging.getLogger(__name__)


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
