"""Domain mutations (superadmins): ``create_domain``, ``modify_domain``, ``delete_domain``,
``purge_domain``.

``delete_domain`` deactivates the domain (its row stays, as in the official
manager); ``purge_domain`` removes the row.  Both are refused (``ok:
false`` with the reason) while the domain still has users (other than
deleted ones, for ``delete_domain``; any, for ``purge_domain``), live
folders or live sessions; ``purge_domain`` also while projects remain.
A rename (``props.name``) carries every reference along (foreign keys
cascade).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from bai.common.errors import InvalidValue
from bai.common.types import TERMINAL_STATUSES
from bai.manager.api.gql.context import Info, context_of
from bai.manager.api.gql.identity import domain_item
from bai.manager.api.gql.mutations.common import (
    answer,
    check_slug,
    count,
    host_permissions,
    parse_slots,
    slot_types,
    write_unique,
)
from bai.manager.db import Connection
from bai.manager.models.identity import UserStatus, domains, groups, users
from bai.manager.models.resource import sgroups_for_domains
from bai.manager.models.session import sessions
from bai.manager.models.vfolder import LIVE_CONDITION, vfolders

__all__ = [
    "create_domain",
    "delete_domain",
    "live_sessions",
    "modify_domain",
    "purge_domain",
]


def live_sessions(*conditions: sa.ColumnElement[bool]) -> list[sa.ColumnElement[bool]]:
    """*conditions* on ``sessions`` plus "not ended yet"."""
    return [*conditions, sessions.c.status.not_in(sorted(TERMINAL_STATUSES))]


async def _domain_values(
    conn: Connection, props: Mapping[str, Any], *, creating: bool
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in ("description", "is_active", "integration_id"):
        if props.get(name) is not None:
            values[name] = props[name]
    if props.get("name") is not None and not creating:
        values["name"] = check_slug(props["name"], "props.name")
    if props.get("total_resource_slots") is not None:
        values["total_resource_slots"] = parse_slots(
            props["total_resource_slots"], await slot_types(conn), "props.total_resource_slots"
        )
    if props.get("allowed_vfolder_hosts") is not None:
        values["allowed_vfolder_hosts"] = host_permissions(
            props["allowed_vfolder_hosts"], "props.allowed_vfolder_hosts"
        )
    registries = props.get("allowed_docker_registries")
    if registries is not None:
        if not all(isinstance(r, str) and r for r in registries):
            raise InvalidValue(
                "must be registry names", value=registries, field="props.allowed_docker_registries"
            )
        values["allowed_docker_registries"] = list(registries)
    return values


def _load(info: Info, name: str) -> dict[str, Any] | None:
    rows = context_of(info).read_rows(sa.select(domains).where(domains.c.name == name))
    return domain_item(rows[0]) if rows else None


def create_domain(_root: Any, info: Info, name: str, props: Mapping[str, Any]) -> Any:
    """``create_domain(name, props)``."""
    ctx = context_of(info)
    ctx.require_superadmin("creating domains")
    check_slug(name, "name")

    async def write(conn: Connection) -> bool:
        values = await _domain_values(conn, props, creating=True)
        if await count(conn, domains, domains.c.name == name):
            return False
        await conn.execute(sa.insert(domains).values(name=name, **values))
        return True

    if not write_unique(ctx, write, False):
        return answer(False, f"a domain named {name!r} already exists", domain=None)
    return answer(True, "success", domain=_load(info, name))


def modify_domain(_root: Any, info: Info, name: str, props: Mapping[str, Any]) -> Any:
    """``modify_domain(name, props)``: unset fields keep their values."""
    ctx = context_of(info)
    ctx.require_superadmin("modifying domains")

    async def write(conn: Connection) -> str | None:
        values = await _domain_values(conn, props, creating=False)
        if not await count(conn, domains, domains.c.name == name):
            return f"no domain is named {name!r}"
        new_name = values.get("name", name)
        if new_name != name and await count(conn, domains, domains.c.name == new_name):
            return f"a domain named {new_name!r} already exists"
        if values:
            await conn.execute(sa.update(domains).where(domains.c.name == name).values(**values))
        return None

    problem = write_unique(ctx, write, "the new name was taken meanwhile")
    if problem is not None:
        return answer(False, problem, domain=None)
    return answer(True, "success", domain=_load(info, props.get("name") or name))


async def _domain_in_use(conn: Connection, name: str, *, any_user: bool) -> str | None:
    """Why the domain *name* cannot go yet (users, live folders, live sessions), or ``None``."""
    user_filter = [users.c.domain_name == name]
    if not any_user:
        user_filter.append(users.c.status != UserStatus.DELETED)
    reasons = []
    user_count = await count(conn, users, *user_filter)
    if user_count:
        reasons.append(f"{user_count} user(s)")
    folders = await count(
        conn,
        vfolders.outerjoin(users, users.c.uuid == vfolders.c.user).outerjoin(
            groups, groups.c.id == vfolders.c.group
        ),
        LIVE_CONDITION,
        sa.or_(users.c.domain_name == name, groups.c.domain_name == name),
    )
    if folders:
        reasons.append(f"{folders} folder(s)")
    live = await count(conn, sessions, *live_sessions(sessions.c.domain_name == name))
    if live:
        reasons.append(f"{live} live session(s)")
    if not reasons:
        return None
    return f"the domain {name!r} still has {', '.join(reasons)}"


def delete_domain(_root: Any, info: Info, name: str) -> Any:
    """``delete_domain(name)``: deactivates the domain (module docs)."""
    ctx = context_of(info)
    ctx.require_superadmin("deleting domains")

    async def write(conn: Connection) -> str | None:
        if not await count(conn, domains, domains.c.name == name):
            return f"no domain is named {name!r}"
        problem = await _domain_in_use(conn, name, any_user=False)
        if problem is None:
            await conn.execute(
                sa.update(domains).where(domains.c.name == name).values(is_active=False)
            )
        return problem

    problem = ctx.write(write)
    return answer(problem is None, problem or "success")


def purge_domain(_root: Any, info: Info, name: str) -> Any:
    """``purge_domain(name)``: removes the domain (module docs)."""
    ctx = context_of(info)
    ctx.require_superadmin("purging domains")

    async def write(conn: Connection) -> str | None:
        if not await count(conn, domains, domains.c.name == name):
            return f"no domain is named {name!r}"
        problem = await _domain_in_use(conn, name, any_user=True)
        if problem is not None:
            return problem
        projects = await count(conn, groups, groups.c.domain_name == name)
        if projects:
            return f"the domain {name!r} still has {projects} project(s); purge them first"
        await conn.execute(
            sa.delete(sgroups_for_domains).where(sgroups_for_domains.c.domain == name)
        )
        await conn.execute(sa.delete(domains).where(domains.c.name == name))
        return None

    problem = ctx.write(write)
    return answer(problem is None, problem or "success")
