"""Project (group) mutations: ``create_group``, ``modify_group``, ``delete_group``,
``purge_group``.

Who may: superadmins any project; domain admins the projects of their own
domain (naming or moving to another domain is ``forbidden``).  Projects are
named by id (``gid``), as the official client sends them.

* ``create_group(name, props)``: the name is unique in its domain; the
  domain and the project resource policy (``default`` when unset) must
  exist.
* ``modify_group(gid, props)``: changes the given fields;
  ``user_update_mode`` ``add`` or ``remove`` with ``user_uuids`` adds or
  removes members (users of the project's domain; adding a member twice
  changes nothing).
* ``delete_group(gid)`` deactivates the project (and clears its
  ``integration_id``, as the official manager does); ``purge_group(gid)``
  removes it with its ended sessions and its session templates.  Both are
  refused while the project has members, folders (live ones; any, for a
  purge) or live sessions.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from bai.common.errors import InvalidValue
from bai.manager.api.errors import Forbidden
from bai.manager.api.gql.context import GqlContext, Info, context_of
from bai.manager.api.gql.identity import group_item
from bai.manager.api.gql.mutations.common import (
    answer,
    check_slug,
    count,
    host_permissions,
    parse_slots,
    slot_types,
    write_unique,
)
from bai.manager.api.gql.mutations.domains import live_sessions
from bai.manager.api.gql.mutations.policies import policy_exists
from bai.manager.db import Connection
from bai.manager.models.identity import (
    association_groups_users,
    domains,
    groups,
    project_resource_policies,
    users,
)
from bai.manager.models.resource import sgroups_for_groups
from bai.manager.models.session import kernels, session_templates, sessions
from bai.manager.models.vfolder import LIVE_CONDITION, vfolders

__all__ = ["create_group", "delete_group", "modify_group", "purge_group"]


def _check_domain(ctx: GqlContext, domain_name: str) -> None:
    if not ctx.is_superadmin and domain_name != ctx.auth.domain_name:
        raise Forbidden(f"projects of the domain {domain_name!r} are not yours to manage")


async def _values(conn: Connection, props: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in ("description", "is_active", "integration_id"):
        if props.get(name) is not None:
            values[name] = props[name]
    if props.get("name") is not None:
        values["name"] = check_slug(props["name"], "props.name")
    if props.get("total_resource_slots") is not None:
        values["total_resource_slots"] = parse_slots(
            props["total_resource_slots"], await slot_types(conn), "props.total_resource_slots"
        )
    if props.get("allowed_vfolder_hosts") is not None:
        values["allowed_vfolder_hosts"] = host_permissions(
            props["allowed_vfolder_hosts"], "props.allowed_vfolder_hosts"
        )
    if props.get("resource_policy") is not None:
        values["resource_policy"] = props["resource_policy"]
    return values


async def _refs(conn: Connection, domain_name: str, values: Mapping[str, Any]) -> str | None:
    if not await count(conn, domains, domains.c.name == domain_name):
        return f"no domain is named {domain_name!r}"
    policy = values.get("resource_policy")
    if policy is not None and not await policy_exists(conn, project_resource_policies, policy):
        return f"no project resource policy is named {policy!r}"
    name = values.get("name")
    if name is not None and await count(
        conn, groups, groups.c.name == name, groups.c.domain_name == domain_name
    ):
        return f"the domain {domain_name!r} has a project named {name!r} already"
    return None


def _load(info: Info, gid: uuid.UUID) -> dict[str, Any] | None:
    rows = context_of(info).read_rows(sa.select(groups).where(groups.c.id == gid))
    return group_item(rows[0]) if rows else None


def create_group(_root: Any, info: Info, name: str, props: Mapping[str, Any]) -> Any:
    """``create_group(name, props)``."""
    ctx = context_of(info)
    ctx.require_admin("creating projects")
    check_slug(name, "name")
    domain_name = props.get("domain_name")
    if not domain_name:
        raise InvalidValue("is required", value=domain_name, field="props.domain_name")
    _check_domain(ctx, domain_name)
    gid = uuid.uuid4()

    async def write(conn: Connection) -> str | None:
        values = await _values(conn, {**props, "name": name})
        values.setdefault("resource_policy", "default")
        problem = await _refs(conn, domain_name, values)
        if problem is None:
            await conn.execute(sa.insert(groups).values(id=gid, domain_name=domain_name, **values))
        return problem

    problem = write_unique(ctx, write, f"the domain has a project named {name!r} already")
    if problem is not None:
        return answer(False, problem, group=None)
    return answer(True, "success", group=_load(info, gid))


def _reference(gid: uuid.UUID | None, name: str | None) -> str:
    """How the project was named, for messages; exactly one of *gid* and *name* must be set."""
    if (gid is None) == (name is None):
        raise InvalidValue("name the project by gid or by name (one of them)", field="gid")
    return f"the id {gid}" if gid is not None else f"the name {name!r}"


async def _project(
    ctx: GqlContext, conn: Connection, gid: uuid.UUID | None, name: str | None
) -> Any | str:
    """The project's row, or why there is none the caller may name."""
    query = sa.select(groups)
    if gid is not None:
        query = query.where(groups.c.id == gid)
    else:
        query = query.where(groups.c.name == name)
        if not ctx.is_superadmin:
            query = query.where(groups.c.domain_name == ctx.auth.domain_name)
    rows = list(await conn.execute(query.limit(2)))
    if len(rows) > 1:
        return f"several projects are named {name!r}; name the project by gid"
    if not rows:
        return f"no project has {_reference(gid, name)}"
    _check_domain(ctx, rows[0].domain_name)
    return rows[0]


def _member_ids(value: Any) -> list[uuid.UUID]:
    ids = []
    for entry in value or ():
        try:
            ids.append(uuid.UUID(str(entry)))
        except ValueError:
            raise InvalidValue("is not a user id", value=entry, field="props.user_uuids") from None
    return list(dict.fromkeys(ids))


def modify_group(
    _root: Any,
    info: Info,
    props: Mapping[str, Any],
    gid: uuid.UUID | None = None,
    name: str | None = None,
) -> Any:
    """``modify_group(gid | name, props)`` (module docs)."""
    ctx = context_of(info)
    ctx.require_admin("modifying projects")
    _reference(gid, name)
    mode = props.get("user_update_mode")
    if mode not in (None, "add", "remove"):
        raise InvalidValue("must be add or remove", value=mode, field="props.user_update_mode")
    members = _member_ids(props.get("user_uuids"))
    if members and mode is None:
        raise InvalidValue(
            "user_update_mode (add or remove) must say what to do with them",
            value=[str(m) for m in members],
            field="props.user_uuids",
        )

    async def write(conn: Connection) -> uuid.UUID | str:
        """The project's id, or why nothing changed."""
        row = await _project(ctx, conn, gid, name)
        if isinstance(row, str):
            return row
        values = await _values(conn, props)
        if values.get("name") == row.name:
            del values["name"]
        domain_name = props.get("domain_name") or row.domain_name
        if domain_name != row.domain_name:
            ctx.require_superadmin("moving projects between domains")
            values["domain_name"] = domain_name
        problem = await _refs(conn, domain_name, values)
        if problem is not None:
            return problem
        if members:
            found = {
                r.uuid
                for r in await conn.execute(
                    sa.select(users.c.uuid).where(
                        users.c.uuid.in_(members), users.c.domain_name == domain_name
                    )
                )
            }
            missing = [str(m) for m in members if m not in found]
            if missing:
                return f"no user of the domain {domain_name!r} has the id(s) {', '.join(missing)}"
            current = {
                r.user_id
                for r in await conn.execute(
                    sa.select(association_groups_users.c.user_id).where(
                        association_groups_users.c.group_id == row.id
                    )
                )
            }
            if mode == "add":
                new = [m for m in members if m not in current]
                if new:
                    await conn.execute(
                        sa.insert(association_groups_users),
                        [{"user_id": m, "group_id": row.id} for m in new],
                    )
            else:
                await conn.execute(
                    sa.delete(association_groups_users).where(
                        association_groups_users.c.group_id == row.id,
                        association_groups_users.c.user_id.in_(members),
                    )
                )
        if values:
            await conn.execute(sa.update(groups).where(groups.c.id == row.id).values(**values))
        project_id: uuid.UUID = row.id
        return project_id

    outcome = write_unique(ctx, write, "the new name was taken meanwhile")
    if isinstance(outcome, str):
        return answer(False, outcome, group=None)
    return answer(True, "success", group=_load(info, outcome))


async def _in_use(conn: Connection, gid: uuid.UUID, *, any_folder: bool) -> str | None:
    reasons = []
    member_count = await count(
        conn, association_groups_users, association_groups_users.c.group_id == gid
    )
    if member_count:
        reasons.append(f"{member_count} member(s)")
    folder_filter = [vfolders.c.group == gid]
    if not any_folder:
        folder_filter.append(LIVE_CONDITION)
    folders = await count(conn, vfolders, *folder_filter)
    if folders:
        reasons.append(f"{folders} folder(s)")
    live = await count(conn, sessions, *live_sessions(sessions.c.group_id == gid))
    if live:
        reasons.append(f"{live} live session(s)")
    return f"the project still has {', '.join(reasons)}" if reasons else None


def delete_group(
    _root: Any, info: Info, gid: uuid.UUID | None = None, name: str | None = None
) -> Any:
    """``delete_group(gid | name)``: deactivates the project (module docs)."""
    ctx = context_of(info)
    ctx.require_admin("deleting projects")
    _reference(gid, name)

    async def write(conn: Connection) -> str | None:
        row = await _project(ctx, conn, gid, name)
        if isinstance(row, str):
            return row
        problem = await _in_use(conn, row.id, any_folder=False)
        if problem is None:
            await conn.execute(
                sa.update(groups)
                .where(groups.c.id == row.id)
                .values(is_active=False, integration_id=None)
            )
        return problem

    problem = ctx.write(write)
    return answer(problem is None, problem or "success")


def purge_group(
    _root: Any, info: Info, gid: uuid.UUID | None = None, name: str | None = None
) -> Any:
    """``purge_group(gid | name)``: removes the project (module docs)."""
    ctx = context_of(info)
    ctx.require_admin("purging projects")
    _reference(gid, name)

    async def write(conn: Connection) -> str | None:
        row = await _project(ctx, conn, gid, name)
        if isinstance(row, str):
            return row
        project_id = row.id
        problem = await _in_use(conn, project_id, any_folder=True)
        if problem is not None:
            return problem
        ended = sa.select(sessions.c.id).where(sessions.c.group_id == project_id)
        await conn.execute(sa.delete(kernels).where(kernels.c.session_id.in_(ended)))
        await conn.execute(sa.delete(sessions).where(sessions.c.group_id == project_id))
        await conn.execute(
            sa.delete(session_templates).where(session_templates.c.group_id == project_id)
        )
        await conn.execute(
            sa.delete(sgroups_for_groups).where(sgroups_for_groups.c.group == project_id)
        )
        await conn.execute(sa.delete(groups).where(groups.c.id == project_id))
        return None

    problem = ctx.write(write)
    return answer(problem is None, problem or "success")
