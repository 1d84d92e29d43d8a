"""Agents, resource groups (scaling groups) and resource presets, read-only.

* ``agent(agent_id)``, ``agents``, ``agent_list`` -- superadmins only.  An
  agent's ``occupied_slots`` are derived from its kernels that hold resources
  (:func:`~bai.manager.models.usage.agent_occupancy`), read in the same
  transaction as the agents.  The legacy ``*_slots`` fields are read from the
  slot maps (``mem_slots`` in MiB).  bai samples kernels, not agents, and
  does not collect hardware details or agent configs: ``live_stat``,
  ``hardware_metadata`` and ``local_config`` are ``null``, and
  ``cpu_cur_pct`` / ``mem_cur_bytes`` report allocation, not measured use
  (the share of the agent's CPUs, and the bytes of memory, that its
  resource-holding kernels occupy).
* ``scaling_group(name)``, ``scaling_groups`` and the ``scaling_groups_for_*``
  fields -- superadmins see every resource group; everyone else those
  associated with their domain, one of their projects (domain admins: any
  project of their domain) or one of their keypairs (domain admins: any
  keypair of their domain); naming another domain, a project the caller may
  not see or another user's keypair is an error.
* ``resource_preset(name)``, ``resource_presets`` -- every user.
* ``storage_volume(id)``, ``storage_volume_list`` -- superadmins only: the
  volumes of the storage proxies that answer (``id`` is ``PROXY:VOLUME``),
  in ``id`` order; bai collects no hardware details, performance metrics or
  usage per volume, so those are ``null``, and the list takes no ``filter``
  or ``order`` (naming one is an error).
* ``vfolder_host_permissions`` -- every user: the per-host folder
  permissions (as ``GET /acl`` answers).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import sqlalchemy as sa
import trio

from bai.common.errors import InvalidValue
from bai.common.slots import ResourceSlot
from bai.manager.api.acl import VFOLDER_HOST_PERMISSIONS
from bai.manager.api.errors import Forbidden
from bai.manager.api.gql.context import GqlContext, Info, context_of, with_siblings
from bai.manager.api.gql.filters import Field, Kind, enum_field, parse_filter
from bai.manager.api.gql.identity import visible_keypairs
from bai.manager.api.gql.pages import check_page, order_terms, read_page
from bai.manager.api.gql.sessions import parse_statuses
from bai.manager.db import Connection
from bai.manager.models.identity import association_groups_users, groups, keypairs, users
from bai.manager.models.resource import (
    AgentStatus,
    agents,
    resource_presets,
    scaling_groups,
    sgroups_for_domains,
    sgroups_for_groups,
    sgroups_for_keypairs,
)
from bai.manager.models.usage import agent_occupancy
from bai.manager.protocols import StorageClient
from bai.manager.vfolders.proxies import StorageProxyError

__all__ = [
    "AGENT_FIELDS",
    "resolve_agent",
    "resolve_agent_list",
    "resolve_agents",
    "resolve_resource_preset",
    "resolve_resource_presets",
    "resolve_scaling_group",
    "resolve_scaling_groups",
    "resolve_scaling_groups_for_domain",
    "resolve_scaling_groups_for_keypair",
    "resolve_scaling_groups_for_user_group",
    "resolve_storage_volume",
    "resolve_storage_volume_list",
    "resolve_vfolder_host_permissions",
]

_MIB: Final = Decimal(2**20)

#: Fields of ``agent_list``'s ``filter`` and ``order``.
AGENT_FIELDS: Final[Mapping[str, Field]] = {
    "id": Field(agents.c.id, Kind.STRING),
    "status": enum_field(agents.c.status, AgentStatus),
    "status_changed": Field(agents.c.status_changed, Kind.DATETIME),
    "region": Field(agents.c.region, Kind.STRING),
    "scaling_group": Field(agents.c.scaling_group, Kind.STRING),
    "schedulable": Field(agents.c.schedulable, Kind.BOOLEAN),
    "addr": Field(agents.c.addr, Kind.STRING),
    "architecture": Field(agents.c.architecture, Kind.STRING),
    "version": Field(agents.c.version, Kind.STRING),
    "first_contact": Field(agents.c.first_contact, Kind.DATETIME),
    "lost_at": Field(agents.c.lost_at, Kind.DATETIME),
}


# -------------------------------------------------------------------------- agents


def _amount(slots: ResourceSlot, name: str) -> Decimal:
    return slots[name] if name in slots else Decimal(0)


def _percent(part: Decimal, whole: Decimal) -> float:
    return float(part * 100 / whole) if whole else 0.0


def _agent_item(row: Any, occupied: ResourceSlot) -> dict[str, Any]:
    available: ResourceSlot = row.available_slots
    return {
        "id": row.id,
        "status": str(row.status),
        "status_changed": row.status_changed,
        "region": row.region,
        "scaling_group": row.scaling_group,
        "schedulable": row.schedulable,
        "available_slots": available,
        "occupied_slots": occupied,
        "addr": row.addr,
        "public_host": row.public_host,
        "first_contact": row.first_contact,
        "lost_at": row.lost_at,
        "version": row.version,
        "architecture": row.architecture,
        "compute_plugins": row.compute_plugins,
        "live_stat": None,
        "hardware_metadata": None,
        "local_config": None,
        "cpu_cur_pct": _percent(_amount(occupied, "cpu"), _amount(available, "cpu")),
        "mem_cur_bytes": float(_amount(occupied, "mem")),
        "mem_slots": int(_amount(available, "mem") / _MIB),
        "cpu_slots": float(_amount(available, "cpu")),
        "gpu_slots": float(_amount(available, "cuda.device")),
        "tpu_slots": float(_amount(available, "tpu.device")),
        "used_mem_slots": int(_amount(occupied, "mem") / _MIB),
        "used_cpu_slots": float(_amount(occupied, "cpu")),
        "used_gpu_slots": float(_amount(occupied, "cuda.device")),
        "used_tpu_slots": float(_amount(occupied, "tpu.device")),
    }


def _agent_conditions(
    scaling_group: str | None, status: str | None
) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    if scaling_group is not None:
        conditions.append(agents.c.scaling_group == scaling_group)
    statuses = parse_statuses(status, AgentStatus, "an agent status")
    if statuses is not None:
        conditions.append(agents.c.status.in_(statuses))
    return conditions


def _load_agents(
    ctx: GqlContext,
    conditions: Sequence[sa.ColumnElement[bool]],
    *,
    order: Sequence[Any] = (agents.c.id,),
    limit: int | None = None,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    async def read(conn: Connection) -> tuple[list[dict[str, Any]], int]:
        rows, total = await read_page(
            conn, agents, (agents,), conditions, order, limit=limit, offset=offset
        )
        occupancy = await agent_occupancy(conn, [row.id for row in rows])
        items = [_agent_item(row, occupancy[row.id].occupied_slots) for row in rows]
        return with_siblings(items), total

    result: tuple[list[dict[str, Any]], int] = ctx.read(read)
    return result


def resolve_agent(_root: Any, info: Info, agent_id: str) -> Any:
    """``agent(agent_id)``: superadmins only."""
    ctx = context_of(info)
    ctx.require_superadmin("querying agents")
    items, _ = _load_agents(ctx, [agents.c.id == agent_id])
    return items[0] if items else None


def resolve_agents(
    _root: Any,
    info: Info,
    scaling_group: str | None = None,
    status: str | None = None,
) -> Any:
    """``agents(scaling_group, status)``: superadmins only."""
    ctx = context_of(info)
    ctx.require_superadmin("querying agents")
    items, _ = _load_agents(ctx, _agent_conditions(scaling_group, status))
    return items


def resolve_agent_list(
    _root: Any,
    info: Info,
    limit: int,
    offset: int,
    order_key: str | None = None,
    order_asc: bool | None = None,
    scaling_group: str | None = None,
    status: str | None = None,
    filter: str | None = None,
    order: str | None = None,
) -> Any:
    """``agent_list``: one page of agents; superadmins only."""
    ctx = context_of(info)
    ctx.require_superadmin("querying agents")
    check_page(limit, offset)
    conditions = _agent_conditions(scaling_group, status)
    if filter:
        conditions.append(parse_filter(filter, AGENT_FIELDS))
    ordering = order_terms(
        AGENT_FIELDS,
        (agents.c.id,),
        agents.c.id,
        order=order,
        order_key=order_key,
        order_asc=order_asc,
    )
    items, total = _load_agents(ctx, conditions, order=ordering, limit=limit, offset=offset)
    return {"items": items, "total_count": total}


# ------------------------------------------------------------------- scaling groups


def _sgroup_item(row: Any) -> dict[str, Any]:
    return {
        "name": row.name,
        "description": row.description,
        "is_active": row.is_active,
        "is_public": row.is_public,
        "created_at": row.created_at,
        "wsproxy_addr": row.wsproxy_addr,
        "wsproxy_api_token": None,
        "driver": row.driver,
        "driver_opts": row.driver_opts,
        "scheduler": row.scheduler,
        "scheduler_opts": row.scheduler_opts,
        "use_host_network": row.use_host_network,
    }


def _visible_projects(ctx: GqlContext) -> sa.Select[Any]:
    """The ids of the projects a domain admin or user may see (their domain's, or theirs)."""
    if ctx.is_admin:
        return sa.select(groups.c.id).where(groups.c.domain_name == ctx.auth.domain_name)
    return sa.select(association_groups_users.c.group_id).where(
        association_groups_users.c.user_id == ctx.auth.user_id
    )


def _visible_sgroups(ctx: GqlContext) -> list[sa.ColumnElement[bool]]:
    if ctx.is_superadmin:
        return []
    domain = ctx.auth.domain_name
    project_ids = _visible_projects(ctx)
    access_keys = (
        sa.select(keypairs.c.access_key)
        .select_from(keypairs.join(users, users.c.uuid == keypairs.c.user))
        .where(sa.and_(sa.true(), *visible_keypairs(ctx, None)))
    )
    associated = sa.union(
        sa.select(sgroups_for_domains.c.scaling_group).where(
            sgroups_for_domains.c.domain == domain
        ),
        sa.select(sgroups_for_groups.c.scaling_group).where(
            sgroups_for_groups.c.group.in_(project_ids)
        ),
        sa.select(sgroups_for_keypairs.c.scaling_group).where(
            sgroups_for_keypairs.c.access_key.in_(access_keys)
        ),
    ).subquery()
    return [scaling_groups.c.name.in_(sa.select(associated.c.scaling_group))]


def _sgroups(
    ctx: GqlContext, conditions: Sequence[sa.ColumnElement[bool]], is_active: bool | None
) -> list[dict[str, Any]]:
    where = [*_visible_sgroups(ctx), *conditions]
    if is_active is not None:
        where.append(scaling_groups.c.is_active.is_(is_active))
    query = (
        sa.select(scaling_groups).where(sa.and_(sa.true(), *where)).order_by(scaling_groups.c.name)
    )
    return [_sgroup_item(row) for row in ctx.read_rows(query)]


def resolve_scaling_group(_root: Any, info: Info, name: str | None = None) -> Any:
    """``scaling_group(name)``: ``null`` without a name (the official client's variable is
    nullable)."""
    if name is None:
        return None
    found = _sgroups(context_of(info), [scaling_groups.c.name == name], None)
    return found[0] if found else None


def resolve_scaling_groups(
    _root: Any, info: Info, name: str | None = None, is_active: bool | None = None
) -> Any:
    """``scaling_groups(name, is_active)``."""
    conditions = [scaling_groups.c.name == name] if name is not None else []
    return _sgroups(context_of(info), conditions, is_active)


def resolve_scaling_groups_for_domain(
    _root: Any, info: Info, domain: str, is_active: bool | None = None
) -> Any:
    """``scaling_groups_for_domain(domain, is_active)``."""
    ctx = context_of(info)
    wanted = ctx.domain_scope(domain)
    linked = sa.select(sgroups_for_domains.c.scaling_group).where(
        sgroups_for_domains.c.domain == wanted
    )
    return _sgroups(ctx, [scaling_groups.c.name.in_(linked)], is_active)


def resolve_scaling_groups_for_user_group(
    _root: Any, info: Info, user_group: str, is_active: bool | None = None
) -> Any:
    """``scaling_groups_for_user_group(user_group, is_active)``: *user_group* is a project id."""
    ctx = context_of(info)
    try:
        group_id = uuid.UUID(user_group)
    except ValueError:
        raise InvalidValue("is not a project id", value=user_group, field="user_group") from None
    if not ctx.is_superadmin:
        visible = _visible_projects(ctx).subquery()
        if not ctx.read_rows(sa.select(visible).where(visible.c[0] == group_id)):
            raise Forbidden(f"you may not query the project {user_group}")
    linked = sa.select(sgroups_for_groups.c.scaling_group).where(
        sgroups_for_groups.c.group == group_id
    )
    return _sgroups(ctx, [scaling_groups.c.name.in_(linked)], is_active)


def resolve_scaling_groups_for_keypair(
    _root: Any, info: Info, access_key: str, is_active: bool | None = None
) -> Any:
    """``scaling_groups_for_keypair(access_key, is_active)``."""
    ctx = context_of(info)
    wanted = ctx.own_only(access_key, ctx.auth.access_key, "keypair")
    linked = sa.select(sgroups_for_keypairs.c.scaling_group).where(
        sgroups_for_keypairs.c.access_key == wanted
    )
    return _sgroups(ctx, [scaling_groups.c.name.in_(linked)], is_active)


# ------------------------------------------------------------------ resource presets


def _preset_item(row: Any) -> dict[str, Any]:
    return {
        "name": row.name,
        "resource_slots": row.resource_slots,
        "shared_memory": row.shared_memory,
    }


def _presets(ctx: GqlContext, conditions: Sequence[sa.ColumnElement[bool]]) -> list[Any]:
    query = (
        sa.select(resource_presets)
        .where(sa.and_(sa.true(), *conditions))
        .order_by(resource_presets.c.name)
    )
    return [_preset_item(row) for row in ctx.read_rows(query)]


def resolve_resource_preset(_root: Any, info: Info, name: str) -> Any:
    """``resource_preset(name)``."""
    found = _presets(context_of(info), [resource_presets.c.name == name])
    return found[0] if found else None


def resolve_resource_presets(_root: Any, info: Info) -> Any:
    """``resource_presets``."""
    return _presets(context_of(info), [])


# ------------------------------------------------------------------- storage volumes


async def _volumes(storage: StorageClient) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for proxy in await storage.names():
        try:
            volumes = await storage.volumes(proxy)
        except StorageProxyError:
            continue  # a proxy that does not answer lists nothing, as for folder hosts
        found.extend(
            {
                "id": f"{proxy}:{volume['name']}",
                "backend": volume["backend"],
                "fsprefix": None,
                "path": volume["path"],
                "capabilities": list(volume["capabilities"]),
                "hardware_metadata": None,
                "performance_metric": None,
                "usage": None,
            }
            for volume in volumes
        )
    return sorted(found, key=lambda volume: volume["id"])


def _all_volumes(ctx: GqlContext) -> list[dict[str, Any]]:
    ctx.require_superadmin("querying storage volumes")
    if ctx.storage is None:
        return []
    return trio.from_thread.run(_volumes, ctx.storage)


def resolve_storage_volume(_root: Any, info: Info, id: str) -> Any:
    """``storage_volume(id)``: one volume by ``PROXY:VOLUME``, or ``null``."""
    found = [v for v in _all_volumes(context_of(info)) if v["id"] == id]
    return found[0] if found else None


def resolve_storage_volume_list(
    _root: Any,
    info: Info,
    limit: int,
    offset: int,
    filter: str | None = None,
    order: str | None = None,
) -> Any:
    """``storage_volume_list``: one page of the volumes, in ``id`` order."""
    ctx = context_of(info)
    check_page(limit, offset)
    for name, given in (("filter", filter), ("order", order)):
        if given:
            raise InvalidValue("storage volumes cannot be filtered or ordered", field=name)
    volumes = _all_volumes(ctx)
    return {"items": volumes[offset : offset + limit], "total_count": len(volumes)}


def resolve_vfolder_host_permissions(_root: Any, _info: Info) -> Any:
    """``vfolder_host_permissions``: the per-host folder permissions, for every user."""
    return {"vfolder_host_permission_list": list(VFOLDER_HOST_PERMISSIONS)}
