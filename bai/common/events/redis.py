"""The event bus over Redis Streams, for the distributed deployment.

All events go into one stream, ``<prefix>events``, with one ``XADD`` per
publish (length-capped with ``MAXLEN ~``).  Both deliveries read that stream:

* **Anycast** uses a Redis consumer group per bus group: ``XREADGROUP`` hands
  each entry to one consumer and records it in the group's pending list until
  ``XACK``.  While a handler works, the bus re-claims its unacknowledged
  entries every ``claim_idle / 3`` seconds, so a live but slow handler keeps
  them.  A consumer that stops without acknowledging -- its task cancelled,
  its process killed, its connection lost -- stops refreshing; once an entry
  has been idle for ``claim_idle`` seconds, another consumer of the group
  takes it over with ``XAUTOCLAIM`` and it is delivered again.  A consumer
  that closes cleanly marks its unacknowledged entries idle at once, so they
  move on at the next scan (every ``poll_interval``) instead.
* **Broadcast** uses a plain ``XREAD`` of the same stream by one reader task
  per bus (started by the first ``subscribe``), which fans events out to the
  process's subscriptions in memory.  We chose this over Redis pub/sub
  because the stream already holds every event, so one write serves both
  deliveries and broadcast keeps the stream's order; because the reader
  resumes from the last entry id it saw, a dropped connection delays events
  instead of silently losing them (pub/sub forgets whatever is published
  while a subscriber reconnects); and because one
  reader per process keeps the connection count flat however many SSE
  clients subscribe.

Needs Redis 6.2 or newer (``XAUTOCLAIM``).  Every Redis command runs under a
deadline (``op_timeout``, plus the block time for blocking reads).  A failed
publish raises :class:`EventBusError`; the background reads retry with a
capped backoff, so a Redis outage stalls delivery but never crashes the bus.
Entries that do not decode as events are logged and skipped (and
acknowledged, so a poison entry cannot loop).

Consumer names are ``host:pid:random``.  A consumer that closes with nothing
pending removes its name from the group; names left by crashed processes are
removed by the live consumers once they have been idle with nothing pending
for ``consumer_expiry`` seconds.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import coredis
import trio
from coredis import PureToken
from coredis.commands.script import Script
from coredis.exceptions import (
    RedisError,
    StreamConsumerGroupError,
    StreamDuplicateConsumerGroupError,
)
from coredis.response.types import StreamEntry

from bai.common.errors import InvalidValue
from bai.common.events.bus import (
    DEFAULT_MAX_BACKLOG,
    DEFAULT_SUBSCRIBER_BUFFER,
    Broadcaster,
    BusReadHealth,
    Consumer,
    Delivery,
    EventBus,
    EventBusError,
    Subscription,
    check_group_name,
    event_type_filter,
    wanted,
)
from bai.common.events.codec import InvalidEvent, decode_event, encode_event
from bai.common.events.types import Event, EventTypes

__all__ = ["RedisEventBus"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_PAYLOAD = b"event"
_FIRST_ID = b"0-0"
_BROADCAST_BATCH = 512
_MIN_BACKOFF = 0.05
_MAX_BACKOFF = 2.0

# Re-claims (refreshes) the given entries for a consumer, but only those the
# consumer still owns: checking and claiming in one script means a refresh can
# never take back an entry another consumer has already taken over.  ARGV[3]
# is the idle time to set: 0 keeps the claim alive, claim_idle gives it up.
_REFRESH_CLAIMS = Script[bytes](
    script="""
local kept = 0
for i = 4, #ARGV do
  local entry = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #entry == 1 and entry[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
    kept = kept + 1
  end
end
return kept
"""
)

# Deletes consumers of a group that have nothing pending and have been idle at
# least ARGV[2] ms (only consumer ARGV[3] unless it is empty).  Checking and
# deleting in one script means no pending entry is ever deleted with its
# consumer; a live consumer deleted while idle is recreated by its next read.
_RETIRE_CONSUMERS = Script[bytes](
    script="""
local removed = 0
for _, fields in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #fields, 2 do info[fields[i]] = fields[i + 1] end
  if info['pending'] == 0 and info['idle'] >= tonumber(ARGV[2])
      and (ARGV[3] == '' or info['name'] == ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed = removed + 1
  end
end
return removed
"""
)


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _is_missing_group(exc: EventBusError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, StreamConsumerGroupError) and not isinstance(
        cause, StreamDuplicateConsumerGroupError
    )


class _Backoff:
    """Capped exponential delay between retries of a failing background read."""

    def __init__(self) -> None:
        self._delay = 0.0

    async def wait(self, what: str, exc: BaseException) -> None:
        self._delay = min(max(self._delay * 2, _MIN_BACKOFF), _MAX_BACKOFF)
        log.warning("%s failed (%s); retrying in %.2f s", what, exc, self._delay)
        await trio.sleep(self._delay)

    def reset(self) -> None:
        self._delay = 0.0


class RedisEventBus(EventBus):
    """An event bus shared by every process that uses the same Redis and *prefix*.

    Parameters (seconds unless noted):

    * *url* -- ``redis://host:port/db`` (or ``rediss://``, ``unix://``);
    * *prefix* -- key prefix; buses with different prefixes never see each
      other's events;
    * *claim_idle* -- how long an entry must sit unacknowledged by a consumer
      that stopped refreshing it before another consumer takes it over;
    * *poll_interval* -- the longest one blocking read waits, and how often
      consumers scan for entries to take over;
    * *op_timeout* -- deadline of every single Redis command;
    * *max_length* (entries) -- approximate cap on the stream's length;
      older entries are trimmed even if a group has not read them yet;
    * *consumer_expiry* -- idle time after which a consumer name with nothing
      pending is removed from its group.

    Run it with ``await nursery.start(bus.serve)``.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "bai:",
        claim_idle: float = 30.0,
        poll_interval: float = 1.0,
        op_timeout: float = 5.0,
        max_length: int = DEFAULT_MAX_BACKLOG,
        consumer_expiry: float = 600.0,
    ) -> None:
        for field, value in (
            ("claim_idle", claim_idle),
            ("poll_interval", poll_interval),
            ("op_timeout", op_timeout),
            ("max_length", max_length),
            ("consumer_expiry", consumer_expiry),
        ):
            if not value > 0:
                raise InvalidValue("must be positive", value=value, field=field)
        self._url = url
        self._stream = f"{prefix}events"
        self._claim_idle = claim_idle
        self._poll_interval = poll_interval
        self._op_timeout = op_timeout
        self._max_length = max_length
        self._consumer_expiry = consumer_expiry
        self._client: coredis.Redis[bytes] | None = None
        self._nursery: trio.Nursery | None = None
        self._cancel_scope = trio.CancelScope()
        self._stopped = trio.Event()
        self._serving = False
        self._closed = False
        self._broadcaster = Broadcaster()
        self._reader_lock = trio.Lock()
        self._reader_running = False
        self._consumers: set[_RedisConsumer] = set()
        # When the current run of successful reads began (None while reads
        # fail) and when the latest read succeeded: see read_health().
        self._reads_ok_since: float | None = None
        self._last_read_ok = 0.0

    @property
    def stream_key(self) -> str:
        """The Redis key of the stream holding this bus's events."""
        return self._stream

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, check Redis answers ``PING``, report started, and run until cancelled or closed.

        Raises :class:`EventBusError` if Redis does not answer within
        ``op_timeout``; raises :class:`RuntimeError` if called twice.
        """
        if self._serving or self._closed:
            raise RuntimeError("a RedisEventBus can be served only once")
        self._serving = True
        failure: EventBusError | None = None
        client = coredis.Redis.from_url(self._url, connect_timeout=self._op_timeout)
        try:
            with self._cancel_scope:
                async with client:
                    self._client = client
                    try:
                        await self._call("PING", self._redis().ping())
                    except EventBusError as exc:
                        # Raised below, outside the client's task group, so the
                        # caller gets the error itself rather than a group of it.
                        failure = exc
                    else:
                        self._read_succeeded()
                        try:
                            async with trio.open_nursery() as nursery:
                                self._nursery = nursery
                                nursery.start_soon(self._maintain_claims)
                                task_status.started()
                                await trio.sleep_forever()
                        finally:
                            # Before the pool shuts down: a command it then
                            # refuses is reported as the bus being closed.
                            self._closed = True
        finally:
            self._closed = True
            self._client = None
            self._nursery = None
            self._broadcaster.close()
            self._stopped.set()
        if failure is not None:
            raise failure

    async def aclose(self) -> None:
        """Stop the bus and wait until its connections are closed; idempotent."""
        self._closed = True
        self._broadcaster.close()
        self._cancel_scope.cancel()
        if self._serving:
            await self._stopped.wait()
        else:
            await trio.lowlevel.checkpoint()

    async def publish(self, event: Event) -> None:
        payload = encode_event(event)
        await self._call(
            "XADD",
            self._redis().xadd(
                self._stream,
                {_PAYLOAD: payload},
                trim_strategy=PureToken.MAXLEN,
                threshold=self._max_length,
                trim_operator=PureToken.APPROXIMATELY,
            ),
        )

    @asynccontextmanager
    async def subscribe(
        self,
        *,
        types: EventTypes | None = None,
        buffer_size: int = DEFAULT_SUBSCRIBER_BUFFER,
    ) -> AsyncIterator[Subscription]:
        event_type_filter(types)
        nursery = self._running_nursery()
        async with self._reader_lock:
            if not self._reader_running:
                await nursery.start(self._read_broadcasts)
                self._reader_running = True
        with self._broadcaster.subscription(types, buffer_size) as subscription:
            yield subscription

    @asynccontextmanager
    async def consume(
        self, group: str, *, types: EventTypes | None = None
    ) -> AsyncIterator[Consumer]:
        check_group_name(group)
        type_filter = event_type_filter(types)
        self._running_nursery()
        await self._create_group(group, start=b"$")
        consumer = _RedisConsumer(self, group, type_filter)
        self._consumers.add(consumer)
        try:
            yield consumer
        finally:
            self._consumers.discard(consumer)
            # Shielded so a cancelled consumer still hands its events back
            # promptly; bounded so a dead Redis cannot hold up the exit.
            with trio.move_on_after(2 * self._op_timeout, shield=True):
                await consumer.close()

    def read_health(self) -> BusReadHealth | None:
        """Broadcast and consumer reads, which retry on their own after a failure.

        A read that hangs instead of failing is noticed within ``op_timeout``
        (plus the block time), when its deadline fails it.
        """
        if self._reads_ok_since is None:
            return None
        return BusReadHealth(since=self._reads_ok_since, last=self._last_read_ok)

    # -- plumbing ------------------------------------------------------------

    def _read_succeeded(self) -> None:
        now = trio.current_time()
        if self._reads_ok_since is None:
            self._reads_ok_since = now
        self._last_read_ok = now

    def _read_failed(self) -> None:
        self._reads_ok_since = None

    def _running_nursery(self) -> trio.Nursery:
        self._redis()
        if self._nursery is None:
            raise EventBusError("event bus is not running: start its serve() first")
        return self._nursery

    def _redis(self) -> coredis.Redis[bytes]:
        if self._closed:
            raise trio.ClosedResourceError("event bus is closed")
        if self._client is None:
            raise EventBusError("event bus is not running: start its serve() first")
        return self._client

    async def _call(self, what: str, request: Awaitable[T], *, blocking_for: float = 0.0) -> T:
        """Await one Redis command under a deadline; failures become :class:`EventBusError`."""
        deadline = self._op_timeout + blocking_for
        try:
            with trio.fail_after(deadline):
                return await request
        except trio.TooSlowError:
            raise EventBusError(f"Redis did not answer {what} within {deadline:g} s") from None
        except RedisError as exc:
            raise EventBusError(f"Redis {what} failed: {exc}") from exc
        except (RuntimeError, anyio.ClosedResourceError, anyio.BrokenResourceError) as exc:
            # coredis refuses commands, or fails those in flight, once its pool
            # shuts down with the bus.
            if self._closed:
                raise trio.ClosedResourceError("event bus is closed") from exc
            if isinstance(exc, RuntimeError):
                raise
            raise EventBusError(f"Redis {what} failed: connection closed") from exc

    async def _create_group(self, group: str, *, start: bytes) -> None:
        try:
            await self._call(
                "XGROUP CREATE",
                self._redis().xgroup_create(self._stream, group, identifier=start, mkstream=True),
            )
        except EventBusError as exc:
            if not isinstance(exc.__cause__, StreamDuplicateConsumerGroupError):
                raise

    def _decode_entry(self, entry: StreamEntry) -> Event | None:
        entry_id = _as_bytes(entry.identifier).decode()
        payload = entry.field_values.get(_PAYLOAD)
        if not isinstance(payload, bytes):
            log.warning("skipped entry %s of %s: it has no event payload", entry_id, self._stream)
            return None
        try:
            return decode_event(payload)
        except InvalidEvent as exc:
            log.warning("skipped entry %s of %s: %s", entry_id, self._stream, exc)
            return None

    async def _read_broadcasts(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        newest = await self._call(
            "XREVRANGE", self._redis().xrevrange(self._stream, "+", "-", count=1)
        )
        last_id = _as_bytes(newest[0].identifier) if newest else _FIRST_ID
        task_status.started()
        block_ms = max(1, int(self._poll_interval * 1000))
        backoff = _Backoff()
        while True:
            try:
                reply = await self._call(
                    "XREAD",
                    self._redis().xread(
                        {self._stream: last_id}, count=_BROADCAST_BATCH, block=block_ms
                    ),
                    blocking_for=self._poll_interval,
                )
            except trio.ClosedResourceError:
                return
            except EventBusError as exc:
                self._read_failed()
                await backoff.wait("broadcast read", exc)
                continue
            self._read_succeeded()
            backoff.reset()
            for entries in (reply or {}).values():
                for entry in entries:
                    last_id = _as_bytes(entry.identifier)
                    event = self._decode_entry(entry)
                    if event is not None:
                        self._broadcaster.deliver(event)

    async def _maintain_claims(self) -> None:
        """Keep live consumers' claims fresh and clear out consumer names left by crashes."""
        last_sweep = trio.current_time()
        while True:
            await trio.sleep(self._claim_idle / 3)
            for consumer in list(self._consumers):
                await consumer.refresh_claims()
            if trio.current_time() - last_sweep >= self._consumer_expiry / 2:
                last_sweep = trio.current_time()
                for group in {consumer.group for consumer in self._consumers}:
                    await self._retire(group, idle=self._consumer_expiry, only="")

    async def _retire(self, group: str, *, idle: float, only: str) -> None:
        try:
            await self._call(
                "consumer cleanup",
                _RETIRE_CONSUMERS(
                    keys=[self._stream], args=[group, int(idle * 1000), only], client=self._redis()
                ),
            )
        except (EventBusError, trio.ClosedResourceError) as exc:
            log.info("could not clean up consumers of group %r: %s", group, exc)


class _RedisConsumer(Consumer):
    def __init__(
        self, bus: RedisEventBus, group: str, types: tuple[type[Event], ...] | None
    ) -> None:
        self._bus = bus
        self.group = group
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._types = types
        # Entries handed out and not yet acknowledged; a dict keeps their order.
        self._unacked: dict[bytes, None] = {}
        self._claims_lock = trio.Lock()
        self._scan_cursor = _FIRST_ID
        # Scan at once: a new consumer first adopts what crashed ones left.
        self._next_scan = trio.current_time()
        self._backoff = _Backoff()
        self._closed = False

    async def receive(self) -> Delivery:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._closed:
                raise trio.ClosedResourceError("consumer is closed")
            try:
                entry = None
                if trio.current_time() >= self._next_scan:
                    entry = await self._take_over_one()
                if entry is None:
                    entry = await self._read_one()
            except trio.ClosedResourceError:
                raise trio.EndOfChannel from None
            except EventBusError as exc:
                if self._bus._closed:
                    raise trio.EndOfChannel from None
                self._bus._read_failed()
                if _is_missing_group(exc):
                    # The stream was deleted under us: recreate the group and
                    # read the new stream from its start.
                    await self._recreate_group()
                else:
                    await self._backoff.wait(f"consumer {self.name} read", exc)
                continue
            self._bus._read_succeeded()
            self._backoff.reset()
            if entry is None:
                continue
            entry_id = _as_bytes(entry.identifier)
            event = self._bus._decode_entry(entry)
            if event is None or not wanted(event, self._types):
                await self._discard(entry_id)
                continue
            self._unacked[entry_id] = None
            return Delivery(event, functools.partial(self._ack, entry_id))

    async def _take_over_one(self) -> StreamEntry | None:
        bus = self._bus
        while True:
            reply = await bus._call(
                "XAUTOCLAIM",
                bus._redis().xautoclaim(
                    bus._stream,
                    self.group,
                    self.name,
                    int(bus._claim_idle * 1000),
                    self._scan_cursor,
                    count=1,
                ),
            )
            self._scan_cursor = _as_bytes(reply[0])
            for entry in reply[1]:
                if isinstance(entry, StreamEntry):
                    return entry
            if self._scan_cursor == _FIRST_ID:
                self._next_scan = trio.current_time() + bus._poll_interval
                return None

    async def _read_one(self) -> StreamEntry | None:
        bus = self._bus
        wait = min(bus._poll_interval, max(0.0, self._next_scan - trio.current_time()))
        block_ms = max(1, int(wait * 1000))
        reply = await bus._call(
            "XREADGROUP",
            bus._redis().xreadgroup(
                self.group, self.name, {bus._stream: b">"}, count=1, block=block_ms
            ),
            blocking_for=wait,
        )
        for entries in (reply or {}).values():
            for entry in entries:
                return entry
        return None

    async def _recreate_group(self) -> None:
        try:
            await self._bus._create_group(self.group, start=_FIRST_ID)
        except trio.ClosedResourceError:
            raise trio.EndOfChannel from None
        except EventBusError as exc:
            await self._backoff.wait(f"recreating consumer group {self.group!r}", exc)

    async def _discard(self, entry_id: bytes) -> None:
        bus = self._bus
        try:
            await bus._call("XACK", bus._redis().xack(bus._stream, self.group, [entry_id]))
        except (EventBusError, trio.ClosedResourceError) as exc:
            # Left pending, the entry comes back after claim_idle and is skipped again.
            log.info("could not acknowledge skipped entry %s: %s", entry_id.decode(), exc)

    async def _ack(self, entry_id: bytes) -> None:
        if self._closed:
            raise trio.ClosedResourceError(
                "consumer closed before the ack; the event was given back"
            )
        # Stop refreshing first: if the ack fails, the entry goes to another
        # consumer after claim_idle instead of staying claimed forever.
        self._unacked.pop(entry_id, None)
        bus = self._bus
        await bus._call("XACK", bus._redis().xack(bus._stream, self.group, [entry_id]))

    async def refresh_claims(self) -> None:
        """Reset the idle time of this consumer's unacknowledged entries."""
        async with self._claims_lock:
            if self._unacked and not self._closed:
                await self._set_idle(list(self._unacked), 0)

    async def close(self) -> None:
        """Give unacknowledged entries back to the group and retire the consumer name."""
        self._closed = True
        async with self._claims_lock:
            given_back = list(self._unacked)
            self._unacked.clear()
            if given_back:
                await self._set_idle(given_back, int(self._bus._claim_idle * 1000))
        await self._bus._retire(self.group, idle=0, only=self.name)

    async def _set_idle(self, entry_ids: list[bytes], idle_ms: int) -> None:
        bus = self._bus
        try:
            await bus._call(
                "claim refresh",
                _REFRESH_CLAIMS(
                    keys=[bus._stream],
                    args=[self.group, self.name, idle_ms, *entry_ids],
                    client=bus._redis(),
                ),
            )
        except trio.ClosedResourceError:
            # The bus is gone with its connection: the claims lapse after claim_idle.
            pass
        except EventBusError as exc:
            log.warning("could not refresh claims of consumer %s: %s", self.name, exc)
