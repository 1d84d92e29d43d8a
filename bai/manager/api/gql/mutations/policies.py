"""Resource policies of keypairs, users and projects: mutations (superadmins) and the
user and project policies' query fields.

Keypair policies hold the session limits; user and project policies the
folder limits (``max_vfolder_count``, ``max_quota_scope_size``; 0 means no
limit).  A policy still named by a keypair, user or project cannot be
deleted (``ok: false`` with the count).

Queries: ``user_resource_policy(name)`` -- the caller's own when *name* is
omitted; another one needs an admin.  ``user_resource_policies`` -- admins.
``project_resource_policy(name)``, ``project_resource_policies`` -- admins
(a user reads a project's policy name from ``group``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import sqlalchemy as sa

from bai.common.errors import InvalidValue
from bai.common.slots import DefaultForUnspecified
from bai.manager.api.gql.context import Info, context_of
from bai.manager.api.gql.identity import policy_item
from bai.manager.api.gql.mutations.common import (
    answer,
    check_limit,
    count,
    host_permissions,
    parse_slots,
    slot_types,
    write_unique,
)
from bai.manager.db import Connection
from bai.manager.models.identity import (
    groups,
    keypair_resource_policies,
    keypairs,
    project_resource_policies,
    user_resource_policies,
    users,
)

__all__ = [
    "create_keypair_resource_policy",
    "create_project_resource_policy",
    "create_user_resource_policy",
    "delete_keypair_resource_policy",
    "delete_project_resource_policy",
    "delete_user_resource_policy",
    "modify_keypair_resource_policy",
    "modify_project_resource_policy",
    "modify_user_resource_policy",
    "policy_exists",
    "resolve_project_resource_policies",
    "resolve_project_resource_policy",
    "resolve_user_resource_policies",
    "resolve_user_resource_policy",
]

_POLICY_INTS: Final = (
    "max_session_lifetime",
    "max_concurrent_sessions",
    "max_containers_per_session",
    "idle_timeout",
    "max_vfolder_count",
    "max_vfolder_size",
    "max_pending_session_count",
)
# Accepted (the official client sends it) but not stored: bai has no SFTP-only sessions.
_NOT_STORED: Final = frozenset({"max_concurrent_sftp_sessions"})
_CHECKED_NAME: Final = "must be 1 to 256 characters"


def _check_name(name: str) -> None:
    if not name or len(name) > 256:
        raise InvalidValue(_CHECKED_NAME, value=name, field="name")


async def policy_exists(conn: Connection, table: sa.Table, name: str) -> bool:
    """Whether the policy table *table* has a policy *name*."""
    return bool(await count(conn, table, table.c.name == name))


# ------------------------------------------------------------------ keypair policies


def _keypair_policy_values(props: Mapping[str, Any], known: Mapping[str, Any]) -> dict[str, Any]:
    """Table values for the given policy properties (validated; unset ones left out)."""
    values: dict[str, Any] = {}
    for name, value in props.items():
        if name in _NOT_STORED:
            continue
        if value is None:
            if name in ("max_pending_session_count", "max_pending_session_resource_slots"):
                values[name] = None
            continue
        field = f"props.{name}"
        if name == "default_for_unspecified":
            try:
                values[name] = DefaultForUnspecified(str(value).upper())
            except ValueError:
                raise InvalidValue(
                    "must be LIMITED or UNLIMITED", value=value, field=field
                ) from None
        elif name in ("total_resource_slots", "max_pending_session_resource_slots"):
            values[name] = parse_slots(value, known, field)
        elif name in _POLICY_INTS:
            values[name] = check_limit(value, field)
        elif name == "allowed_vfolder_hosts":
            values[name] = host_permissions(value, field)
    return values


def _load_keypair_policy(info: Info, name: str) -> dict[str, Any] | None:
    rows = context_of(info).read_rows(
        sa.select(keypair_resource_policies).where(keypair_resource_policies.c.name == name)
    )
    return policy_item(rows[0]) if rows else None


def create_keypair_resource_policy(
    _root: Any, info: Info, name: str, props: Mapping[str, Any]
) -> Any:
    """``create_keypair_resource_policy(name, props)``."""
    ctx = context_of(info)
    ctx.require_superadmin("creating resource policies")
    _check_name(name)

    async def write(conn: Connection) -> bool:
        values = _keypair_policy_values(props, await slot_types(conn))
        if await policy_exists(conn, keypair_resource_policies, name):
            return False
        await conn.execute(sa.insert(keypair_resource_policies).values(name=name, **values))
        return True

    if not write_unique(ctx, write, False):
        return answer(False, f"a keypair resource policy named {name!r} already exists")
    return answer(True, "success", resource_policy=_load_keypair_policy(info, name))


def modify_keypair_resource_policy(
    _root: Any, info: Info, name: str, props: Mapping[str, Any]
) -> Any:
    """``modify_keypair_resource_policy(name, props)``: unset fields keep their values."""
    ctx = context_of(info)
    ctx.require_superadmin("modifying resource policies")

    async def write(conn: Connection) -> bool:
        values = _keypair_policy_values(props, await slot_types(conn))
        if not await policy_exists(conn, keypair_resource_policies, name):
            return False
        if values:
            await conn.execute(
                sa.update(keypair_resource_policies)
                .where(keypair_resource_policies.c.name == name)
                .values(**values)
            )
        return True

    if not ctx.write(write):
        return answer(False, f"no keypair resource policy is named {name!r}")
    return answer(True, "success", resource_policy=_load_keypair_policy(info, name))


def delete_keypair_resource_policy(_root: Any, info: Info, name: str) -> Any:
    """``delete_keypair_resource_policy(name)``: refused while keypairs use the policy."""
    ctx = context_of(info)
    ctx.require_superadmin("deleting resource policies")
    return _delete_policy(info, keypair_resource_policies, "keypair", name, keypairs)


# ------------------------------------------------------------ user and project policies

_FOLDER_LIMITS: Final = ("max_vfolder_count", "max_quota_scope_size")


def _folder_policy_values(props: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: check_limit(props[name], f"props.{name}")
        for name in _FOLDER_LIMITS
        if props.get(name) is not None
    }


def _folder_policy_item(row: Any) -> dict[str, Any]:
    return {
        "id": row.name,
        "name": row.name,
        "created_at": row.created_at,
        "max_vfolder_count": row.max_vfolder_count,
        "max_quota_scope_size": row.max_quota_scope_size,
    }


def _load_folder_policies(info: Info, table: sa.Table, *conditions: Any) -> list[dict[str, Any]]:
    rows = context_of(info).read_rows(sa.select(table).where(*conditions).order_by(table.c.name))
    return [_folder_policy_item(row) for row in rows]


def _create_folder_policy(
    info: Info, table: sa.Table, kind: str, name: str, props: Mapping[str, Any]
) -> Any:
    ctx = context_of(info)
    ctx.require_superadmin("creating resource policies")
    _check_name(name)
    values = _folder_policy_values(props)

    async def write(conn: Connection) -> bool:
        if await policy_exists(conn, table, name):
            return False
        await conn.execute(sa.insert(table).values(name=name, **values))
        return True

    if not write_unique(ctx, write, False):
        return answer(False, f"a {kind} resource policy named {name!r} already exists")
    created = _load_folder_policies(info, table, table.c.name == name)
    return answer(True, "success", resource_policy=created[0] if created else None)


def _modify_folder_policy(
    info: Info, table: sa.Table, kind: str, name: str, props: Mapping[str, Any]
) -> Any:
    ctx = context_of(info)
    ctx.require_superadmin("modifying resource policies")
    values = _folder_policy_values(props)

    async def write(conn: Connection) -> bool:
        if not await policy_exists(conn, table, name):
            return False
        if values:
            await conn.execute(sa.update(table).where(table.c.name == name).values(**values))
        return True

    if not ctx.write(write):
        return answer(False, f"no {kind} resource policy is named {name!r}")
    modified = _load_folder_policies(info, table, table.c.name == name)
    return answer(True, "success", resource_policy=modified[0] if modified else None)


def _delete_policy(info: Info, table: sa.Table, kind: str, name: str, users_of: sa.Table) -> Any:
    async def write(conn: Connection) -> str | None:
        using = await count(conn, users_of, users_of.c.resource_policy == name)
        if using:
            return f"{using} {users_of.name} row(s) still use the {kind} resource policy {name!r}"
        result = await conn.execute(sa.delete(table).where(table.c.name == name))
        return None if result.rowcount else f"no {kind} resource policy is named {name!r}"

    problem = context_of(info).write(write)
    return answer(problem is None, problem or "success")


def create_user_resource_policy(_root: Any, info: Info, name: str, props: Mapping[str, Any]) -> Any:
    """``create_user_resource_policy(name, props)``."""
    return _create_folder_policy(info, user_resource_policies, "user", name, props)


def modify_user_resource_policy(_root: Any, info: Info, name: str, props: Mapping[str, Any]) -> Any:
    """``modify_user_resource_policy(name, props)``: unset fields keep their values."""
    return _modify_folder_policy(info, user_resource_policies, "user", name, props)


def delete_user_resource_policy(_root: Any, info: Info, name: str) -> Any:
    """``delete_user_resource_policy(name)``: refused while users use it."""
    context_of(info).require_superadmin("deleting resource policies")
    return _delete_policy(info, user_resource_policies, "user", name, users)


def create_project_resource_policy(
    _root: Any, info: Info, name: str, props: Mapping[str, Any]
) -> Any:
    """``create_project_resource_policy(name, props)``."""
    return _create_folder_policy(info, project_resource_policies, "project", name, props)


def modify_project_resource_policy(
    _root: Any, info: Info, name: str, props: Mapping[str, Any]
) -> Any:
    """``modify_project_resource_policy(name, props)``: unset fields keep their values."""
    return _modify_folder_policy(info, project_resource_policies, "project", name, props)


def delete_project_resource_policy(_root: Any, info: Info, name: str) -> Any:
    """``delete_project_resource_policy(name)``: refused while projects use it."""
    context_of(info).require_superadmin("deleting resource policies")
    return _delete_policy(info, project_resource_policies, "project", name, groups)


# ------------------------------------------------------------------------- queries


def resolve_user_resource_policy(_root: Any, info: Info, name: str | None = None) -> Any:
    """``user_resource_policy(name)``: the caller's own policy when *name* is omitted."""
    ctx = context_of(info)
    if name is None:
        own = sa.select(users.c.resource_policy).where(users.c.uuid == ctx.auth.user_id)
        found = _load_folder_policies(
            info, user_resource_policies, user_resource_policies.c.name.in_(own)
        )
    else:
        ctx.require_admin("reading other resource policies")
        found = _load_folder_policies(
            info, user_resource_policies, user_resource_policies.c.name == name
        )
    return found[0] if found else None


def resolve_user_resource_policies(_root: Any, info: Info) -> Any:
    """``user_resource_policies``: admins only."""
    context_of(info).require_admin("listing resource policies")
    return _load_folder_policies(info, user_resource_policies)


def resolve_project_resource_policy(_root: Any, info: Info, name: str) -> Any:
    """``project_resource_policy(name)``: admins only."""
    context_of(info).require_admin("reading project resource policies")
    found = _load_folder_policies(
        info, project_resource_policies, project_resource_policies.c.name == name
    )
    return found[0] if found else None


def resolve_project_resource_policies(_root: Any, info: Info) -> Any:
    """``project_resource_policies``: admins only."""
    context_of(info).require_admin("listing resource policies")
    return _load_folder_policies(info, project_resource_policies)
