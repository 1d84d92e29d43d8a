"""Usage reports: what kernels held and used, per project for a period, and over 30 days.

``/resource/usage/month`` and ``/resource/usage/period`` answer
:func:`period_usage`: the kernels that lived in the period (ended ones that
overlap it, and live ones created before its end), grouped by project, in
the original's shape (``g_*`` totals and one ``c_infos`` entry per kernel:
``cpu_allocated``, ``cpu_used`` in msec, ``mem_allocated``, ``mem_used``,
``io_read``, ``io_write``, ``used_time``, ``used_days``, GPU figures,
``nfs`` (the host paths of mounted folders), status and times).  A running
kernel's figures come from its live statistics, an ended one's from the
sample its end stored.

``/resource/stats/user/month`` and ``/resource/stats/admin/month`` answer
:func:`monthly_bins`: 2,880 bins of 15 minutes over the last 30 days, each
with the number of ended kernels alive in it and what they held.

Dates are read in the configured time zone (shared config
``config/system/timezone``, an IANA name; UTC without one):
:func:`month_span` and :func:`period_span` are the pure parsing, with the
original's rules (``YYYYMM``; ``YYYYMMDD`` to ``YYYYMMDD`` inclusive, at most
100 days, the end after the start).
"""

from __future__ import annotations

import re
import uuid
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any, Final

import sqlalchemy as sa

from bai.common.errors import InvalidValue
from bai.common.livestat import stat_value
from bai.common.types import LIVE_KERNEL_STATUSES, KernelStatus
from bai.manager.db import Database
from bai.manager.models.identity import groups, users
from bai.manager.models.session import kernels, sessions
from bai.manager.models.shared_config import get_config

__all__ = [
    "BIN_COUNT",
    "BIN_SECONDS",
    "MAX_PERIOD_DAYS",
    "TIMEZONE_KEY",
    "month_span",
    "monthly_bins",
    "period_span",
    "period_usage",
    "usage_timezone",
]

#: Where the reports' time zone is configured.
TIMEZONE_KEY: Final = "config/system/timezone"
#: The longest period ``/resource/usage/period`` answers.
MAX_PERIOD_DAYS: Final = 100
#: The bins of the monthly stats: 15 minutes, 30 days.
BIN_SECONDS: Final = 900
BIN_COUNT: Final = 2880

_MONTH_RE: Final = re.compile(r"\d{6}\Z", re.ASCII)
_DAY_RE: Final = re.compile(r"\d{8}\Z", re.ASCII)
#: The live statistics of given kernels (:meth:`bai.manager.livestats.LiveStats.kernels`).
LiveSamples = Callable[[Iterable[uuid.UUID]], Mapping[str, Mapping[str, Any]]]


def month_span(month: str, zone: tzinfo) -> tuple[datetime, datetime]:
    """``[start, end)`` of the month ``YYYYMM`` in *zone*; InvalidValue naming ``month``."""
    if not _MONTH_RE.match(month):
        raise InvalidValue("must be YYYYMM", value=month, field="month")
    try:
        start = datetime.strptime(month, "%Y%m").replace(tzinfo=zone)
    except ValueError:
        raise InvalidValue("is not a month", value=month, field="month") from None
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def period_span(start_date: str, end_date: str, zone: tzinfo) -> tuple[datetime, datetime]:
    """``[start, end)`` from ``YYYYMMDD`` to ``YYYYMMDD`` inclusive in *zone* (module docs)."""
    days: list[datetime] = []
    for name, text in (("start_date", start_date), ("end_date", end_date)):
        if not _DAY_RE.match(text):
            raise InvalidValue("must be YYYYMMDD", value=text, field=name)
        try:
            days.append(datetime.strptime(text, "%Y%m%d").replace(tzinfo=zone))
        except ValueError:
            raise InvalidValue("is not a date", value=text, field=name) from None
    start, end = days[0], days[1] + timedelta(days=1)
    if end <= start:
        raise InvalidValue("must not be before start_date", value=end_date, field="end_date")
    if end - start > timedelta(days=MAX_PERIOD_DAYS):
        raise InvalidValue(
            f"must be at most {MAX_PERIOD_DAYS} days after start_date",
            value=end_date,
            field="end_date",
        )
    return start, end


async def usage_timezone(db: Database) -> tzinfo:
    """The configured time zone of the reports (UTC when unset or unknown)."""
    async with db.begin_readonly() as conn:
        name = await get_config(conn, TIMEZONE_KEY)
    if not isinstance(name, str):
        return UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return UTC


def _number(stat: Mapping[str, Any] | None, metric: str, key: str = "current") -> Decimal:
    return stat_value(stat, metric, key) or Decimal(0)


def _gpu(slots: Mapping[str, Decimal]) -> Decimal:
    return Decimal(slots.get("cuda.shares", slots.get("cuda.devices", 0)))


_ENDED = sorted({KernelStatus.TERMINATED})
_LIVE = sorted(LIVE_KERNEL_STATUSES)


async def period_usage(
    db: Database,
    start: datetime,
    end: datetime,
    zone: tzinfo,
    live: LiveSamples,
    group_ids: Sequence[uuid.UUID] | None = None,
) -> list[dict[str, Any]]:
    """Per project, the kernels that lived in ``[start, end)`` (module docs)."""
    query = (
        sa.select(
            kernels.c.id,
            kernels.c.container_id,
            kernels.c.session_id,
            kernels.c.agent,
            kernels.c.attached_devices,
            kernels.c.occupied_slots,
            kernels.c.resource_opts,
            kernels.c.image,
            kernels.c.status,
            kernels.c.status_info,
            kernels.c.status_changed,
            kernels.c.status_history,
            kernels.c.last_stat,
            kernels.c.created_at,
            kernels.c.terminated_at,
            sessions.c.name.label("session_name"),
            sessions.c.access_key,
            sessions.c.domain_name,
            sessions.c.group_id,
            sessions.c.vfolder_mounts,
            sessions.c.cluster_mode,
            groups.c.name.label("group_name"),
            users.c.email,
            users.c.full_name,
        )
        .select_from(
            kernels.join(sessions, sessions.c.id == kernels.c.session_id)
            .join(groups, groups.c.id == sessions.c.group_id)
            .join(users, users.c.uuid == sessions.c.user_uuid)
        )
        .where(
            sa.or_(
                sa.and_(
                    kernels.c.terminated_at >= start,
                    kernels.c.created_at < end,
                    kernels.c.status.in_(_ENDED),
                ),
                sa.and_(kernels.c.created_at < end, kernels.c.status.in_(_LIVE)),
            )
        )
        .order_by(kernels.c.terminated_at, kernels.c.created_at, kernels.c.id)
    )
    if group_ids:
        query = query.where(sessions.c.group_id.in_(list(group_ids)))
    async with db.begin_readonly() as conn:
        rows = list(await conn.execute(query))
    samples = live(row.id for row in rows if row.terminated_at is None)
    projects: dict[str, dict[str, Any]] = {}
    for row in rows:
        info = _kernel_usage(row, samples.get(str(row.id)) or row.last_stat, zone)
        project = projects.get(info["group_id"])
        if project is None:
            project = projects[info["group_id"]] = {
                "domain_name": row.domain_name,
                "g_id": info["group_id"],
                "g_name": row.group_name,
                **{f"g_{key}": 0 for key in _SUMMED},
                "g_device_type": [],
                "c_infos": [],
            }
        for key in _SUMMED:
            project[f"g_{key}"] += info[key]
        project["g_device_type"] = sorted(set(project["g_device_type"]) | set(info["device_type"]))
        project["c_infos"].append(info)
    return list(projects.values())


_SUMMED: Final = (
    "cpu_allocated",
    "cpu_used",
    "mem_allocated",
    "mem_used",
    "shared_memory",
    "disk_allocated",
    "disk_used",
    "io_read",
    "io_write",
    "smp",
    "gpu_mem_allocated",
    "gpu_allocated",
)


def _kernel_usage(row: Any, stat: Mapping[str, Any] | None, zone: tzinfo) -> dict[str, Any]:
    slots: Mapping[str, Decimal] = row.occupied_slots or {}
    devices = (row.attached_devices or {}).get("cuda") or []
    models = sorted(
        {d["model_name"] for d in devices if isinstance(d, dict) and d.get("model_name")}
    )
    smp = sum(int((d.get("data") or {}).get("smp", 0)) for d in devices if isinstance(d, dict))
    gpu_mem = sum(int((d.get("data") or {}).get("mem", 0)) for d in devices if isinstance(d, dict))
    ended = row.terminated_at
    used_time = used_days = None
    if ended is not None:
        used_time = str(ended - row.created_at)
        used_days = (
            ended.astimezone(zone).toordinal() - row.created_at.astimezone(zone).toordinal() + 1
        )
    mounts = row.vfolder_mounts or []
    nfs = sorted(
        {str(m.get("host_path")) for m in mounts if isinstance(m, dict) and m.get("host_path")}
    )
    return {
        "id": str(row.id),
        "session_id": str(row.session_id),
        "container_id": row.container_id,
        "domain_name": row.domain_name,
        "group_id": str(row.group_id),
        "group_name": row.group_name,
        "name": row.session_name,
        "access_key": row.access_key,
        "email": row.email,
        "full_name": row.full_name,
        "agent": row.agent,
        "cpu_allocated": float(slots.get("cpu", 0)),
        "cpu_used": float(_number(stat, "cpu_used")),
        "mem_allocated": int(slots.get("mem", 0)),
        "mem_used": int(_number(stat, "mem", "stats.max") or _number(stat, "mem")),
        "shared_memory": int((row.resource_opts or {}).get("shmem", 0) or 0),
        "disk_allocated": 0,
        "disk_used": 0,
        "io_read": int(_number(stat, "io_read")),
        "io_write": int(_number(stat, "io_write")),
        "used_time": used_time,
        "used_days": used_days,
        "device_type": models,
        "smp": float(smp),
        "gpu_mem_allocated": float(gpu_mem),
        "gpu_allocated": float(_gpu(slots)),
        "nfs": nfs or None,
        "image_id": row.image,
        "image_name": row.image,
        "created_at": str(row.created_at),
        "terminated_at": str(ended),
        "status": KernelStatus(row.status).value,
        "status_info": row.status_info,
        "status_changed": str(row.status_changed),
        "status_history": row.status_history or [],
        "cluster_mode": getattr(row.cluster_mode, "value", row.cluster_mode),
    }


def _bin(unit: str) -> dict[str, Any]:
    return {"value": 0, "unit_hint": unit}


async def monthly_bins(
    db: Database, now: datetime, user_uuid: uuid.UUID | None = None
) -> list[dict[str, Any]]:
    """:data:`BIN_COUNT` bins of :data:`BIN_SECONDS` before *now* with the ended kernels
    (of *user_uuid*, or everyone's) alive in each (module docs)."""
    first = now - timedelta(seconds=BIN_SECONDS * BIN_COUNT)
    query = (
        sa.select(
            kernels.c.created_at,
            kernels.c.terminated_at,
            kernels.c.occupied_slots,
            kernels.c.last_stat,
        )
        .select_from(kernels.join(sessions, sessions.c.id == kernels.c.session_id))
        .where(kernels.c.terminated_at >= first, kernels.c.status.in_(_ENDED))
        .order_by(kernels.c.created_at)
    )
    if user_uuid is not None:
        query = query.where(sessions.c.user_uuid == user_uuid)
    async with db.begin_readonly() as conn:
        rows = list(await conn.execute(query))
    base = first.timestamp()
    bins: list[dict[str, Any]] = [
        {
            "date": base + index * BIN_SECONDS,
            "num_sessions": _bin("count"),
            "cpu_allocated": _bin("count"),
            "mem_allocated": _bin("bytes"),
            "gpu_allocated": _bin("count"),
            "io_read_bytes": _bin("bytes"),
            "io_write_bytes": _bin("bytes"),
            "disk_used": _bin("bytes"),
        }
        for index in range(BIN_COUNT)
    ]
    for row in rows:
        slots: Mapping[str, Decimal] = row.occupied_slots or {}
        begin = max(0, int((row.created_at.timestamp() - base) // BIN_SECONDS))
        stop = min(BIN_COUNT, int((row.terminated_at.timestamp() - base) // BIN_SECONDS) + 1)
        read, written = (
            int(_number(row.last_stat, "io_read")),
            int(_number(row.last_stat, "io_write")),
        )
        for entry in bins[begin:stop]:
            entry["num_sessions"]["value"] += 1
            entry["cpu_allocated"]["value"] += float(slots.get("cpu", 0))
            entry["mem_allocated"]["value"] += int(slots.get("mem", 0))
            entry["gpu_allocated"]["value"] += float(_gpu(slots))
            entry["io_read_bytes"]["value"] += read
            entry["io_write_bytes"]["value"] += written
    return bins
