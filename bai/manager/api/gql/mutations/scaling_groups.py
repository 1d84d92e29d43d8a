"""Resource (scaling) group mutations (superadmins): create, modify, delete, and the
associations with domains, projects (``user_group``) and keypairs.

``scheduler`` and ``scheduler_opts`` are checked together as the scheduler
reads them (:meth:`~bai.manager.scheduler.options.SchedulerOptions.from_resource_group`),
so a group that exists can always be scheduled.  ``wsproxy_api_token`` is
accepted but not stored (bai's app proxies authenticate with the shared
secret ``appproxy/secret``).  ``delete_scaling_group`` is refused while
live sessions or agents use the group; its associations go with it.
Associating twice, or removing an association that does not exist, is
``ok: true`` (the state asked for holds); an unknown group, domain, project
or keypair is ``ok: false``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from bai.common.errors import InvalidValue
from bai.manager.api.gql import resources
from bai.manager.api.gql.context import Info, context_of
from bai.manager.api.gql.mutations.common import answer, check_slug, count, write_unique
from bai.manager.api.gql.mutations.domains import live_sessions
from bai.manager.db import Connection
from bai.manager.models.identity import domains, groups, keypairs
from bai.manager.models.resource import (
    AgentStatus,
    agents,
    scaling_groups,
    sgroups_for_domains,
    sgroups_for_groups,
    sgroups_for_keypairs,
)
from bai.manager.models.session import sessions
from bai.manager.scheduler.options import SchedulerOptions

__all__ = [
    "associate_scaling_group_with_domain",
    "associate_scaling_group_with_keypair",
    "associate_scaling_group_with_user_group",
    "create_scaling_group",
    "delete_scaling_group",
    "disassociate_all_scaling_groups_with_domain",
    "disassociate_all_scaling_groups_with_group",
    "disassociate_scaling_group_with_domain",
    "disassociate_scaling_group_with_keypair",
    "disassociate_scaling_group_with_user_group",
    "modify_scaling_group",
]

_PLAIN = ("description", "is_active", "is_public", "use_host_network")


def _values(props: Mapping[str, Any], current: Any | None) -> dict[str, Any]:
    values = {name: props[name] for name in _PLAIN if props.get(name) is not None}
    if "wsproxy_addr" in props:
        addr = props["wsproxy_addr"]
        if addr is not None and (not isinstance(addr, str) or len(addr) > 1024):
            raise InvalidValue("must be a URL", value=addr, field="props.wsproxy_addr")
        values["wsproxy_addr"] = addr or None
    driver = props.get("driver")
    if driver is not None:
        if not isinstance(driver, str) or not 1 <= len(driver) <= 64:
            raise InvalidValue("must be 1 to 64 characters", value=driver, field="props.driver")
        values["driver"] = driver
    if props.get("driver_opts") is not None:
        if not isinstance(props["driver_opts"], dict):
            raise InvalidValue(
                "must be a JSON object", value=props["driver_opts"], field="props.driver_opts"
            )
        values["driver_opts"] = props["driver_opts"]
    scheduler = props.get("scheduler", current.scheduler if current is not None else None)
    opts = props.get("scheduler_opts")
    if opts is None:
        opts = current.scheduler_opts if current is not None else {}
    if props.get("scheduler") is not None or props.get("scheduler_opts") is not None:
        try:
            SchedulerOptions.from_resource_group(scheduler, opts)
        except InvalidValue as exc:
            field = (
                "props.scheduler" if exc.field in (None, "scheduler") else "props.scheduler_opts"
            )
            raise InvalidValue(exc.problem, value=exc.value, field=field) from None
        values["scheduler"] = scheduler
        values["scheduler_opts"] = opts
    return values


async def _current(conn: Connection, name: str) -> Any | None:
    return (
        await conn.execute(sa.select(scaling_groups).where(scaling_groups.c.name == name))
    ).first()


def create_scaling_group(_root: Any, info: Info, name: str, props: Mapping[str, Any]) -> Any:
    """``create_scaling_group(name, props)``."""
    ctx = context_of(info)
    ctx.require_superadmin("creating resource groups")
    check_slug(name, "name")
    values = _values(props, None)

    async def write(conn: Connection) -> bool:
        if await _current(conn, name) is not None:
            return False
        await conn.execute(sa.insert(scaling_groups).values(name=name, **values))
        return True

    if not write_unique(ctx, write, False):
        return answer(False, f"a resource group named {name!r} already exists", scaling_group=None)
    return answer(
        True, "success", scaling_group=resources.resolve_scaling_group(None, info, name=name)
    )


def modify_scaling_group(_root: Any, info: Info, name: str, props: Mapping[str, Any]) -> Any:
    """``modify_scaling_group(name, props)``: unset fields keep their values."""
    ctx = context_of(info)
    ctx.require_superadmin("modifying resource groups")

    async def write(conn: Connection) -> bool:
        current = await _current(conn, name)
        if current is None:
            return False
        values = _values(props, current)
        if values:
            await conn.execute(
                sa.update(scaling_groups).where(scaling_groups.c.name == name).values(**values)
            )
        return True

    if not ctx.write(write):
        return answer(False, f"no resource group is named {name!r}")
    return answer(True, "success")


def delete_scaling_group(_root: Any, info: Info, name: str) -> Any:
    """``delete_scaling_group(name)``: refused while live sessions or agents use it."""
    ctx = context_of(info)
    ctx.require_superadmin("deleting resource groups")

    async def write(conn: Connection) -> str | None:
        if await _current(conn, name) is None:
            return f"no resource group is named {name!r}"
        live = await count(conn, sessions, *live_sessions(sessions.c.scaling_group_name == name))
        if live:
            return f"{live} live session(s) run in the resource group {name!r}"
        members = await count(
            conn,
            agents,
            agents.c.scaling_group == name,
            agents.c.status != AgentStatus.TERMINATED,
        )
        if members:
            return f"{members} agent(s) belong to the resource group {name!r}"
        # Ended sessions keep their records; they stop naming the group.
        await conn.execute(
            sa.update(sessions)
            .where(sessions.c.scaling_group_name == name)
            .values(scaling_group_name=None)
        )
        for table in (sgroups_for_domains, sgroups_for_groups, sgroups_for_keypairs):
            await conn.execute(sa.delete(table).where(table.c.scaling_group == name))
        await conn.execute(sa.delete(scaling_groups).where(scaling_groups.c.name == name))
        return None

    problem = ctx.write(write)
    return answer(problem is None, problem or "success")


# -------------------------------------------------------------------- associations


def _project_id(value: Any) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise InvalidValue("is not a project id", value=value, field="user_group") from None


def _associate(
    info: Info,
    table: sa.Table,
    column: str,
    target: Any,
    target_exists: sa.ColumnElement[bool],
    what: str,
    scaling_group: str,
    *,
    add: bool,
) -> Any:
    ctx = context_of(info)
    ctx.require_superadmin("changing resource group associations")

    async def write(conn: Connection) -> str | None:
        if await _current(conn, scaling_group) is None:
            return f"no resource group is named {scaling_group!r}"
        if not await conn.scalar(sa.select(sa.exists().where(target_exists))):
            return f"no {what} is {target!s}"
        match = [table.c.scaling_group == scaling_group, table.c[column] == target]
        present = await count(conn, table, *match)
        if add and not present:
            await conn.execute(
                sa.insert(table).values(scaling_group=scaling_group, **{column: target})
            )
        elif not add and present:
            await conn.execute(sa.delete(table).where(*match))
        return None

    problem = ctx.write(write)
    return answer(problem is None, problem or "success")


def associate_scaling_group_with_domain(
    _root: Any, info: Info, domain: str, scaling_group: str
) -> Any:
    """``associate_scaling_group_with_domain(domain, scaling_group)``."""
    return _associate(
        info, sgroups_for_domains, "domain", domain, domains.c.name == domain,
        "domain", scaling_group, add=True,
    )  # fmt: skip


def disassociate_scaling_group_with_domain(
    _root: Any, info: Info, domain: str, scaling_group: str
) -> Any:
    """``disassociate_scaling_group_with_domain(domain, scaling_group)``."""
    return _associate(
        info, sgroups_for_domains, "domain", domain, domains.c.name == domain,
        "domain", scaling_group, add=False,
    )  # fmt: skip


def associate_scaling_group_with_user_group(
    _root: Any, info: Info, scaling_group: str, user_group: Any
) -> Any:
    """``associate_scaling_group_with_user_group(scaling_group, user_group)``."""
    gid = _project_id(user_group)
    return _associate(
        info, sgroups_for_groups, "group", gid, groups.c.id == gid,
        "project with the id", scaling_group, add=True,
    )  # fmt: skip


def disassociate_scaling_group_with_user_group(
    _root: Any, info: Info, scaling_group: str, user_group: Any
) -> Any:
    """``disassociate_scaling_group_with_user_group(scaling_group, user_group)``."""
    gid = _project_id(user_group)
    return _associate(
        info, sgroups_for_groups, "group", gid, groups.c.id == gid,
        "project with the id", scaling_group, add=False,
    )  # fmt: skip


def associate_scaling_group_with_keypair(
    _root: Any, info: Info, access_key: str, scaling_group: str
) -> Any:
    """``associate_scaling_group_with_keypair(access_key, scaling_group)``."""
    return _associate(
        info, sgroups_for_keypairs, "access_key", access_key, keypairs.c.access_key == access_key,
        "keypair with the access key", scaling_group, add=True,
    )  # fmt: skip


def disassociate_scaling_group_with_keypair(
    _root: Any, info: Info, access_key: str, scaling_group: str
) -> Any:
    """``disassociate_scaling_group_with_keypair(access_key, scaling_group)``."""
    return _associate(
        info, sgroups_for_keypairs, "access_key", access_key, keypairs.c.access_key == access_key,
        "keypair with the access key", scaling_group, add=False,
    )  # fmt: skip


def _disassociate_all(
    info: Info, table: sa.Table, column: str, target: Any, exists: sa.ColumnElement[bool], what: str
) -> Any:
    ctx = context_of(info)
    ctx.require_superadmin("changing resource group associations")

    async def write(conn: Connection) -> str | None:
        if not await conn.scalar(sa.select(sa.exists().where(exists))):
            return f"no {what} is {target!s}"
        await conn.execute(sa.delete(table).where(table.c[column] == target))
        return None

    problem = ctx.write(write)
    return answer(problem is None, problem or "success")


def disassociate_all_scaling_groups_with_domain(_root: Any, info: Info, domain: str) -> Any:
    """``disassociate_all_scaling_groups_with_domain(domain)``."""
    return _disassociate_all(
        info, sgroups_for_domains, "domain", domain, domains.c.name == domain, "domain"
    )


def disassociate_all_scaling_groups_with_group(_root: Any, info: Info, user_group: Any) -> Any:
    """``disassociate_all_scaling_groups_with_group(user_group)``."""
    gid = _project_id(user_group)
    return _disassociate_all(
        info, sgroups_for_groups, "group", gid, groups.c.id == gid, "project with the id"
    )
