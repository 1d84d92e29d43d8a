"""``/auth``: the credential test, roles, and trading a password for a keypair."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from bai.manager.db import Database
from bai.manager.models import groups, keypairs, users
from bai.manager.models.identity import hash_password

from support.api import Api, assert_problem, running_api

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    async with running_api(db) as running:
        # A cheap hash: the cost factor is stored in the hash, and this keeps the test fast.
        async with running.db.begin() as conn:
            await conn.execute(
                sa.update(users)
                .where(users.c.email == running.user.email)
                .values(password=hash_password(PASSWORD, iterations=1000))
            )
        yield running


@pytest.mark.parametrize("path", ["/auth", "/auth/test"])
async def test_echo_over_get_and_post(api: Api, path: str) -> None:
    got = await api.call("GET", path, key=api.user, params={"echo": "q"})
    assert got.json() == {"authorized": "yes", "echo": "q"}
    posted = await api.call("POST", path, key=api.user, json_body={"echo": "b"})
    assert posted.json() == {"authorized": "yes", "echo": "b"}


async def test_echo_is_required(api: Api) -> None:
    problem = assert_problem(
        await api.call("GET", "/auth", key=api.user), 400, "invalid-api-params"
    )
    assert problem["field"] == "echo"


async def test_roles(api: Api) -> None:
    admin = (await api.call("GET", "/auth/role", key=api.admin)).json()
    assert admin == {"global_role": "superadmin", "domain_role": "admin", "group_role": None}
    user = (await api.call("GET", "/auth/role", key=api.user)).json()
    assert user == {"global_role": "user", "domain_role": "user", "group_role": None}


async def test_project_role_needs_membership(api: Api) -> None:
    group_id = await api.db.fetch(sa.select(groups.c.id))
    response = await api.call(
        "GET", "/auth/role", key=api.user, params={"group": str(group_id.scalar())}
    )
    assert response.json()["group_role"] == "user"
    response = await api.call(
        "GET", "/auth/role", key=api.user, params={"group": "00000000-0000-0000-0000-000000000000"}
    )
    assert_problem(response, 404, "object-not-found")
    response = await api.call("GET", "/auth/role", key=api.user, params={"group": "not-a-uuid"})
    assert assert_problem(response, 400, "invalid-api-params")["field"] == "group"


def login(username: str, password: str = PASSWORD, **extra: str) -> dict[str, str]:
    return {
        "type": "keypair",
        "domain": "default",
        "username": username,
        "password": password,
    } | extra


async def test_authorize_returns_the_users_keypair(api: Api) -> None:
    for username in (api.user.email, "user"):
        response = await api.call("POST", "/auth/authorize", json_body=login(username))
        assert response.status_code == 200, response.text
        assert response.json() == {
            "data": {
                "access_key": api.user.access_key,
                "secret_key": api.user.secret_key,
                "role": "user",
                "status": "active",
            }
        }


@pytest.mark.parametrize(
    "body",
    [
        login("user@lablup.com", "wrong"),
        login("nobody@lablup.com"),
        login("admin@lablup.com"),  # no password set: password login is off
        login("user@lablup.com", domain="other"),
    ],
)
async def test_wrong_credentials_are_401_alike(api: Api, body: dict[str, str]) -> None:
    response = await api.call("POST", "/auth/authorize", json_body=body)
    problem = assert_problem(response, 401, "unauthorized")
    assert problem["detail"] == "user credential mismatch"


async def test_authorize_checks_the_type_and_fields(api: Api) -> None:
    response = await api.call("POST", "/auth/authorize", json_body=login("user", type="jwt"))
    assert assert_problem(response, 400, "invalid-api-params")["field"] == "type"
    body = login("user")
    del body["password"]
    response = await api.call("POST", "/auth/authorize", json_body=body)
    assert assert_problem(response, 400, "invalid-api-params")["field"] == "password"


async def test_disabled_accounts_cannot_authorize(api: Api) -> None:
    await api.update_keypair(api.user, is_active=False)
    response = await api.call("POST", "/auth/authorize", json_body=login("user"))
    assert_problem(response, 401, "unauthorized")
    async with api.db.begin() as conn:
        await conn.execute(sa.update(keypairs).values(is_active=True))
        await conn.execute(sa.update(users).values(status="inactive"))
    response = await api.call("POST", "/auth/authorize", json_body=login("user"))
    assert_problem(response, 401, "unauthorized")
