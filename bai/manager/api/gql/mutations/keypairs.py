"""Keypair mutations: ``create_keypair``, ``modify_keypair``, ``delete_keypair`` (admins).

Superadmins manage anyone's keypairs; domain admins those of their domain's
users except superadmins.  ``create_keypair(user_id)`` takes the owner's
email and generates the access and secret keys.  Authentication caches
keypairs for up to a second, so a deactivated key may work that much
longer.

``concurrency_limit`` (in the spec's ``KeyPairInput``; older official
clients send it) is checked (0 or more) and then ignored: the number of
concurrent sessions of a keypair is its resource policy's
``max_concurrent_sessions``, one place for one limit.  Give a keypair its own
limit by giving it its own policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from bai.manager.api.gql.context import GqlContext, Info, context_of
from bai.manager.api.gql.identity import load_keypairs
from bai.manager.api.gql.mutations.common import answer, check_limit
from bai.manager.api.gql.mutations.policies import policy_exists
from bai.manager.db import Connection
from bai.manager.models.identity import (
    generate_access_key,
    generate_secret_key,
    keypair_resource_policies,
    keypairs,
    users,
)
from bai.manager.models.session import sessions

__all__ = ["create_keypair", "delete_keypair", "modify_keypair"]


def _check_keypair_props(props: Mapping[str, Any]) -> dict[str, Any]:
    if props.get("concurrency_limit") is not None:
        # Checked, then left out: the limit is the policy's max_concurrent_sessions.
        check_limit(props["concurrency_limit"], "props.concurrency_limit")
    values: dict[str, Any] = {}
    for name in ("is_active", "is_admin", "resource_policy", "rate_limit"):
        value = props.get(name)
        if value is None:
            continue
        if name == "rate_limit":
            check_limit(value, "props.rate_limit", minimum=1)
        values[name] = value
    return values


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
        if not await policy_exists(conn, keypair_resource_policies, values["resource_policy"]):
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
        return answer(False, problem, keypair=None)
    created = load_keypairs(ctx, [keypairs.c.access_key == access_key])
    return answer(True, "success", keypair=created[0] if created else None)


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
        if policy is not None and not await policy_exists(conn, keypair_resource_policies, policy):
            return f"no keypair resource policy is named {policy!r}"
        if values:
            await conn.execute(
                sa.update(keypairs).where(keypairs.c.access_key == access_key).values(**values)
            )
        return None

    problem = ctx.write(write)
    return answer(problem is None, problem or "success")


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
    return answer(problem is None, problem or "success")
