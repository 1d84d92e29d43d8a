"""Session callbacks: each lifecycle event of a session POSTed to its ``callback_url``.

A session created with ``callback_url`` gets, for every session event
(``session_enqueued`` ... ``session_terminated``), a ``POST`` of the
original's JSON body::

    {"type": "session_lifecycle", "event": "started",
     "session_id": "…", "when": "2026-12-08T12:00:00+00:00"}

:class:`SessionCallbacks` follows the session events in an anycast group,
so one manager delivers each event.

Guarantees:

* Delivery never delays the session: events are queued per session and
  sent by background tasks; the session's own transitions never wait.
* One session's events go out one at a time, in the order this manager
  received them; different sessions' receivers do not wait on each other.
* Each event is tried up to :data:`ATTEMPTS` times, each try bounded by
  :data:`TRY_TIMEOUT` seconds, with growing pauses between; a 2xx answer
  ends it.  Redirects are not followed (a receiver must answer itself) and
  an answer's body is not read beyond :data:`MAX_ANSWER_BYTES`.  Failures
  are logged, never raised.
* At most :data:`MAX_PENDING` events wait across all sessions; beyond that
  the oldest event of the session being added to is dropped with a
  warning, so a dead receiver cannot grow the manager's memory.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict, deque
from datetime import datetime
from typing import Any, Final

import httpx
import sqlalchemy as sa
import trio

from bai.common.events import (
    EventBus,
    EventBusError,
    SessionCancelled,
    SessionEvent,
    SessionTerminated,
)
from bai.manager.db import Database
from bai.manager.models.base import utcnow
from bai.manager.models.session import sessions

__all__ = ["ATTEMPTS", "MAX_ANSWER_BYTES", "MAX_PENDING", "TRY_TIMEOUT", "SessionCallbacks"]

log = logging.getLogger(__name__)

#: Tries per event, the seconds one try may take, and the pause before the first retry.
ATTEMPTS: Final = 3
TRY_TIMEOUT: Final = 10.0
FIRST_PAUSE: Final = 1.0
#: Bytes of a receiver's answer read at most.
MAX_ANSWER_BYTES: Final = 64 * 1024
#: Events waiting for delivery across all sessions.
MAX_PENDING: Final = 10_000
#: Sessions whose callback URL (or its absence) is remembered.
_URL_CACHE: Final = 4096


def callback_body(event: SessionEvent, when: datetime) -> dict[str, Any]:
    """The JSON body POSTed for *event* (the original's shape)."""
    return {
        "type": "session_lifecycle",
        "event": event.name.removeprefix("session_"),
        "session_id": str(event.session_id),
        "when": when.isoformat(),
    }


class SessionCallbacks:
    """Delivers session events to the sessions' callback URLs (module docs)."""

    GROUP: Final = "manager.session-callbacks"

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        first_pause: float = FIRST_PAUSE,
    ) -> None:
        self._db = db
        self._bus = bus
        self._transport = transport
        self._first_pause = first_pause
        self._urls: OrderedDict[uuid.UUID, str | None] = OrderedDict()
        self._queues: dict[uuid.UUID, deque[dict[str, Any]]] = {}
        self._pending = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; report started once it follows the events."""
        async with (
            httpx.AsyncClient(
                timeout=TRY_TIMEOUT, transport=self._transport, follow_redirects=False
            ) as client,
            trio.open_nursery() as nursery,
            self._bus.consume(self.GROUP, types=(SessionEvent,)) as consumer,
        ):
            task_status.started()
            async for delivery in consumer:
                event = delivery.event
                assert isinstance(event, SessionEvent)
                try:
                    await self._enqueue(event, nursery, client)
                except Exception:
                    log.exception("could not queue the callback of %s", event.name)
                try:
                    await delivery.ack()
                except trio.ClosedResourceError:
                    return
                except EventBusError as exc:
                    # Delivered again later: a receiver may see the event twice.
                    log.warning("could not acknowledge %s: %s", event.name, exc)

    async def _url_of(self, session_id: uuid.UUID) -> str | None:
        if session_id in self._urls:
            self._urls.move_to_end(session_id)
            return self._urls[session_id]
        async with self._db.begin_readonly() as conn:
            url = (
                await conn.execute(
                    sa.select(sessions.c.callback_url).where(sessions.c.id == session_id)
                )
            ).scalar()
        self._urls[session_id] = url if isinstance(url, str) and url else None
        while len(self._urls) > _URL_CACHE:
            self._urls.popitem(last=False)
        return self._urls[session_id]

    async def _enqueue(
        self, event: SessionEvent, nursery: trio.Nursery, client: httpx.AsyncClient
    ) -> None:
        session_id = event.session_id
        url = await self._url_of(session_id)
        if isinstance(event, SessionTerminated | SessionCancelled):
            # The session's last event: nothing more will ask for its URL.
            self._urls.pop(session_id, None)
        if url is None:
            return
        body = callback_body(event, utcnow())
        queue = self._queues.get(session_id)
        if queue is None:
            queue = self._queues[session_id] = deque()
            nursery.start_soon(self._deliver_all, session_id, url, queue, client)
        if self._pending >= MAX_PENDING and queue:
            dropped = queue.popleft()
            self._pending -= 1
            log.warning("dropped the %s callback of session %s", dropped["event"], session_id)
        queue.append(body)
        self._pending += 1

    async def _deliver_all(
        self,
        session_id: uuid.UUID,
        url: str,
        queue: deque[dict[str, Any]],
        client: httpx.AsyncClient,
    ) -> None:
        try:
            while queue:
                body = queue[0]
                await self._deliver(url, body, client)
                # Dropping may have taken this entry away meanwhile.
                if queue and queue[0] is body:
                    queue.popleft()
                    self._pending -= 1
        finally:
            self._pending -= len(queue)
            self._queues.pop(session_id, None)

    async def _deliver(self, url: str, body: dict[str, Any], client: httpx.AsyncClient) -> None:
        pause = self._first_pause
        for attempt in range(1, ATTEMPTS + 1):
            problem = await self._try(url, body, client)
            if problem is None:
                return
            if attempt < ATTEMPTS:
                log.info("callback %s to %s failed (%s); retrying", body["event"], url, problem)
                await trio.sleep(pause)
                pause *= 2
            else:
                log.warning(
                    "callback %s of session %s to %s failed %d times: %s",
                    body["event"],
                    body["session_id"],
                    url,
                    ATTEMPTS,
                    problem,
                )

    async def _try(self, url: str, body: dict[str, Any], client: httpx.AsyncClient) -> str | None:
        """One POST; None on a 2xx answer, else what went wrong."""
        try:
            with trio.fail_after(TRY_TIMEOUT):
                async with client.stream("POST", url, json=body) as response:
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read >= MAX_ANSWER_BYTES:
                            break
        except trio.TooSlowError:
            return f"no answer within {TRY_TIMEOUT:g} s"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if not 200 <= response.status_code < 300:
            return f"answered {response.status_code}"
        return None
