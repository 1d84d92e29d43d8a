"""Shared harness of the vfolder API tests: folders, users and invitations through the real API.

Imported by the ``test_api_vfolder_*`` modules (it holds no tests itself).
:func:`deployment` is their fixture: each deployment mode of
:mod:`support.api_session` with a storage proxy serving ``local:local``
(:mod:`support.storage`) and no agent.  The helpers send signed ``/folders``
calls as a client would (the user's keypair unless a key is given), each
bounded to 30 seconds: :func:`call` returns the answer, :func:`ok` checks
its status and returns its JSON; :func:`new_folder`, :func:`add_user`,
:func:`invitations` and :func:`invite_and_accept` are the steps most tests
take before the one they check.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import trio

from bai.manager.models.identity import (
    UserRole,
    association_groups_users,
    generate_access_key,
    generate_secret_key,
    groups,
    keypairs,
    users,
)

from support.api import Key
from support.api_session import Backends, Deployment, running_deployment, unique_name
from support.storage import HOST

__all__ = [
    "HOST",
    "add_user",
    "call",
    "deployment",
    "invitations",
    "invite_and_accept",
    "new_folder",
    "ok",
]


@pytest.fixture
async def deployment(backends: Backends, tmp_path: Path) -> AsyncIterator[Deployment]:
    """A deployment of each mode with a storage proxy (no agent: no session is needed)."""
    async with running_deployment(backends, tmp_path, agent_count=0, storage=True) as running:
        yield running


async def call(
    d: Deployment,
    method: str,
    path: str,
    key: Key | None = None,
    body: Any = None,
    *,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """A signed request with *body* as JSON (when given) and *params* as the query."""
    kwargs: dict[str, Any] = {"key": key or d.api.user}
    if body is not None:
        kwargs["json_body"] = body
    if params is not None:
        kwargs["params"] = params
    with trio.fail_after(30):
        response: httpx.Response = await d.api.call(method, path, **kwargs)
    return response


async def ok(
    d: Deployment,
    method: str,
    path: str,
    key: Key | None = None,
    body: Any = None,
    status: int = 200,
    *,
    params: dict[str, str] | None = None,
) -> Any:
    """:func:`call`, which must answer *status*; its JSON (``None`` for an empty answer)."""
    response = await call(d, method, path, key, body, params=params)
    assert response.status_code == status, response.text
    return response.json() if response.content else None


async def new_folder(d: Deployment, key: Key | None = None, **extra: Any) -> dict[str, Any]:
    """A new folder of *key*'s user on ``local:local`` (*extra*: more of the body); the answer."""
    body = {"name": unique_name("f"), "host": HOST, **extra}
    created: dict[str, Any] = await ok(d, "POST", "/folders", key, body, status=201)
    return created


async def add_user(d: Deployment, *, member: bool = True) -> Key:
    """A new active user of the default domain with a keypair (in the default project)."""
    user_id = uuid.uuid4()
    name = unique_name("u")
    email = f"{name}@example.com"
    access_key, secret_key = generate_access_key(), generate_secret_key()
    async with d.db.begin() as conn:
        await conn.execute(
            sa.insert(users).values(
                uuid=user_id,
                username=name,
                email=email,
                domain_name="default",
                role=UserRole.USER,
                resource_policy="default",
            )
        )
        await conn.execute(
            sa.insert(keypairs).values(
                access_key=access_key,
                secret_key=secret_key,
                user_id=email,
                user=user_id,
                is_admin=False,
                resource_policy="default",
            )
        )
        if member:
            group_id = await conn.scalar(sa.select(groups.c.id).where(groups.c.name == "default"))
            await conn.execute(
                sa.insert(association_groups_users).values(user_id=user_id, group_id=group_id)
            )
    return Key(access_key, secret_key, email, user_id)


async def invitations(d: Deployment, key: Key, path: str = "list") -> list[dict[str, Any]]:
    """The invitations *key* received (``list``) or sent (``list-sent``)."""
    found: list[dict[str, Any]] = (await ok(d, "GET", f"/folders/invitations/{path}", key))[
        "invitations"
    ]
    return found


async def invite_and_accept(d: Deployment, owner: Key, name: str, invitee: Key, perm: str) -> None:
    """*owner* invites *invitee* to the folder *name* with *perm*, and *invitee* accepts."""
    sent = await ok(
        d, "POST", f"/folders/{name}/invite", owner, {"perm": perm, "emails": [invitee.email]}, 201
    )
    assert sent == {"invited_ids": [invitee.email]}
    (pending,) = [i for i in await invitations(d, invitee) if i["vfolder_name"] == name]
    await ok(d, "POST", "/folders/invitations/accept", invitee, {"inv_id": pending["id"]})
