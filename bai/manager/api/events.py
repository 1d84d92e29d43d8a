"""``/events``: session lifecycle and background-task progress as Server-Sent Events.

``GET /events/session`` streams the events of the sessions the caller may
see, each as ``event: <name>`` and ``data: <JSON>``:

* scope ``session`` (part of the default ``*``): ``session_enqueued``,
  ``session_scheduled``, ``session_preparing``, ``session_pulling``,
  ``session_creating``, ``session_started``, ``session_terminating``,
  ``session_terminated``, ``session_success``, ``session_failure``,
  ``session_cancelled``, with ``{"sessionId", "sessionName",
  "ownerAccessKey", "reason"}``, plus ``result`` on ``session_terminated`` and
  ``exitCode`` where the event has one.  A session that fails before it
  runs sends ``session_cancelled`` with the reason (``bootstrap-failed``,
  ``failed-to-start``, ...); one that fails while running sends
  ``session_failure`` at once and ``session_terminated`` once destroyed;
* scope ``kernel``: ``kernel_preparing`` ... ``kernel_terminated`` and
  ``kernel_cancelled`` with the same keys plus ``kernelId``, once per kernel.

Query parameters: ``sessionId`` (one session), ``name`` (or ``sessionName``;
``*`` for all) matched with the owner's access key, ``group`` (a project
name of the caller's domain, ``*`` for all), ``scope`` (``*``, ``session``,
``kernel`` or ``session,kernel``), and ``ownerAccessKey`` (or
``owner_access_key``) to follow one keypair's sessions only (admins may name
others' keypairs).

Who sees what: a superadmin every session, a domain admin the sessions of
the domain, a user the sessions of any of the user's keypairs.  Events are
filtered on the session's row (read once per session and stream), so a
stream never shows a session the caller could not ``GET``.

``GET /events/background-task?task_id=`` streams ``task_updated`` (with
``current_progress`` and ``total_progress``), then one of ``task_done``,
``task_failed`` or ``task_cancelled``, each with ``{"task_id", "message",
"current_progress", "total_progress"}``, then ``server_close`` and the end of
the stream.  A stream opened after the task ended on this manager gets the
final event at once (outcomes are kept for a day, see
:mod:`bai.manager.bgtask`).

Both streams subscribe to the event bus before the response head is sent,
so a client that has the head misses no later event.  They send a comment
every :data:`KEEPALIVE_INTERVAL` seconds while idle, and end (the client may
reconnect) if the bus closes or the stream falls too far behind; the
subscription ends with the response, however it ends.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import sqlalchemy as sa
import trio
from quart import Blueprint, Response, current_app, request

from bai.common.events import (
    BgtaskCancelled,
    BgtaskDone,
    BgtaskEvent,
    BgtaskFailed,
    BgtaskUpdated,
    Event,
    EventBus,
    KernelEvent,
    SessionEvent,
    SessionTerminated,
    SubscriberOverflow,
    Subscription,
)
from bai.manager.api.auth import AuthContext, auth_required, current_auth, resolve_owner
from bai.manager.api.errors import NotFound
from bai.manager.api.helpers import InvalidParameter, current_ctx, read_query
from bai.manager.db import Database
from bai.manager.models.identity import groups
from bai.manager.models.session import sessions

__all__ = ["KEEPALIVE_INTERVAL", "SessionFilter", "blueprint", "format_sse"]

blueprint = Blueprint("events", __name__, url_prefix="/events")

#: Seconds between keep-alive comments on an idle stream.
KEEPALIVE_INTERVAL: Final = 15.0
#: Events a stream may fall behind by before it is cut off.
STREAM_BUFFER: Final = 4096
#: Sessions whose rows one stream remembers.
_META_CACHE: Final = 4096
_SCOPES: Final = frozenset({"session", "kernel"})
_BGTASK_NAMES: Final[dict[type[BgtaskEvent], str]] = {
    BgtaskUpdated: "task_updated",
    BgtaskDone: "task_done",
    BgtaskFailed: "task_failed",
    BgtaskCancelled: "task_cancelled",
}


def format_sse(event: str, data: Mapping[str, Any]) -> bytes:
    """One ``text/event-stream`` message (the JSON has no raw line breaks)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _subscribed(body: AsyncGenerator[bytes]) -> AsyncGenerator[bytes]:
    """*body*, run up to its subscription: it must first yield once it has subscribed.

    So the subscription is open before the response head goes out, and
    Quart's closing of the body (however the response ends) ends it.
    """
    await body.__anext__()
    return body


def _event_stream(body: AsyncGenerator[bytes]) -> Response:
    response: Response = current_app.response_class(
        body, status=200, content_type="text/event-stream"
    )
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    # The stream lasts as long as the client wants it.
    response.timeout = None
    return response


async def _events(subscription: Subscription) -> AsyncGenerator[Event | None]:
    """The subscription's events, ``None`` after each :data:`KEEPALIVE_INTERVAL` idle
    seconds; ends when the bus closes or the subscription fell behind."""
    while True:
        event: Event | None = None
        with trio.move_on_after(KEEPALIVE_INTERVAL):
            try:
                event = await subscription.receive()
            except (trio.EndOfChannel, SubscriberOverflow):
                return
        yield event


# ----------------------------------------------------------------- sessions


@dataclass(frozen=True, slots=True)
class _SessionRow:
    name: str
    access_key: str
    user_id: uuid.UUID
    domain_name: str
    group_id: uuid.UUID


@dataclass
class SessionFilter:
    """Which session events one stream shows (module docs); built from the request."""

    auth: AuthContext
    scopes: frozenset[str]
    session_id: uuid.UUID | None = None
    name: str | None = None
    group_id: uuid.UUID | None = None
    owner_only: bool = False
    _rows: dict[uuid.UUID, _SessionRow | None] = field(default_factory=dict)

    def types(self) -> tuple[type[Event], ...]:
        """The event classes the stream subscribes to."""
        wanted: list[type[Event]] = []
        if "session" in self.scopes:
            wanted.append(SessionEvent)
        if "kernel" in self.scopes:
            wanted.append(KernelEvent)
        return tuple(wanted)

    def visible(self, row: _SessionRow) -> bool:
        """Whether the caller may see a session of *row* and asked for it."""
        auth = self.auth
        if not auth.is_superadmin:
            if row.domain_name != auth.domain_name:
                return False
            if not auth.is_admin and row.user_id != auth.user_id:
                return False
        if self.owner_only and row.access_key != auth.owner.access_key:
            return False
        return self.group_id is None or row.group_id == self.group_id

    async def row(self, db: Database, session_id: uuid.UUID) -> _SessionRow | None:
        """The session's row (``None`` if there is none), read once per stream."""
        if session_id in self._rows:
            return self._rows[session_id]
        found = (
            await db.fetch(
                sa.select(
                    sessions.c.name,
                    sessions.c.access_key,
                    sessions.c.user_uuid,
                    sessions.c.domain_name,
                    sessions.c.group_id,
                ).where(sessions.c.id == session_id)
            )
        ).first()
        row = (
            None
            if found is None
            else _SessionRow(
                found.name, found.access_key, found.user_uuid, found.domain_name, found.group_id
            )
        )
        if len(self._rows) >= _META_CACHE:
            del self._rows[next(iter(self._rows))]
        self._rows[session_id] = row
        return row

    async def message(self, db: Database, event: Event) -> bytes | None:
        """The SSE message for *event*, or ``None`` when this stream does not show it."""
        if not isinstance(event, SessionEvent | KernelEvent):
            return None
        if self.session_id is not None and event.session_id != self.session_id:
            return None
        row = await self.row(db, event.session_id)
        if row is None or not self.visible(row):
            return None
        name = event.session_name if isinstance(event, SessionEvent) else ""
        name = name or row.name
        if self.name is not None and not (
            name == self.name and row.access_key == self.auth.owner.access_key
        ):
            return None
        data: dict[str, Any] = {
            "sessionId": str(event.session_id),
            "sessionName": name,
            "ownerAccessKey": row.access_key,
            "reason": event.reason,
        }
        if isinstance(event, KernelEvent):
            data["kernelId"] = str(event.kernel_id)
        if isinstance(event, SessionTerminated):
            data["result"] = event.result
        exit_code = getattr(event, "exit_code", None)
        if exit_code is not None:
            data["exitCode"] = exit_code
        return format_sse(event.name, data)


class _SessionEventsQuery(msgspec.Struct, kw_only=True):
    name: str | None = None
    session_name: str | None = msgspec.field(default=None, name="sessionName")
    session_id: str | None = msgspec.field(default=None, name="sessionId")
    owner_access_key: str | None = msgspec.field(default=None, name="ownerAccessKey")
    group: str = "*"
    scope: str = "*"


def _scopes(text: str) -> frozenset[str]:
    if text.strip() == "*":
        return _SCOPES
    parts = frozenset(part.strip() for part in text.split(","))
    if not parts or not parts <= _SCOPES:
        raise InvalidParameter("must be *, session, kernel or session,kernel", field="scope")
    return parts


async def _group_id(db: Database, auth: AuthContext, name: str) -> uuid.UUID | None:
    if name == "*":
        return None
    found = await db.fetch(
        sa.select(groups.c.id).where(
            groups.c.name == name, groups.c.domain_name == auth.owner.domain_name
        )
    )
    group_id: uuid.UUID | None = found.scalar()
    if group_id is None:
        raise NotFound(f"no project is called {name!r} in domain {auth.owner.domain_name!r}")
    return group_id


async def _session_filter() -> SessionFilter:
    params = read_query(_SessionEventsQuery)
    caller = current_auth()
    auth = await resolve_owner(caller, params.owner_access_key, field="ownerAccessKey")
    session_id: uuid.UUID | None = None
    if params.session_id is not None:
        try:
            session_id = uuid.UUID(params.session_id)
        except ValueError:
            raise InvalidParameter(
                "must be a session UUID", field="sessionId", value=params.session_id
            ) from None
    name = params.name if params.name is not None else params.session_name
    return SessionFilter(
        auth=auth,
        scopes=_scopes(params.scope),
        session_id=session_id,
        name=None if name in (None, "*") else name,
        group_id=await _group_id(current_ctx().db, auth, params.group),
        owner_only=params.owner_access_key is not None or "owner_access_key" in request.args,
    )


async def _session_messages(
    bus: EventBus, db: Database, stream_filter: SessionFilter
) -> AsyncGenerator[bytes]:
    async with bus.subscribe(types=stream_filter.types(), buffer_size=STREAM_BUFFER) as events:
        yield b""
        async with aclosing(_events(events)) as stream:
            async for event in stream:
                if event is None:
                    yield b": keep-alive\n\n"
                    continue
                message = await stream_filter.message(db, event)
                if message is not None:
                    yield message


@blueprint.route("/session", methods=["GET"])
@auth_required
async def session_events() -> Response:
    """``GET /events/session``: the lifecycle events the caller may see (module docs)."""
    stream_filter = await _session_filter()
    ctx = current_ctx()
    body = await _subscribed(_session_messages(ctx.bus, ctx.db, stream_filter))
    return _event_stream(body)


# --------------------------------------------------------- background tasks


class _TaskQuery(msgspec.Struct, kw_only=True):
    task_id: str | None = None
    task_id_camel: str | None = msgspec.field(default=None, name="taskId")


def _task_data(event: BgtaskEvent) -> dict[str, Any]:
    return {
        "task_id": str(event.task_id),
        "message": event.message,
        "current_progress": getattr(event, "current_progress", 0),
        "total_progress": getattr(event, "total_progress", 0),
    }


async def _task_messages(
    bus: EventBus, task_id: uuid.UUID, ended: Callable[[uuid.UUID], BgtaskEvent | None]
) -> AsyncGenerator[bytes]:
    async with bus.subscribe(types=(BgtaskEvent,), buffer_size=STREAM_BUFFER) as events:
        yield b""
        # Checked once subscribed: a task that ends later is seen on the bus, one that
        # already ended here left its outcome behind (bai.manager.bgtask).
        final = ended(task_id)
        if final is not None:
            yield format_sse(_BGTASK_NAMES[type(final)], _task_data(final))
            yield format_sse("server_close", {})
            return
        async with aclosing(_events(events)) as stream:
            async for event in stream:
                if event is None:
                    yield b": keep-alive\n\n"
                    continue
                if not isinstance(event, BgtaskEvent) or event.task_id != task_id:
                    continue
                yield format_sse(_BGTASK_NAMES[type(event)], _task_data(event))
                if not isinstance(event, BgtaskUpdated):
                    yield format_sse("server_close", {})
                    return


@blueprint.route("/background-task", methods=["GET"])
@auth_required
async def background_task_events() -> Response:
    """``GET /events/background-task?task_id=``: one task's progress (module docs)."""
    params = read_query(_TaskQuery)
    raw = params.task_id if params.task_id is not None else params.task_id_camel
    if raw is None:
        raise InvalidParameter("is required", field="task_id")
    try:
        task_id = uuid.UUID(raw)
    except ValueError:
        raise InvalidParameter("must be a task UUID", field="task_id", value=raw) from None
    ctx = current_ctx()
    body = await _subscribed(_task_messages(ctx.bus, task_id, ctx.bgtasks.outcome))
    return _event_stream(body)
