"""What users do with their sessions, recorded for the idle checker and the query count.

Every execute call, terminal message and proxied chunk calls
:meth:`SessionActivity.touch` (an execute call also
:meth:`~SessionActivity.count_query`); both only mark the session in memory,
so the data paths never wait on the database.  Every :data:`ACTIVITY_FLUSH`
seconds :meth:`SessionActivity.serve` writes what was marked: the time of the
flush to ``sessions.last_access`` of each touched session and the counted
queries added to ``sessions.num_queries``, in one transaction.

Guarantees:

* A session touched at time *t* has ``last_access >= t - ACTIVITY_FLUSH``
  in the database once the next flush ends (the flush's own clock is
  written, so several managers never move it backwards: the column keeps
  the greatest value written).
* Counts and marks taken while a flush runs go to the next one; a flush
  that fails keeps them for the next try, so no counted query is lost while
  the database is down for a while.
* Stopping the service writes what is left, bounded by five seconds.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Final

import sqlalchemy as sa
import trio

from bai.common.types import SessionId
from bai.manager.db import Connection, Database
from bai.manager.models.base import utcnow
from bai.manager.models.session import sessions

__all__ = ["ACTIVITY_FLUSH", "SessionActivity"]

log = logging.getLogger(__name__)

#: Seconds between two writes of the marked activity.
ACTIVITY_FLUSH: Final = 1.0


class SessionActivity:
    """Marks of recent use per session, written to the database in batches."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._touched: set[SessionId] = set()
        self._queries: dict[SessionId, int] = {}

    def touch(self, session_id: SessionId) -> None:
        """Record that *session_id* was used now (never blocks)."""
        self._touched.add(session_id)

    def count_query(self, session_id: SessionId) -> None:
        """Record one execute call on *session_id*: a query, and a use."""
        self._queries[session_id] = self._queries.get(session_id, 0) + 1
        self._touched.add(session_id)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write the marks every :data:`ACTIVITY_FLUSH` seconds until cancelled, then once more."""
        task_status.started()
        try:
            while True:
                await trio.sleep(ACTIVITY_FLUSH)
                try:
                    await self.write()
                except Exception:
                    log.exception("could not record session activity")
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + 5.0
                await self.write()

    async def write(self) -> None:
        """Write the marks taken so far; on failure they stay for the next write."""
        touched, self._touched = self._touched, set()
        queries, self._queries = self._queries, {}
        if not touched:
            return
        now = utcnow()
        try:
            await self._db.transaction(lambda conn: _write(conn, now, touched, queries))
        except BaseException:
            self._touched |= touched
            for sid, count in queries.items():
                self._queries[sid] = self._queries.get(sid, 0) + count
            raise


async def _write(
    conn: Connection, now: datetime, touched: set[SessionId], queries: dict[SessionId, int]
) -> None:
    await conn.execute(
        sa.update(sessions)
        .where(sessions.c.id.in_(sorted(touched)))
        .where(sa.or_(sessions.c.last_access.is_(None), sessions.c.last_access < now))
        .values(last_access=now)
    )
    for sid, count in sorted(queries.items()):
        await conn.execute(
            sa.update(sessions)
            .where(sessions.c.id == sid)
            .values(num_queries=sessions.c.num_queries + count)
        )
