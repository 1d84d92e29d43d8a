"""The idle checker: ends sessions the rules of :mod:`bai.manager.idle.rules` say have run out.

Every manager runs one :class:`IdleChecker`.  Each pass (every
:data:`CHECK_INTERVAL` seconds) reads the shared config's idle settings and
every RUNNING session with its keypair's policy in one read transaction,
adds the app proxies' record of app traffic (*app_use*) and a utilization
sample of each session from its kernels' live statistics (*kernel_stats*,
kept per session for the utilization window), judges them, and ends those
that ran out through the registry's
termination, with the checker's reason (``idle-timeout``,
``idle-session-lifetime``).

Guarantees:

* A session is ended by one manager only: the termination claims it by
  moving it to TERMINATING under a row lock, and a manager that loses that
  race (the session is already terminating, or gone) skips it.
* A pass never holds a transaction while it terminates; terminations run
  concurrently, at most :data:`MAX_CONCURRENT_TERMINATIONS` at once, and a
  failing one is logged and retried at the next pass.
* A shared-config value that cannot be meant is logged and the pass uses
  the defaults, so a typo never stops idle reclaim.

:meth:`IdleChecker.reports` answers ``idle_checks`` of given sessions from
the same rules at the time of the call.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
import trio

from bai.common.errors import InvalidValue
from bai.common.types import (
    RUNNING_STATUSES,
    InvalidTransition,
    KernelStatus,
    SessionId,
    SessionTypes,
)
from bai.manager.db import Connection, Database
from bai.manager.idle.rules import (
    ENABLED_KEY,
    THRESHOLD_KEY,
    Checker,
    IdleSettings,
    SessionUse,
    judge,
    reports_json,
    settings_from,
    utilization_starts,
    utilization_window,
)
from bai.manager.idle.utilization import (
    UTILIZATION_PREFIX,
    UtilizationSeries,
    current_utilization,
)
from bai.manager.models.base import utcnow
from bai.manager.models.identity import keypair_resource_policies, keypairs
from bai.manager.models.session import kernels, sessions
from bai.manager.models.shared_config import get_config, get_config_tree
from bai.manager.sessions.errors import SessionBusy, SessionNotFound

__all__ = ["CHECK_INTERVAL", "MAX_CONCURRENT_TERMINATIONS", "IdleChecker"]

log = logging.getLogger(__name__)

#: Seconds between two passes (the original's default).
CHECK_INTERVAL: Final = 15.0
#: Sessions one pass terminates at the same time.
MAX_CONCURRENT_TERMINATIONS: Final = 8
_RUNNING_KERNEL: Final = frozenset({KernelStatus.RUNNING, KernelStatus.RUNNING_DEGRADED})

#: Ends one session with a reason; the registry's ``destroy_session``.
Terminate = Callable[[SessionId, str], Awaitable[object]]
#: When each session's apps last carried traffic through an app proxy
#: (:func:`bai.manager.appproxy.app_last_use`).
AppUse = Callable[[], Awaitable[Mapping[uuid.UUID, datetime]]]


#: The live statistics of the given kernels that have some
#: (:meth:`bai.manager.livestats.LiveStats.kernels`).
KernelStats = Callable[[Iterable[uuid.UUID]], Mapping[str, Mapping[str, Any]]]


async def _no_apps() -> Mapping[uuid.UUID, datetime]:
    return {}


def _no_stats(kernel_ids: Iterable[uuid.UUID]) -> Mapping[str, Mapping[str, Any]]:
    return {}


class IdleChecker:
    """Idle reclaim of one manager (module docs)."""

    def __init__(
        self,
        db: Database,
        terminate: Terminate,
        *,
        app_use: AppUse = _no_apps,
        kernel_stats: KernelStats = _no_stats,
        interval: float = CHECK_INTERVAL,
    ) -> None:
        self._db = db
        self._terminate = terminate
        self._app_use = app_use
        self._kernel_stats = kernel_stats
        self.interval = interval
        # Each RUNNING session's utilization samples, taken at each pass.
        self._series: dict[SessionId, UtilizationSeries] = {}

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run a pass every :attr:`interval` seconds until cancelled."""
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            try:
                await self.check_once()
            except Exception:
                log.exception("an idle check pass failed")

    async def check_once(self) -> dict[SessionId, str]:
        """One pass; returns the sessions this manager ended, with their reasons."""
        settings, uses = await self._read()
        now = utcnow()
        self._sample(settings, uses, now)
        due: dict[SessionId, str] = {}
        for session_id, use in uses.items():
            _, reason = judge(use, settings, now, self._averages(session_id, use, settings, now))
            if reason is not None:
                due[session_id] = reason
        ended: dict[SessionId, str] = {}
        limiter = trio.CapacityLimiter(MAX_CONCURRENT_TERMINATIONS)
        async with trio.open_nursery() as nursery:
            for session_id, reason in due.items():
                nursery.start_soon(self._end, session_id, reason, limiter, ended)
        return ended

    async def reports(self, session_ids: Iterable[SessionId]) -> dict[SessionId, dict[str, Any]]:
        """``idle_checks`` of each given RUNNING session (others are left out)."""
        settings, uses = await self._read(list(session_ids))
        now = utcnow()
        return {
            sid: reports_json(judge(use, settings, now, self._averages(sid, use, settings, now))[0])
            for sid, use in uses.items()
        }

    def _sample(
        self, settings: IdleSettings, uses: Mapping[SessionId, SessionUse], now: datetime
    ) -> None:
        """Add each judged session's utilization now to its series; drop ended sessions'."""
        self._series = {sid: series for sid, series in self._series.items() if sid in uses}
        metrics = list(settings.utilization.thresholds)
        for session_id, use in uses.items():
            window = utilization_window(use, settings)
            if window <= 0 or now < utilization_starts(use, settings):
                continue
            stats = self._kernel_stats(use.kernel_ids)
            sample = current_utilization(list(stats.values()), use.occupied, metrics)
            if sample:
                series = self._series.setdefault(session_id, UtilizationSeries())
                series.add(now, sample, keep=window)

    def _averages(
        self, session_id: SessionId, use: SessionUse, settings: IdleSettings, now: datetime
    ) -> Mapping[str, float] | None:
        series = self._series.get(session_id)
        window = utilization_window(use, settings)
        if series is None or window <= 0:
            return None
        return series.averages(now, window)

    async def _read(
        self, only: list[SessionId] | None = None
    ) -> tuple[IdleSettings, dict[SessionId, SessionUse]]:
        settings, uses = await self._db.transaction(lambda conn: _read_all(conn, only))
        if Checker.NETWORK_TIMEOUT in settings.enabled and uses:
            # App traffic through a proxy never passes the manager: ask the proxies.
            for session_id, when in (await self._app_use()).items():
                use = uses.get(SessionId(session_id))
                if use is not None and (use.last_access is None or use.last_access < when):
                    uses[SessionId(session_id)] = dataclasses.replace(use, last_access=when)
        return settings, uses

    async def _end(
        self,
        session_id: SessionId,
        reason: str,
        limiter: trio.CapacityLimiter,
        ended: dict[SessionId, str],
    ) -> None:
        async with limiter:
            try:
                await self._terminate(session_id, reason)
            except (SessionBusy, SessionNotFound, InvalidTransition):
                # Another manager (or the user) is ending it already.
                return
            except Exception:
                log.exception("could not end idle session %s (%s)", session_id, reason)
                return
        log.info("ended session %s: %s", session_id, reason)
        ended[session_id] = reason


async def _settings(conn: Connection) -> IdleSettings:
    enabled = await get_config(conn, ENABLED_KEY)
    threshold = await get_config(conn, THRESHOLD_KEY)
    utilization = await get_config_tree(conn, UTILIZATION_PREFIX)
    try:
        return settings_from(enabled, threshold, utilization)
    except InvalidValue as exc:
        log.warning("idle settings ignored, using the defaults: %s", exc)
        return IdleSettings()


async def _read_all(
    conn: Connection, only: list[SessionId] | None = None
) -> tuple[IdleSettings, dict[SessionId, SessionUse]]:
    settings = await _settings(conn)
    query = (
        sa.select(
            sessions.c.id,
            sessions.c.session_type,
            sessions.c.created_at,
            sessions.c.status_changed,
            sessions.c.last_access,
            sessions.c.occupying_slots,
            keypair_resource_policies.c.idle_timeout,
            keypair_resource_policies.c.max_session_lifetime,
        )
        .select_from(
            sessions.join(keypairs, keypairs.c.access_key == sessions.c.access_key).join(
                keypair_resource_policies,
                keypair_resource_policies.c.name == keypairs.c.resource_policy,
            )
        )
        .where(sessions.c.status.in_(sorted(RUNNING_STATUSES)))
    )
    if only is not None:
        query = query.where(sessions.c.id.in_(only))
    rows = list(await conn.execute(query))
    kernel_ids: dict[uuid.UUID, list[uuid.UUID]] = {}
    if rows:
        running = await conn.execute(
            sa.select(kernels.c.id, kernels.c.session_id).where(
                kernels.c.session_id.in_([row.id for row in rows]),
                kernels.c.status.in_(sorted(_RUNNING_KERNEL)),
            )
        )
        for kernel in running:
            kernel_ids.setdefault(kernel.session_id, []).append(kernel.id)
    uses: dict[SessionId, SessionUse] = {}
    for row in rows:
        uses[SessionId(row.id)] = SessionUse(
            session_type=SessionTypes(row.session_type),
            created_at=row.created_at,
            running_since=row.status_changed,
            last_access=row.last_access,
            idle_timeout=float(row.idle_timeout),
            max_session_lifetime=float(row.max_session_lifetime),
            occupied=dict(row.occupying_slots or {}),
            kernel_ids=tuple(kernel_ids.get(row.id, ())),
        )
    return settings, uses
