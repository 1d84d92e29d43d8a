"""Domains, projects (groups), users, keypairs and keypair resource policies, read-only.

Who sees what (the module docs of :mod:`bai.manager.api.gql.context` give
the general rule):

* ``domain(name)`` -- the caller's own domain when *name* is omitted;
  others only for superadmins.  ``domains`` -- superadmins only.
* ``group(id)``, ``groups``, ``groups_by_name`` -- superadmins all, domain
  admins their domain's, users the projects they belong to.
* ``user(email)``, ``user_from_uuid(user_id)`` -- the caller when omitted;
  admins may name users of their domain.  ``users``, ``user_list`` --
  admins only.
* ``keypair(access_key)`` -- the caller's keypair when omitted.
  ``keypair``, ``keypairs``, ``keypair_list`` show superadmins every keypair,
  domain admins the keypairs of their domain's users except superadmins'
  (whose secret keys would let them act as superadmins), users their own.
* ``keypair_resource_policy(name)`` -- the caller's policy when omitted;
  ``keypair_resource_policies`` -- superadmins all, others the policies of
  the keypairs they may see.

Anything named that the caller may not see is ``null`` (or left out of a
list), as if it did not exist; naming another domain, user or access key
where only one's own is allowed is an error.  ``User.is_active`` is
``status == "active"``; bai has no TOTP or sudo sessions, so
``totp_activated`` and ``sudo_session_enabled`` are ``false``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

import sqlalchemy as sa

from bai.common.errors import InvalidValue
from bai.manager.api.gql.context import GqlContext, Info, context_of, with_siblings
from bai.manager.api.gql.filters import Field, Kind, enum_field, parse_filter
from bai.manager.api.gql.pages import check_page, order_terms, read_page
from bai.manager.db import Connection
from bai.manager.models.identity import (
    UserRole,
    UserStatus,
    association_groups_users,
    domains,
    groups,
    keypair_resource_policies,
    keypairs,
    users,
)
from bai.manager.models.resource import sgroups_for_domains, sgroups_for_groups
from bai.manager.models.usage import keypair_concurrency

__all__ = [
    "KEYPAIR_FIELDS",
    "USER_FIELDS",
    "domain_item",
    "group_item",
    "keypair_item",
    "load_keypairs",
    "policy_item",
    "resolve_domain",
    "resolve_domain_scaling_groups",
    "resolve_domains",
    "resolve_group",
    "resolve_group_scaling_groups",
    "resolve_groups",
    "resolve_groups_by_name",
    "resolve_keypair",
    "resolve_keypair_concurrency_used",
    "resolve_keypair_list",
    "resolve_keypair_policies",
    "resolve_keypair_policy",
    "resolve_keypair_projects",
    "resolve_keypair_user_info",
    "resolve_keypairs",
    "resolve_user",
    "resolve_user_from_uuid",
    "resolve_user_groups",
    "resolve_user_list",
    "resolve_user_main_access_key",
    "resolve_users",
    "string_list",
    "visible_keypairs",
]


def _grouped(rows: Sequence[Any], key: str, value: str) -> dict[Any, list[Any]]:
    """``{row.<key>: [row.<value>, ...]}`` in the rows' order."""
    found: dict[Any, list[Any]] = {}
    for row in rows:
        found.setdefault(getattr(row, key), []).append(getattr(row, value))
    return found


def string_list(value: Any) -> list[str]:
    """A JSON list (or an object's keys, for per-host permission maps) as strings."""
    if isinstance(value, Mapping):
        return [str(k) for k in value]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return []


# ------------------------------------------------------------------------ domains


def domain_item(row: Any) -> dict[str, Any]:
    """A domains row as a ``Domain``."""
    return {
        "name": row.name,
        "description": row.description,
        "is_active": row.is_active,
        "created_at": row.created_at,
        "modified_at": row.modified_at,
        "total_resource_slots": row.total_resource_slots,
        "allowed_vfolder_hosts": string_list(row.allowed_vfolder_hosts),
        "allowed_docker_registries": string_list(row.allowed_docker_registries),
        "integration_id": row.integration_id,
    }


def resolve_domain(_root: Any, info: Info, name: str | None = None) -> Any:
    """``domain(name)``."""
    ctx = context_of(info)
    wanted = ctx.domain_scope(name) or ctx.auth.domain_name
    rows = ctx.read_rows(sa.select(domains).where(domains.c.name == wanted))
    return domain_item(rows[0]) if rows else None


def resolve_domains(_root: Any, info: Info, is_active: bool | None = None) -> Any:
    """``domains(is_active)``: superadmins only."""
    ctx = context_of(info)
    ctx.require_superadmin("listing domains")
    query = sa.select(domains).order_by(domains.c.name)
    if is_active is not None:
        query = query.where(domains.c.is_active.is_(is_active))
    return with_siblings([domain_item(row) for row in ctx.read_rows(query)])


def resolve_domain_scaling_groups(domain: Mapping[str, Any], info: Info) -> Any:
    """``Domain.scaling_groups``: the names of the resource groups associated with it."""
    ctx = context_of(info)

    def load(names: list[str]) -> dict[Any, list[Any]]:
        query = (
            sa.select(sgroups_for_domains.c.domain, sgroups_for_domains.c.scaling_group)
            .where(sgroups_for_domains.c.domain.in_(names))
            .order_by(sgroups_for_domains.c.scaling_group)
        )
        return _grouped(ctx.read_rows(query), "domain", "scaling_group")

    return ctx.batch("Domain.scaling_groups", domain, "name", load, [])


# ------------------------------------------------------------------------- groups


def group_item(row: Any) -> dict[str, Any]:
    """A groups row as a ``Group``."""
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "is_active": row.is_active,
        "created_at": row.created_at,
        "modified_at": row.modified_at,
        "domain_name": row.domain_name,
        "total_resource_slots": row.total_resource_slots,
        "allowed_vfolder_hosts": string_list(row.allowed_vfolder_hosts),
        "integration_id": row.integration_id,
        "resource_policy": row.resource_policy,
    }


def _group_scope(ctx: GqlContext, domain_name: str | None) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    domain = ctx.domain_scope(domain_name)
    if domain is not None:
        conditions.append(groups.c.domain_name == domain)
    if not ctx.is_admin:
        member_of = sa.select(association_groups_users.c.group_id).where(
            association_groups_users.c.user_id == ctx.auth.user_id
        )
        conditions.append(groups.c.id.in_(member_of))
    return conditions


def _groups(ctx: GqlContext, conditions: Sequence[sa.ColumnElement[bool]]) -> list[Any]:
    query = (
        sa.select(groups)
        .where(sa.and_(sa.true(), *conditions))
        .order_by(groups.c.domain_name, groups.c.name)
    )
    return with_siblings([group_item(row) for row in ctx.read_rows(query)])


def resolve_group(_root: Any, info: Info, id: uuid.UUID, domain_name: str | None = None) -> Any:
    """``group(id, domain_name)``."""
    ctx = context_of(info)
    found = _groups(ctx, [*_group_scope(ctx, domain_name), groups.c.id == id])
    return found[0] if found else None


def resolve_groups(
    _root: Any,
    info: Info,
    domain_name: str | None = None,
    is_active: bool | None = None,
) -> Any:
    """``groups(domain_name, is_active)``."""
    ctx = context_of(info)
    conditions = _group_scope(ctx, domain_name)
    if is_active is not None:
        conditions.append(groups.c.is_active.is_(is_active))
    return _groups(ctx, conditions)


def resolve_groups_by_name(
    _root: Any, info: Info, name: str, domain_name: str | None = None
) -> Any:
    """``groups_by_name(name, domain_name)``: one per domain holding a project so named."""
    ctx = context_of(info)
    return _groups(ctx, [*_group_scope(ctx, domain_name), groups.c.name == name])


def resolve_group_scaling_groups(group: Mapping[str, Any], info: Info) -> Any:
    """``Group.scaling_groups``: names of the resource groups associated with the project."""
    ctx = context_of(info)

    def load(ids: list[uuid.UUID]) -> dict[Any, list[Any]]:
        query = (
            sa.select(sgroups_for_groups.c.group, sgroups_for_groups.c.scaling_group)
            .where(sgroups_for_groups.c.group.in_(ids))
            .order_by(sgroups_for_groups.c.scaling_group)
        )
        return _grouped(ctx.read_rows(query), "group", "scaling_group")

    return ctx.batch("Group.scaling_groups", group, "id", load, [])


# -------------------------------------------------------------------------- users

#: Fields of ``user_list``'s ``filter`` and ``order``.
USER_FIELDS: Final[Mapping[str, Field]] = {
    "uuid": Field(users.c.uuid, Kind.UUID),
    "username": Field(users.c.username, Kind.STRING),
    "email": Field(users.c.email, Kind.STRING),
    "full_name": Field(users.c.full_name, Kind.STRING),
    "description": Field(users.c.description, Kind.STRING),
    "domain_name": Field(users.c.domain_name, Kind.STRING),
    "role": enum_field(users.c.role, UserRole),
    "status": enum_field(users.c.status, UserStatus),
    "status_info": Field(users.c.status_info, Kind.STRING),
    "need_password_change": Field(users.c.need_password_change, Kind.BOOLEAN),
    "resource_policy": Field(users.c.resource_policy, Kind.STRING),
    "created_at": Field(users.c.created_at, Kind.DATETIME),
    "modified_at": Field(users.c.modified_at, Kind.DATETIME),
}


def _user_item(row: Any) -> dict[str, Any]:
    status = str(row.status)
    return {
        "uuid": row.uuid,
        "id": str(row.uuid),
        "username": row.username,
        "email": row.email,
        "need_password_change": row.need_password_change,
        "full_name": row.full_name,
        "description": row.description,
        "is_active": status == UserStatus.ACTIVE,
        "status": status,
        "status_info": row.status_info,
        "created_at": row.created_at,
        "modified_at": row.modified_at,
        "domain_name": row.domain_name,
        "role": str(row.role),
        "resource_policy": row.resource_policy,
        "allowed_client_ip": string_list(row.allowed_client_ip),
        "totp_activated": False,
        "sudo_session_enabled": False,
    }


def _user_filters(
    ctx: GqlContext,
    *,
    domain_name: str | None,
    group_id: uuid.UUID | None = None,
    is_active: bool | None = None,
    status: str | None = None,
) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    domain = ctx.domain_scope(domain_name)
    if domain is not None:
        conditions.append(users.c.domain_name == domain)
    if group_id is not None:
        conditions.append(
            users.c.uuid.in_(
                sa.select(association_groups_users.c.user_id).where(
                    association_groups_users.c.group_id == group_id
                )
            )
        )
    if status is not None:
        try:
            conditions.append(users.c.status == UserStatus(status.lower()))
        except ValueError:
            raise InvalidValue(
                f"is not a user status (choose from {', '.join(UserStatus)})",
                value=status,
                field="status",
            ) from None
    if is_active is not None:
        active = users.c.status == UserStatus.ACTIVE
        conditions.append(active if is_active else sa.not_(active))
    return conditions


def _one_user(ctx: GqlContext, conditions: Sequence[sa.ColumnElement[bool]]) -> Any:
    rows = ctx.read_rows(sa.select(users).where(*conditions).limit(1))
    return _user_item(rows[0]) if rows else None


def resolve_user(
    _root: Any, info: Info, domain_name: str | None = None, email: str | None = None
) -> Any:
    """``user(domain_name, email)``: the caller when *email* is omitted."""
    ctx = context_of(info)
    wanted = ctx.own_only(email, ctx.auth.email, "user") or ctx.auth.email
    return _one_user(ctx, [*_user_filters(ctx, domain_name=domain_name), users.c.email == wanted])


def resolve_user_from_uuid(
    _root: Any, info: Info, domain_name: str | None = None, user_id: str | None = None
) -> Any:
    """``user_from_uuid(domain_name, user_id)``: the caller when *user_id* is omitted."""
    ctx = context_of(info)
    own = str(ctx.auth.user_id)
    wanted_text = user_id
    if wanted_text is not None:
        try:
            wanted_text = str(uuid.UUID(wanted_text))
        except ValueError:
            raise InvalidValue("is not a UUID", value=user_id, field="user_id") from None
    wanted = ctx.own_only(wanted_text, own, "user") or own
    return _one_user(
        ctx, [*_user_filters(ctx, domain_name=domain_name), users.c.uuid == uuid.UUID(wanted)]
    )


def resolve_users(
    _root: Any,
    info: Info,
    domain_name: str | None = None,
    group_id: uuid.UUID | None = None,
    is_active: bool | None = None,
    status: str | None = None,
) -> Any:
    """``users(domain_name, group_id, is_active, status)``: admins only."""
    ctx = context_of(info)
    ctx.require_admin("listing users")
    conditions = _user_filters(
        ctx, domain_name=domain_name, group_id=group_id, is_active=is_active, status=status
    )
    query = sa.select(users).where(*conditions).order_by(users.c.created_at, users.c.email)
    return with_siblings([_user_item(row) for row in ctx.read_rows(query)])


def resolve_user_list(
    _root: Any,
    info: Info,
    limit: int,
    offset: int,
    domain_name: str | None = None,
    group_id: uuid.UUID | None = None,
    is_active: bool | None = None,
    status: str | None = None,
    filter: str | None = None,
    order: str | None = None,
) -> Any:
    """``user_list``: one page of users; admins only."""
    ctx = context_of(info)
    ctx.require_admin("listing users")
    check_page(limit, offset)
    conditions = _user_filters(
        ctx, domain_name=domain_name, group_id=group_id, is_active=is_active, status=status
    )
    if filter:
        conditions.append(parse_filter(filter, USER_FIELDS))
    ordering = order_terms(
        USER_FIELDS, (users.c.created_at, users.c.email), users.c.uuid, order=order
    )

    async def read(conn: Connection) -> tuple[list[Any], int]:
        return await read_page(
            conn, users, (users,), conditions, ordering, limit=limit, offset=offset
        )

    rows, total = ctx.read(read)
    return {"items": with_siblings([_user_item(row) for row in rows]), "total_count": total}


def resolve_user_groups(user: Mapping[str, Any], info: Info) -> Any:
    """``User.groups``: the projects the user belongs to, as ``{id, name}``."""
    return _groups_of(context_of(info), user, "uuid")


def _groups_of(ctx: GqlContext, item: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """The projects of the user whose UUID is ``item[key]`` (batched over its siblings)."""

    def load(user_ids: list[uuid.UUID]) -> dict[Any, list[Any]]:
        member = association_groups_users.c.user_id
        query = (
            sa.select(member.label("user_id"), groups.c.id, groups.c.name)
            .join(association_groups_users, association_groups_users.c.group_id == groups.c.id)
            .where(member.in_(user_ids))
            .order_by(groups.c.name, groups.c.id)
        )
        found: dict[Any, list[Any]] = {}
        for row in ctx.read_rows(query):
            found.setdefault(row.user_id, []).append({"id": row.id, "name": row.name})
        return found

    groups_of: list[dict[str, Any]] = ctx.batch("User.groups", item, key, load, [])
    return groups_of


def resolve_user_main_access_key(user: Mapping[str, Any], info: Info) -> Any:
    """``User.main_access_key``: the keypair ``/auth/authorize`` hands out for the user."""
    ctx = context_of(info)

    def load(user_ids: list[uuid.UUID]) -> dict[Any, str]:
        query = (
            sa.select(keypairs.c.user, keypairs.c.access_key)
            .where(keypairs.c.user.in_(user_ids), keypairs.c.is_active.is_(True))
            .order_by(keypairs.c.is_admin.desc(), keypairs.c.created_at, keypairs.c.access_key)
        )
        found: dict[Any, str] = {}
        for row in ctx.read_rows(query):
            found.setdefault(row.user, row.access_key)
        return found

    return ctx.batch("User.main_access_key", user, "uuid", load, None)


# ----------------------------------------------------------------------- keypairs

_KEYPAIR_FROM: Final = keypairs.join(users, users.c.uuid == keypairs.c.user)
_KEYPAIR_COLUMNS: Final = (
    keypairs,
    users.c.domain_name.label("owner_domain"),
    users.c.full_name.label("owner_full_name"),
    users.c.email.label("owner_email"),
)

#: Fields of ``keypair_list``'s ``filter`` and ``order``.
KEYPAIR_FIELDS: Final[Mapping[str, Field]] = {
    "access_key": Field(keypairs.c.access_key, Kind.STRING),
    "user_id": Field(keypairs.c.user_id, Kind.STRING),
    "email": Field(users.c.email, Kind.STRING),
    "full_name": Field(users.c.full_name, Kind.STRING),
    "domain_name": Field(users.c.domain_name, Kind.STRING),
    "is_active": Field(keypairs.c.is_active, Kind.BOOLEAN),
    "is_admin": Field(keypairs.c.is_admin, Kind.BOOLEAN),
    "resource_policy": Field(keypairs.c.resource_policy, Kind.STRING),
    "rate_limit": Field(keypairs.c.rate_limit, Kind.INTEGER),
    "num_queries": Field(keypairs.c.num_queries, Kind.INTEGER),
    "created_at": Field(keypairs.c.created_at, Kind.DATETIME),
    "modified_at": Field(keypairs.c.modified_at, Kind.DATETIME),
    "last_used": Field(keypairs.c.last_used, Kind.DATETIME),
}


def keypair_item(row: Any) -> dict[str, Any]:
    """A keypairs row (joined with its owner) as a ``KeyPair``."""
    return {
        "user_id": row.user_id,
        "access_key": row.access_key,
        "secret_key": row.secret_key,
        "is_active": row.is_active,
        "is_admin": row.is_admin,
        "resource_policy": row.resource_policy,
        "created_at": row.created_at,
        "modified_at": row.modified_at,
        "last_used": row.last_used,
        "rate_limit": row.rate_limit,
        "num_queries": row.num_queries,
        "user": row.user,
        "domain_name": row.owner_domain,
        "ssh_public_key": row.ssh_public_key,
        "user_info": {"email": row.owner_email, "full_name": row.owner_full_name},
    }


def visible_keypairs(ctx: GqlContext, domain_name: str | None) -> list[sa.ColumnElement[bool]]:
    """Conditions (over keypairs joined with users) for the keypairs the caller may see."""
    conditions: list[sa.ColumnElement[bool]] = []
    domain = ctx.domain_scope(domain_name)
    if domain is not None:
        conditions.append(users.c.domain_name == domain)
    if not ctx.is_admin:
        conditions.append(keypairs.c.user == ctx.auth.user_id)
    elif not ctx.is_superadmin:
        conditions.append(users.c.role != UserRole.SUPERADMIN)
    return conditions


def load_keypairs(
    ctx: GqlContext, conditions: Sequence[sa.ColumnElement[bool]]
) -> list[dict[str, Any]]:
    """Keypairs matching *conditions* as ``KeyPair`` items, oldest first."""
    query = (
        sa.select(*_KEYPAIR_COLUMNS)
        .select_from(_KEYPAIR_FROM)
        .where(sa.and_(sa.true(), *conditions))
        .order_by(keypairs.c.created_at, keypairs.c.access_key)
    )
    return with_siblings([keypair_item(row) for row in ctx.read_rows(query)])


def _keypair_filters(
    ctx: GqlContext, domain_name: str | None, email: str | None, is_active: bool | None
) -> list[sa.ColumnElement[bool]]:
    conditions = visible_keypairs(ctx, domain_name)
    wanted = ctx.own_only(email, ctx.auth.email, "keypairs")
    if wanted is not None:
        conditions.append(keypairs.c.user_id == wanted)
    if is_active is not None:
        conditions.append(keypairs.c.is_active.is_(is_active))
    return conditions


def resolve_keypair(
    _root: Any,
    info: Info,
    domain_name: str | None = None,
    access_key: str | None = None,
) -> Any:
    """``keypair(domain_name, access_key)``: the caller's keypair when *access_key* is omitted."""
    ctx = context_of(info)
    wanted = ctx.own_only(access_key, ctx.auth.access_key, "keypair") or ctx.auth.access_key
    found = load_keypairs(
        ctx, [*visible_keypairs(ctx, domain_name), keypairs.c.access_key == wanted]
    )
    return found[0] if found else None


def resolve_keypairs(
    _root: Any,
    info: Info,
    domain_name: str | None = None,
    email: str | None = None,
    is_active: bool | None = None,
) -> Any:
    """``keypairs(domain_name, email, is_active)``."""
    ctx = context_of(info)
    return load_keypairs(ctx, _keypair_filters(ctx, domain_name, email, is_active))


def resolve_keypair_list(
    _root: Any,
    info: Info,
    limit: int,
    offset: int,
    domain_name: str | None = None,
    email: str | None = None,
    is_active: bool | None = None,
    filter: str | None = None,
    order: str | None = None,
) -> Any:
    """``keypair_list``: one page of the keypairs the caller may see."""
    ctx = context_of(info)
    check_page(limit, offset)
    conditions = _keypair_filters(ctx, domain_name, email, is_active)
    if filter:
        conditions.append(parse_filter(filter, KEYPAIR_FIELDS))
    ordering = order_terms(
        KEYPAIR_FIELDS,
        (keypairs.c.created_at, keypairs.c.access_key),
        keypairs.c.access_key,
        order=order,
    )

    async def read(conn: Connection) -> tuple[list[Any], int]:
        return await read_page(
            conn,
            _KEYPAIR_FROM,
            _KEYPAIR_COLUMNS,
            conditions,
            ordering,
            limit=limit,
            offset=offset,
        )

    rows, total = ctx.read(read)
    return {"items": with_siblings([keypair_item(row) for row in rows]), "total_count": total}


def resolve_keypair_concurrency_used(keypair: Mapping[str, Any], info: Info) -> Any:
    """``KeyPair.concurrency_used``: its sessions that hold (or are about to hold) resources."""
    ctx = context_of(info)

    def load(access_keys: list[str]) -> Mapping[Any, int]:
        async def read(conn: Connection) -> Mapping[Any, int]:
            return await keypair_concurrency(conn, access_keys)

        return ctx.read(read)

    return ctx.batch("KeyPair.concurrency_used", keypair, "access_key", load, 0)


def resolve_keypair_projects(keypair: Mapping[str, Any], info: Info) -> Any:
    """``KeyPair.projects``: names of the projects the keypair's user belongs to."""
    return [group["name"] for group in _groups_of(context_of(info), keypair, "user")]


def resolve_keypair_user_info(keypair: Mapping[str, Any], _info: Info) -> Any:
    """``KeyPair.user_info``: the owner's email and full name."""
    return keypair["user_info"]


# ------------------------------------------------------------ keypair resource policies


def policy_item(row: Any) -> dict[str, Any]:
    """A keypair_resource_policies row as a ``KeyPairResourcePolicy``."""
    return {
        "name": row.name,
        "created_at": row.created_at,
        "default_for_unspecified": str(row.default_for_unspecified),
        "total_resource_slots": row.total_resource_slots,
        "max_session_lifetime": row.max_session_lifetime,
        "max_concurrent_sessions": row.max_concurrent_sessions,
        "max_pending_session_count": row.max_pending_session_count,
        "max_pending_session_resource_slots": row.max_pending_session_resource_slots,
        "max_containers_per_session": row.max_containers_per_session,
        "idle_timeout": row.idle_timeout,
        "allowed_vfolder_hosts": string_list(row.allowed_vfolder_hosts),
        "max_vfolder_count": row.max_vfolder_count,
        "max_vfolder_size": row.max_vfolder_size,
    }


def _visible_policies(ctx: GqlContext) -> list[sa.ColumnElement[bool]]:
    if ctx.is_superadmin:
        return []
    used = (
        sa.select(keypairs.c.resource_policy)
        .select_from(_KEYPAIR_FROM)
        .where(sa.and_(sa.true(), *visible_keypairs(ctx, None)))
    )
    return [keypair_resource_policies.c.name.in_(used)]


def resolve_keypair_policy(_root: Any, info: Info, name: str | None = None) -> Any:
    """``keypair_resource_policy(name)``: the caller's keypair's policy when omitted."""
    ctx = context_of(info)
    wanted = name if name is not None else ctx.auth.resource_policy
    query = sa.select(keypair_resource_policies).where(
        keypair_resource_policies.c.name == wanted, *_visible_policies(ctx)
    )
    rows = ctx.read_rows(query)
    return policy_item(rows[0]) if rows else None


def resolve_keypair_policies(_root: Any, info: Info) -> Any:
    """``keypair_resource_policies``."""
    ctx = context_of(info)
    query = (
        sa.select(keypair_resource_policies)
        .where(sa.and_(sa.true(), *_visible_policies(ctx)))
        .order_by(keypair_resource_policies.c.name)
    )
    return [policy_item(row) for row in ctx.read_rows(query)]
