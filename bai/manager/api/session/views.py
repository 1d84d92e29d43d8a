"""Turn a :class:`~bai.manager.sessions.model.SessionInfo` into the JSON the session routes answer.

Pure functions of the record (and the current time): no I/O, no request
state.  Times are ISO 8601 text; ``None`` stays ``null``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bai.common.livestat import stat_value
from bai.manager.models.base import utcnow
from bai.manager.sessions.model import SessionInfo

__all__ = ["creation_json", "session_json"]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _kernel_json(info: SessionInfo) -> list[dict[str, Any]]:
    return [
        {
            "id": k.id,
            "clusterRole": k.cluster_role,
            "clusterIdx": k.cluster_idx,
            "clusterHostname": k.cluster_hostname,
            "agent": k.agent,
            "status": k.status,
            "statusInfo": k.status_info,
            "containerId": k.container_id,
            "exitCode": k.exit_code,
            "requestedSlots": k.requested_slots,
            "occupiedSlots": k.occupied_slots,
            "servicePorts": list(k.service_ports),
        }
        for k in info.kernels
    ]


def _cpu_used_msec(stat: Mapping[str, Any] | None) -> int:
    return int(stat_value(stat, "cpu_used") or 0)


def session_json(
    info: SessionInfo,
    *,
    now: datetime | None = None,
    live_stat: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``GET /session/:id``: the spec's keys (``lang``, ``age`` in ms, ``memoryLimit``
    in KiB, ``numQueriesExecuted``, ``cpuCreditUsed`` in ms) and everything else known.

    *live_stat* is the main kernel's newest live sample, if it runs: it
    gives ``lastStat`` and ``cpuCreditUsed`` instead of the sample stored
    when a kernel ends.

    UUIDs and string enums are left for :func:`json_response` to encode (as
    their canonical text and their value), which it does faster than ``str``.
    """
    main = info.main_kernel
    stat = main.last_stat if live_stat is None else live_stat
    end = info.terminated_at or now or utcnow()
    occupied = main.occupied_slots
    for kernel in info.kernels[1:]:
        occupied = occupied + kernel.occupied_slots
    memory = main.requested_slots.get("mem")
    return {
        "sessionId": info.id,
        "sessionName": info.name,
        "ownerAccessKey": info.access_key,
        "domainName": info.domain_name,
        "groupId": info.group_id,
        "userId": info.user_uuid,
        "type": info.session_type,
        "lang": info.image,
        "image": info.image,
        "architecture": info.architecture,
        "tag": info.tag,
        "clusterMode": info.cluster_mode,
        "clusterSize": info.cluster_size,
        "scalingGroup": info.scaling_group,
        "status": info.status,
        "statusInfo": info.status_info,
        "statusData": info.status_data,
        "statusChanged": _iso(info.status_changed),
        "result": info.result,
        "creationTime": _iso(info.created_at),
        "terminationTime": _iso(info.terminated_at),
        "startsAt": _iso(info.starts_at),
        "age": max(0, int((end - info.created_at).total_seconds() * 1000)),
        "memoryLimit": int(memory) // 1024 if memory is not None else None,
        "numQueriesExecuted": info.num_queries,
        "cpuCreditUsed": _cpu_used_msec(stat),
        "requestedSlots": info.requested_slots,
        "occupyingSlots": info.occupying_slots,
        "occupiedSlots": occupied,
        "environ": dict(info.environ),
        "startupCommand": info.startup_command,
        "servicePorts": list(info.service_ports),
        "lastStat": stat,
        "kernels": _kernel_json(info),
    }


def creation_json(info: SessionInfo, status: str, created: bool) -> dict[str, Any]:
    """``POST /session``: the new or reused session, its *status* and whether it was *created*."""
    return {
        "sessionId": str(info.id),
        "sessionName": info.name,
        "sessId": info.name,
        "status": status,
        "statusInfo": info.status_info,
        "servicePorts": list(info.service_ports),
        "created": created,
    }
