"""User mutations: ``create_user``, ``modify_user``, ``delete_user``, ``purge_user``.

Who may: superadmins anyone; domain admins the users of their own domain,
never a superadmin, never making one, never moving a user to another
domain (each a GraphQL ``forbidden`` error).  Nobody deletes or purges
their own account.

* ``create_user(email, props)`` hashes the password
  (:func:`~bai.manager.models.identity.hash_password`), inserts the user,
  a keypair (policy ``default``; admin keypair for admins; active when the
  user is) and the memberships of ``group_ids`` (projects of the user's
  domain), all in one transaction.  A taken email or username, an unknown
  domain, policy or project is ``ok: false`` and nothing is written.
* ``modify_user(email, props)`` changes the given fields; a status change
  (``status`` or ``is_active``) (de)activates the user's keypairs, a role
  change their admin flag; ``group_ids`` replaces the memberships; a new
  password clears nothing else but restarts the password's age.
* ``delete_user(email)`` marks the user ``deleted`` and deactivates their
  keypairs (rows stay, as in the official manager).
* ``purge_user(email, props)`` removes the user for good: refused while
  they have live sessions or own folders (live or in the trash: purge or
  hand them over first, so no data goes by surprise); their ended sessions,
  keypairs, memberships, grants, invitations and session templates go with
  them; error reports keep their text without the user.

``totp_activated`` and ``sudo_session_enabled`` may only be false: bai has
neither.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa

from bai.common.errors import InvalidValue
from bai.manager.api.errors import Forbidden
from bai.manager.api.gql import identity
from bai.manager.api.gql.context import GqlContext, Info, context_of
from bai.manager.api.gql.mutations.common import (
    answer,
    check_client_ips,
    count,
    write_unique,
)
from bai.manager.api.gql.mutations.domains import live_sessions
from bai.manager.api.gql.mutations.policies import policy_exists
from bai.manager.db import Connection
from bai.manager.models.errorlog import error_logs
from bai.manager.models.identity import (
    UserRole,
    UserStatus,
    association_groups_users,
    domains,
    generate_access_key,
    generate_secret_key,
    groups,
    hash_password,
    keypair_resource_policies,
    keypairs,
    user_resource_policies,
    users,
)
from bai.manager.models.resource import sgroups_for_keypairs
from bai.manager.models.session import kernels, session_templates, sessions
from bai.manager.models.vfolder import vfolder_invitations, vfolder_permissions, vfolders

__all__ = ["create_user", "delete_user", "modify_user", "purge_user"]

_EMAIL_MAX: Final = 64
_ADMIN_ROLES: Final = frozenset({UserRole.SUPERADMIN, UserRole.ADMIN})


def _check_email(email: str, field: str = "email") -> str:
    local, at, host = email.partition("@")
    if not at or not local or not host or "@" in host or any(c.isspace() for c in email):
        raise InvalidValue("is not an email address", value=email, field=field)
    if len(email) > _EMAIL_MAX:
        raise InvalidValue(f"must be at most {_EMAIL_MAX} characters", value=email, field=field)
    return email


def _role(value: Any) -> UserRole:
    try:
        return UserRole(str(value).lower())
    except ValueError:
        raise InvalidValue(
            f"is not a role (choose from {', '.join(UserRole)})", value=value, field="props.role"
        ) from None


def _status(props: Mapping[str, Any]) -> UserStatus | None:
    if props.get("status") is not None:
        try:
            return UserStatus(str(props["status"]).lower())
        except ValueError:
            raise InvalidValue(
                f"is not a user status (choose from {', '.join(UserStatus)})",
                value=props["status"],
                field="props.status",
            ) from None
    if props.get("is_active") is not None:
        return UserStatus.ACTIVE if props["is_active"] else UserStatus.INACTIVE
    return None


def _group_ids(value: Any) -> list[uuid.UUID]:
    ids = []
    for entry in value:
        try:
            ids.append(uuid.UUID(str(entry)))
        except ValueError:
            raise InvalidValue(
                "is not a project id", value=entry, field="props.group_ids"
            ) from None
    return list(dict.fromkeys(ids))


def _plain_values(props: Mapping[str, Any]) -> dict[str, Any]:
    """The checked columns that need no database look-up."""
    values: dict[str, Any] = {}
    for name in ("totp_activated", "sudo_session_enabled"):
        if props.get(name):
            raise InvalidValue(
                "is not supported by bai (must be false)", value=True, field=f"props.{name}"
            )
    if props.get("username") is not None:
        username = props["username"]
        if not 1 <= len(username) <= 64:
            raise InvalidValue("must be 1 to 64 characters", value=username, field="props.username")
        values["username"] = username
    for name, limit in (("full_name", 64), ("description", 10_000)):
        if props.get(name) is not None:
            if len(props[name]) > limit:
                raise InvalidValue(
                    f"must be at most {limit} characters", value=props[name], field=f"props.{name}"
                )
            values[name] = props[name]
    if props.get("need_password_change") is not None:
        values["need_password_change"] = props["need_password_change"]
    if "allowed_client_ip" in props:
        values["allowed_client_ip"] = check_client_ips(
            props["allowed_client_ip"], "props.allowed_client_ip"
        )
    if props.get("role") is not None:
        values["role"] = _role(props["role"])
    status = _status(props)
    if status is not None:
        values["status"] = status
        values["status_info"] = "admin-requested"
    if props.get("password") is not None:
        if not props["password"]:
            raise InvalidValue("must not be empty", value="", field="props.password")
        # PBKDF2 takes ~0.1 s: resolvers run in a worker thread, not on the event loop.
        values["password"] = hash_password(props["password"])
        values["password_changed_at"] = datetime.now(UTC)
    return values


def _check_target(ctx: GqlContext, domain_name: str, role: UserRole, what: str) -> None:
    """Forbidden unless the caller may manage a user of *domain_name* with *role*."""
    if not ctx.may_manage_user(domain_name, role):
        if ctx.is_admin and role is UserRole.SUPERADMIN:
            raise Forbidden(f"{what} a superadmin needs superadmin privileges")
        raise Forbidden(f"{what} users of the domain {domain_name!r} is not allowed to you")


async def _check_refs(
    conn: Connection, values: Mapping[str, Any], domain_name: str, group_ids: Sequence[uuid.UUID]
) -> str | None:
    """Why the referenced domain, policy or projects do not do, or ``None``."""
    if not await count(conn, domains, domains.c.name == domain_name):
        return f"no domain is named {domain_name!r}"
    policy = values.get("resource_policy")
    if policy is not None and not await policy_exists(conn, user_resource_policies, policy):
        return f"no user resource policy is named {policy!r}"
    if group_ids:
        found = {
            row.id
            for row in await conn.execute(
                sa.select(groups.c.id).where(
                    groups.c.id.in_(group_ids), groups.c.domain_name == domain_name
                )
            )
        }
        missing = [str(gid) for gid in group_ids if gid not in found]
        if missing:
            return f"no project of the domain {domain_name!r} has the id(s) {', '.join(missing)}"
    return None


async def _taken(
    conn: Connection, email: str | None, username: str | None, *, but: Any = None
) -> str | None:
    for column, value in ((users.c.email, email), (users.c.username, username)):
        if value is None:
            continue
        conditions = [column == value]
        if but is not None:
            conditions.append(users.c.uuid != but)
        if await count(conn, users, *conditions):
            return f"a user with the {column.name} {value!r} already exists"
    return None


def create_user(_root: Any, info: Info, email: str, props: Mapping[str, Any]) -> Any:
    """``create_user(email, props)`` (module docs)."""
    ctx = context_of(info)
    ctx.require_admin("creating users")
    _check_email(email)
    if not props.get("password"):
        raise InvalidValue("is required", value=props.get("password"), field="props.password")
    domain_name = props.get("domain_name") or "default"
    values = _plain_values(props)
    values.setdefault("username", email)
    values.setdefault("role", UserRole.USER)
    values.setdefault("status", UserStatus.ACTIVE)
    values["resource_policy"] = props.get("resource_policy") or "default"
    _check_target(ctx, domain_name, values["role"], "creating")
    group_ids = _group_ids(props.get("group_ids") or [])
    user_id = uuid.uuid4()

    async def write(conn: Connection) -> str | None:
        problem = await _taken(conn, email, values["username"]) or await _check_refs(
            conn, values, domain_name, group_ids
        )
        if problem is None and not await policy_exists(conn, keypair_resource_policies, "default"):
            problem = "no keypair resource policy is named 'default' for the new keypair"
        if problem is not None:
            return problem
        await conn.execute(
            sa.insert(users).values(uuid=user_id, email=email, domain_name=domain_name, **values)
        )
        await conn.execute(
            sa.insert(keypairs).values(
                access_key=generate_access_key(),
                secret_key=generate_secret_key(),
                user_id=email,
                user=user_id,
                is_active=values["status"] is UserStatus.ACTIVE,
                is_admin=values["role"] in _ADMIN_ROLES,
                resource_policy="default",
            )
        )
        if group_ids:
            await conn.execute(
                sa.insert(association_groups_users),
                [{"user_id": user_id, "group_id": gid} for gid in group_ids],
            )
        return None

    problem = write_unique(ctx, write, f"a user with the email {email!r} was created meanwhile")
    if problem is not None:
        return answer(False, problem, user=None)
    return answer(True, "success", user=identity.resolve_user(None, info, email=email))


async def _target(ctx: GqlContext, conn: Connection, email: str, what: str) -> Any | None:
    row = (await conn.execute(sa.select(users).where(users.c.email == email))).first()
    if row is not None:
        _check_target(ctx, row.domain_name, UserRole(row.role), what)
    return row


def modify_user(_root: Any, info: Info, email: str, props: Mapping[str, Any]) -> Any:
    """``modify_user(email, props)`` (module docs)."""
    ctx = context_of(info)
    ctx.require_admin("modifying users")
    values = _plain_values(props)
    if props.get("resource_policy") is not None:
        values["resource_policy"] = props["resource_policy"]
    new_domain = props.get("domain_name")
    group_ids = None if props.get("group_ids") is None else _group_ids(props["group_ids"])
    if values.get("role") is UserRole.SUPERADMIN:
        ctx.require_superadmin("making a superadmin")

    async def write(conn: Connection) -> str | None:
        row = await _target(ctx, conn, email, "modifying")
        if row is None:
            return f"no user has the email {email!r}"
        domain_name = new_domain or row.domain_name
        if domain_name != row.domain_name:
            ctx.require_superadmin("moving users between domains")
            values["domain_name"] = domain_name
        problem = await _taken(
            conn, None, values.get("username"), but=row.uuid
        ) or await _check_refs(conn, values, domain_name, group_ids or [])
        if problem is not None:
            return problem
        if values:
            await conn.execute(sa.update(users).where(users.c.uuid == row.uuid).values(**values))
        key_values: dict[str, Any] = {}
        if "status" in values:
            key_values["is_active"] = values["status"] is UserStatus.ACTIVE
        if "role" in values:
            key_values["is_admin"] = values["role"] in _ADMIN_ROLES
        if key_values:
            await conn.execute(
                sa.update(keypairs).where(keypairs.c.user == row.uuid).values(**key_values)
            )
        if group_ids is not None or domain_name != row.domain_name:
            await conn.execute(
                sa.delete(association_groups_users).where(
                    association_groups_users.c.user_id == row.uuid
                )
            )
            if group_ids:
                await conn.execute(
                    sa.insert(association_groups_users),
                    [{"user_id": row.uuid, "group_id": gid} for gid in group_ids],
                )
        return None

    problem = write_unique(ctx, write, "the new username was taken meanwhile")
    if problem is not None:
        return answer(False, problem, user=None)
    return answer(True, "success", user=identity.resolve_user(None, info, email=email))


def _not_self(ctx: GqlContext, email: str, what: str) -> None:
    if email == ctx.auth.email:
        raise Forbidden(f"you may not {what} your own account")


def delete_user(_root: Any, info: Info, email: str) -> Any:
    """``delete_user(email)``: status ``deleted``, keypairs deactivated."""
    ctx = context_of(info)
    ctx.require_admin("deleting users")
    _not_self(ctx, email, "delete")

    async def write(conn: Connection) -> str | None:
        row = await _target(ctx, conn, email, "deleting")
        if row is None:
            return f"no user has the email {email!r}"
        await conn.execute(
            sa.update(users)
            .where(users.c.uuid == row.uuid)
            .values(status=UserStatus.DELETED, status_info="admin-requested")
        )
        await conn.execute(
            sa.update(keypairs).where(keypairs.c.user == row.uuid).values(is_active=False)
        )
        return None

    problem = ctx.write(write)
    return answer(problem is None, problem or "success")


def purge_user(_root: Any, info: Info, email: str, props: Mapping[str, Any] | None = None) -> Any:
    """``purge_user(email, props)`` (module docs; ``purge_shared_vfolders`` changes nothing,
    as no folder is ever purged here)."""
    ctx = context_of(info)
    ctx.require_admin("purging users")
    _not_self(ctx, email, "purge")

    async def write(conn: Connection) -> str | None:
        row = await _target(ctx, conn, email, "purging")
        if row is None:
            return f"no user has the email {email!r}"
        live = await count(conn, sessions, *live_sessions(sessions.c.user_uuid == row.uuid))
        if live:
            return f"the user {email!r} has {live} live session(s); terminate them first"
        folders = await count(conn, vfolders, vfolders.c.user == row.uuid)
        if folders:
            return (
                f"the user {email!r} owns {folders} folder(s) (live or in the trash); "
                "purge them or give them to another user first"
            )
        owned = sa.select(sessions.c.id).where(sessions.c.user_uuid == row.uuid)
        await conn.execute(sa.delete(kernels).where(kernels.c.session_id.in_(owned)))
        await conn.execute(sa.delete(sessions).where(sessions.c.user_uuid == row.uuid))
        await conn.execute(
            sa.delete(session_templates).where(session_templates.c.user_uuid == row.uuid)
        )
        await conn.execute(
            sa.delete(vfolder_invitations).where(
                sa.or_(
                    vfolder_invitations.c.invitee == email, vfolder_invitations.c.inviter == email
                )
            )
        )
        await conn.execute(
            sa.update(error_logs).where(error_logs.c.user == row.uuid).values(user=None)
        )
        own_keys = sa.select(keypairs.c.access_key).where(keypairs.c.user == row.uuid)
        await conn.execute(
            sa.delete(sgroups_for_keypairs).where(sgroups_for_keypairs.c.access_key.in_(own_keys))
        )
        await conn.execute(sa.delete(keypairs).where(keypairs.c.user == row.uuid))
        await conn.execute(
            sa.delete(vfolder_permissions).where(vfolder_permissions.c.user == row.uuid)
        )
        await conn.execute(
            sa.delete(association_groups_users).where(
                association_groups_users.c.user_id == row.uuid
            )
        )
        await conn.execute(sa.delete(users).where(users.c.uuid == row.uuid))
        return None

    problem = ctx.write(write)
    return answer(problem is None, problem or "success")
