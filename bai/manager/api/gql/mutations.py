"""Mutations: keypair resource policies (superadmins) and keypairs (admins).

Each mutation answers ``{ok, msg}`` (creations also the new object).  The
outcome follows the official manager's convention:

* input that cannot be valid (an unknown ``default_for_unspecified``, slots
  that do not parse, a negative limit) is a GraphQL error naming the field;
* a missing caller privilege is a GraphQL error (``forbidden``);
* a conflict with the database's state (the name is taken, the object does
  not exist, the policy is still used, the keypair still owns sessions, an
  unknown resource policy) is ``ok: false`` with a message.

Keypairs: superadmins manage anyone's; domain admins those of their domain's
users except superadmins.  ``create_keypair(user_id)`` takes the owner's
email and generates the access and secret keys.  Authentication caches
keypairs for up to a second, so a deactivated key may work that much
longer.

``max_concurrent_sftp_sessions`` is accepted (the official client sends it)
but not stored: bai has no SFTP-only sessions.  ``concurrency_limit`` of a
keypair is refused: the limit lives in the keypair's resource policy
(``max_concurrent_sessions``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import sqlalchemy as sa

from bai.common.errors import InvalidValue
from bai.common.slots import DEFAULT_SLOT_TYPES, DefaultForUnspecified, ResourceSlot
from bai.manager.api.gql.context import GqlContext, Info, context_of
from bai.manager.api.gql.identity import load_keypairs, policy_item
from bai.manager.api.resource import cluster_slot_types
from bai.manager.db import Connection
from bai.manager.models.identity import (
    generate_access_key,
    generate_secret_key,
    keypair_resource_policies,
    keypairs,
    users,
)
from bai.manager.models.session import sessions

__all__ = [
    "create_keypair",
    "create_keypair_resource_policy",
    "delete_keypair",
    "delete_keypair_resource_policy",
    "modify_keypair",
    "modify_keypair_resource_policy",
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
_NOT_STORED: Final = frozenset({"max_concurrent_sftp_sessions"})


def _answer(ok: bool, msg: str, **extra: Any) -> dict[str, Any]:
    return {"ok": ok, "msg": msg, **extra}


async def _slot_types(conn: Connection) -> dict[str, Any]:
    return {**DEFAULT_SLOT_TYPES, **(await cluster_slot_types(conn))}


def _slots(value: Any, known: Mapping[str, Any], field: str) -> ResourceSlot:
    try:
        return ResourceSlot.parse(value, known, allow_infinity=True)
    except InvalidValue as exc:
        raise InvalidValue(exc.problem, value=exc.value, field=f"props.{field}") from None


def _policy_values(props: Mapping[str, Any], known: Mapping[str, Any]) -> dict[str, Any]:
    """Table values for the given policy properties (validated; unset ones left out)."""
    values: dict[str, Any] = {}
    for name, value in props.items():
        if name in _NOT_STORED:
            continue
        if value is None:
            if name in ("max_pending_session_count", "max_pending_session_resource_slots"):
                values[name] = None
            continue
        if name == "default_for_unspecified":
            try:
                values[name] = DefaultForUnspecified(str(value).upper())
            except ValueError:
                raise InvalidValue(
                    "must be LIMITED or UNLIMITED", value=value, field=f"props.{name}"
                ) from None
        elif name in ("total_resource_slots", "max_pending_session_resource_slots"):
            values[name] = _slots(value, known, name)
        elif name in _POLICY_INTS:
            if value < 0:
                raise InvalidValue("must be 0 or more", value=value, field=f"props.{name}")
            values[name] = value
        elif name == "allowed_vfolder_hosts":
            if not isinstance(value, list | dict):
                raise InvalidValue(
                    "must be a list of hosts or a map of hosts to permissions",
                    value=value,
                    field=f"props.{name}",
                )
            values[name] = value
    return values


def _load_policy(ctx: GqlContext, name: str) -> dict[str, Any] | None:
    rows = ctx.read_rows(
        sa.select(keypair_resource_policies).where(keypair_resource_policies.c.name == name)
    )
    return policy_item(rows[0]) if rows else None


def create_keypair_resource_policy(
    _root: Any, info: Info, name: str, props: Mapping[str, Any]
) -> Any:
    """``create_keypair_resource_policy(name, props)``: superadmins only."""
    ctx = context_of(info)
    ctx.require_superadmin("creating resource policies")
    if not name or len(name) > 256:
        raise InvalidValue("must be 1 to 256 characters", value=name, field="name")

    async def write(conn: Connection) -> bool:
        values = _policy_values(props, await _slot_types(conn))
        if await _policy_exists(conn, name):
            return False
        await conn.execute(sa.insert(keypair_resource_policies).values(name=name, **values))
        return True

    if not ctx.write(write):
        return _answer(False, f"a keypair resource policy named {name!r} already exists")
    return _answer(True, "success", resource_policy=_load_policy(ctx, name))


def modify_keypair_resource_policy(
    _root: Any, info: Info, name: str, props: Mapping[str, Any]
) -> Any:
    """``modify_keypair_resource_policy(name, props)``: superadmins only; unset fields keep
    their values."""
    ctx = context_of(info)
    ctx.require_superadmin("modifying resource policies")

    async def write(conn: Connection) -> int:
        values = _policy_values(props, await _slot_types(conn))
        if not values:
            return int(await _policy_exists(conn, name))
        result = await conn.execute(
            sa.update(keypair_resource_policies)
            .where(keypair_resource_policies.c.name == name)
            .values(**values)
        )
        return result.rowcount

    if not ctx.write(write):
        return _answer(False, f"no keypair resource policy is named {name!r}")
    return _answer(True, "success")


def delete_keypair_resource_policy(_root: Any, info: Info, name: str) -> Any:
    """``delete_keypair_resource_policy(name)``: superadmins only; refused while keypairs
    use the policy."""
    ctx = context_of(info)
    ctx.require_superadmin("deleting resource policies")

    async def write(conn: Connection) -> str | None:
        users_of = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(keypairs)
            .where(keypairs.c.resource_policy == name)
        )
        if users_of:
            return f"{users_of} keypair(s) still use the resource policy {name!r}"
        result = await conn.execute(
            sa.delete(keypair_resource_policies).where(keypair_resource_policies.c.name == name)
        )
        return None if result.rowcount else f"no keypair resource policy is named {name!r}"

    problem = ctx.write(write)
    return _answer(problem is None, problem or "success")


# ------------------------------------------------------------------------- keypairs


def _check_keypair_props(props: Mapping[str, Any]) -> dict[str, Any]:
    if props.get("concurrency_limit") is not None:
        raise InvalidValue(
            "is set by the keypair's resource policy (max_concurrent_sessions)",
            value=props["concurrency_limit"],
            field="props.concurrency_limit",
        )
    values: dict[str, Any] = {}
    for name in ("is_active", "is_admin", "resource_policy", "rate_limit"):
        value = props.get(name)
        if value is None:
            continue
        if name == "rate_limit" and value < 1:
            raise InvalidValue("must be 1 or more", value=value, field="props.rate_limit")
        values[name] = value
    return values


async def _policy_exists(conn: Connection, name: str) -> bool:
    found = await conn.scalar(
        sa.select(sa.func.count())
        .select_from(keypair_resource_policies)
        .where(keypair_resource_policies.c.name == name)
    )
    return bool(found)


def create_keypair(_root: Any, info: Info, user_id: str, props: Mapping[str, Any]) -> Any:
    """``create_keypair(user_id, props)``: a new keypair for the user with email *user_id*."""
    ctx = context_of(info)
    ctx.require_admin("creating keypairs")
    values = _check_keypair_props(props)
    values.setdefault("resource_policy", "default")
    access_key = generate_access_key()

    async def write(conn: Connection) -> str | None:
        owner = (
            await conn.execute(
                sa.select(users.c.uuid, users.c.email, users.c.domain_name, users.c.role).where(
                    users.c.email == user_id
                )
            )
        ).first()
        if owner is None or not ctx.may_manage_user(owner.domain_name, owner.role):
            return f"no user you may manage has the email {user_id!r}"
        if not await _policy_exists(conn, values["resource_policy"]):
            return f"no keypair resource policy is named {values['resource_policy']!r}"
        await conn.execute(
            sa.insert(keypairs).values(
                access_key=access_key,
                secret_key=generate_secret_key(),
                user_id=owner.email,
                user=owner.uuid,
                **values,
            )
        )
        return None

    problem = ctx.write(write)
    if problem is not None:
        return _answer(False, problem, keypair=None)
    created = load_keypairs(ctx, [keypairs.c.access_key == access_key])
    return _answer(True, "success", keypair=created[0] if created else None)


async def _managed_keypair(ctx: GqlContext, conn: Connection, access_key: str) -> bool:
    owner = (
        await conn.execute(
            sa.select(users.c.domain_name, users.c.role)
            .select_from(keypairs.join(users, users.c.uuid == keypairs.c.user))
            .where(keypairs.c.access_key == access_key)
        )
    ).first()
    return owner is not None and ctx.may_manage_user(owner.domain_name, owner.role)


def modify_keypair(_root: Any, info: Info, access_key: str, props: Mapping[str, Any]) -> Any:
    """``modify_keypair(access_key, props)``: unset (or null) fields keep their values."""
    ctx = context_of(info)
    ctx.require_admin("modifying keypairs")
    values = _check_keypair_props(props)

    async def write(conn: Connection) -> str | None:
        if not await _managed_keypair(ctx, conn, access_key):
            return f"no keypair you may manage has the access key {access_key!r}"
        policy = values.get("resource_policy")
        if policy is not None and not await _policy_exists(conn, policy):
            return f"no keypair resource policy is named {policy!r}"
        if values:
            await conn.execute(
                sa.update(keypairs).where(keypairs.c.access_key == access_key).values(**values)
            )
        return None

    problem = ctx.write(write)
    return _answer(problem is None, problem or "success")


def delete_keypair(_root: Any, info: Info, access_key: str) -> Any:
    """``delete_keypair(access_key)``: refused while the keypair owns sessions (which keep
    their owner for the record; deactivate the keypair instead)."""
    ctx = context_of(info)
    ctx.require_admin("deleting keypairs")

    async def write(conn: Connection) -> str | None:
        if not await _managed_keypair(ctx, conn, access_key):
            return f"no keypair you may manage has the access key {access_key!r}"
        owned = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(sessions)
            .where(sessions.c.access_key == access_key)
        )
        if owned:
            return f"the keypair owns {owned} session(s); deactivate it instead"
        await conn.execute(sa.delete(keypairs).where(keypairs.c.access_key == access_key))
        return None

    problem = ctx.write(write)
    return _answer(problem is None, problem or "success")
