"""``/auth`` account routes: password login with blocking and expiry, sign-up, sign-out,
password and full-name changes, each with the roles that may call it and bad input."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
import trio

from bai.manager.db import Database
from bai.manager.models import association_groups_users, groups, keypairs, users
from bai.manager.models.identity import generate_access_key, generate_secret_key, hash_password

from support.api import Api, Key, assert_problem, manager_config, running_api

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "tr0ub4dor&3 is worse"


async def set_password(api: Api, email: str, password: str = PASSWORD, **extra: object) -> None:
    # A cheap hash: the cost factor is stored in the hash, and this keeps the tests fast.
    async with api.db.begin() as conn:
        await conn.execute(
            sa.update(users)
            .where(users.c.email == email)
            .values(password=hash_password(password, iterations=1000), **extra)
        )


async def add_domain_admin(api: Api, email: str = "dadmin@lablup.com") -> Key:
    """A domain admin of ``default`` with an admin keypair."""
    user_id = uuid.uuid4()
    access_key, secret_key = generate_access_key(), generate_secret_key()
    async with api.db.begin() as conn:
        await conn.execute(
            sa.insert(users).values(
                uuid=user_id,
                username=email.split("@")[0],
                email=email,
                domain_name="default",
                role="admin",
                resource_policy="default",
            )
        )
        await conn.execute(
            sa.insert(keypairs).values(
                access_key=access_key,
                secret_key=secret_key,
                user_id=email,
                user=user_id,
                is_admin=True,
                resource_policy="default",
            )
        )
    return Key(access_key, secret_key, email, user_id)


def login(username: str, password: str = PASSWORD) -> dict[str, str]:
    return {"type": "keypair", "domain": "default", "username": username, "password": password}


async def stored_hash(api: Api, email: str) -> str | None:
    row = await api.db.fetch(sa.select(users.c.password).where(users.c.email == email))
    value: str | None = row.scalar_one()
    return value


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    config = manager_config(
        'login-allowed-fail-count = 3\nlogin-block-time = "2s"\n'
        'allow-signup = true\nmax-password-age = "30d"\n'
    )
    async with running_api(db, config=config, auth_cache_ttl=0) as running:
        await set_password(running, running.user.email)
        await set_password(running, running.admin.email)
        yield running


# ---------------------------------------------------------------- authorize


async def test_password_login_hands_out_the_keypair(api: Api) -> None:
    answer = await api.call("POST", "/auth/authorize", json_body=login("user"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["access_key"] == api.user.access_key


async def test_failed_logins_block_the_account_then_let_it_go(api: Api) -> None:
    for _ in range(3):
        wrong = await api.call("POST", "/auth/authorize", json_body=login("user", "nope"))
        assert_problem(wrong, 401, "unauthorized")
    # Now even the right password is refused, by email or username, and says for how long.
    for name in ("user", api.user.email):
        blocked = await api.call("POST", "/auth/authorize", json_body=login(name))
        problem = assert_problem(blocked, 429, "login-blocked")
        assert "blocked for" in problem["detail"]
        assert 1 <= int(blocked.headers["Retry-After"]) <= 2
    # Another account is not affected.
    other = await api.call("POST", "/auth/authorize", json_body=login("admin"))
    assert other.status_code == 200, other.text
    await trio.sleep(2.1)
    answer = await api.call("POST", "/auth/authorize", json_body=login("user"))
    assert answer.status_code == 200, answer.text


async def test_a_success_clears_the_failure_count(api: Api) -> None:
    for _ in range(2):
        await api.call("POST", "/auth/authorize", json_body=login("user", "nope"))
    assert (await api.call("POST", "/auth/authorize", json_body=login("user"))).is_success
    for _ in range(2):
        await api.call("POST", "/auth/authorize", json_body=login("user", "nope"))
    assert (await api.call("POST", "/auth/authorize", json_body=login("user"))).is_success


async def test_unknown_names_are_blocked_alike(api: Api) -> None:
    for _ in range(3):
        assert_problem(
            await api.call("POST", "/auth/authorize", json_body=login("ghost", "x")),
            401,
            "unauthorized",
        )
    assert_problem(
        await api.call("POST", "/auth/authorize", json_body=login("ghost", "x")),
        429,
        "login-blocked",
    )


async def test_an_expired_password_points_to_update_password_no_auth(api: Api) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=31)
    await set_password(api, api.user.email, password_changed_at=old)
    problem = assert_problem(
        await api.call("POST", "/auth/authorize", json_body=login("user")), 401, "password-expired"
    )
    assert "update-password-no-auth" in problem["detail"]
    body = {
        "domain": "default",
        "username": api.user.email,
        "current_password": PASSWORD,
        "new_password": NEW_PASSWORD,
    }
    changed = await api.call("POST", "/auth/update-password-no-auth", json_body=body)
    assert changed.status_code == 201, changed.text
    stamp = dt.datetime.fromisoformat(changed.json()["password_changed_at"])
    assert abs(stamp - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    answer = await api.call("POST", "/auth/authorize", json_body=login("user", NEW_PASSWORD))
    assert answer.status_code == 200, answer.text


async def test_update_password_no_auth_refusals_change_nothing(api: Api) -> None:
    before = await stored_hash(api, api.user.email)
    base = {"domain": "default", "username": "user", "current_password": PASSWORD}
    same = await api.call(
        "POST", "/auth/update-password-no-auth", json_body=base | {"new_password": PASSWORD}
    )
    assert assert_problem(same, 400, "invalid-api-params")["field"] == "new_password"
    wrong = await api.call(
        "POST",
        "/auth/update-password-no-auth",
        json_body=base | {"current_password": "nope", "new_password": NEW_PASSWORD},
    )
    assert_problem(wrong, 401, "unauthorized")
    missing = await api.call("POST", "/auth/update-password-no-auth", json_body=base)
    assert assert_problem(missing, 400, "invalid-api-params")["field"] == "new_password"
    assert await stored_hash(api, api.user.email) == before


async def test_update_password_no_auth_needs_a_max_age(db: Database) -> None:
    async with running_api(db) as api:
        body = {
            "domain": "default",
            "username": "user",
            "current_password": "x",
            "new_password": "y",
        }
        response = await api.call("POST", "/auth/update-password-no-auth", json_body=body)
        assert "do not expire" in assert_problem(response, 400, "generic-bad-request")["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "password", "domain": "default", "username": "u", "password": "p"}, "type"),
        ({"type": "keypair", "domain": "default", "username": "u"}, "password"),
        ({"type": "keypair", "domain": "default", "username": 3, "password": "p"}, "username"),
    ],
)
async def test_authorize_bad_input_names_the_field(
    api: Api, body: dict[str, object], field: str
) -> None:
    response = await api.call("POST", "/auth/authorize", json_body=body)
    assert assert_problem(response, 400, "invalid-api-params")["field"] == field


async def test_malformed_json_is_400(api: Api) -> None:
    for path in ("/auth/authorize", "/auth/signup", "/auth/update-password-no-auth"):
        response = await api.call("POST", path, content=b'{"type": ')
        assert "not valid JSON" in assert_problem(response, 400, "invalid-api-params")["detail"]


# ---------------------------------------------------------------- signup


def signup(email: str = "new@example.com", **extra: object) -> dict[str, object]:
    return {"domain": "default", "email": email, "password": PASSWORD} | extra


async def test_signup_creates_a_working_account(api: Api) -> None:
    answer = await api.call("POST", "/auth/signup", json_body=signup(full_name="New One"))
    assert answer.status_code == 201, answer.text
    key = Key(
        answer.json()["access_key"], answer.json()["secret_key"], "new@example.com", uuid.uuid4()
    )
    echo = await api.call("GET", "/auth/test", key=key, params={"echo": "hi"})
    assert echo.json() == {"authorized": "yes", "echo": "hi"}
    role = (await api.call("GET", "/auth/role", key=key)).json()
    assert role["global_role"] == "user"
    row = (
        await api.db.fetch(
            sa.select(users.c.uuid, users.c.username, users.c.full_name, users.c.status).where(
                users.c.email == "new@example.com"
            )
        )
    ).one()
    assert (row.username, row.full_name, row.status) == ("new@example.com", "New One", "active")
    member = await api.db.fetch(
        sa.select(groups.c.name)
        .join(association_groups_users, association_groups_users.c.group_id == groups.c.id)
        .where(association_groups_users.c.user_id == row.uuid)
    )
    assert member.scalars() == ["default"]
    logged_in = await api.call(
        "POST", "/auth/authorize", json_body=login("new@example.com", PASSWORD)
    )
    assert logged_in.json()["data"]["access_key"] == key.access_key


async def test_signup_twice_is_a_conflict_and_adds_nothing(api: Api) -> None:
    assert (await api.call("POST", "/auth/signup", json_body=signup())).status_code == 201
    count = sa.select(sa.func.count()).select_from(users)
    before = (await api.db.fetch(count)).scalar_one()
    again = await api.call("POST", "/auth/signup", json_body=signup(password="other"))
    assert "already registered" in assert_problem(again, 409, "conflict")["detail"]
    taken = await api.call(
        "POST", "/auth/signup", json_body=signup("x@example.com", username="user")
    )
    assert "already taken" in assert_problem(taken, 409, "conflict")["detail"]
    assert (await api.db.fetch(count)).scalar_one() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (signup("not-an-email"), "email"),
        (signup(domain="nowhere"), "domain"),
        (signup(password=""), "password"),
        (signup(password=None), "password"),
        ({"domain": "default", "password": PASSWORD}, "email"),
    ],
)
async def test_signup_bad_input_names_the_field(
    api: Api, body: dict[str, object], field: str
) -> None:
    count = sa.select(sa.func.count()).select_from(users)
    before = (await api.db.fetch(count)).scalar_one()
    response = await api.call("POST", "/auth/signup", json_body=body)
    assert assert_problem(response, 400, "invalid-api-params")["field"] == field
    assert (await api.db.fetch(count)).scalar_one() == before


async def test_signup_is_off_by_default(db: Database) -> None:
    async with running_api(db) as api:
        response = await api.call("POST", "/auth/signup", json_body=signup())
        assert "disabled" in assert_problem(response, 403, "forbidden")["detail"]
        found = await api.db.fetch(
            sa.select(users.c.uuid).where(users.c.email == "new@example.com")
        )
        assert found.first() is None


# ---------------------------------------------------------------- signout


async def test_signout_deactivates_the_callers_account(api: Api) -> None:
    body = {"email": api.user.email, "password": PASSWORD}
    response = await api.call("POST", "/auth/signout", key=api.user, json_body=body)
    assert response.status_code == 200, response.text
    status = await api.db.fetch(sa.select(users.c.status).where(users.c.uuid == api.user.user_id))
    assert status.scalar_one() == "inactive"
    after = await api.call("GET", "/auth/test", key=api.user, params={"echo": "x"})
    assert_problem(after, 401, "unauthorized")
    assert_problem(
        await api.call("POST", "/auth/authorize", json_body=login("user")), 401, "unauthorized"
    )


async def test_signout_refusals_change_nothing(api: Api) -> None:
    dadmin = await add_domain_admin(api)
    # Not the owner: even a superadmin or a domain admin cannot sign someone else out here.
    for key in (api.admin, dadmin):
        other = await api.call(
            "POST",
            "/auth/signout",
            key=key,
            json_body={"email": api.user.email, "password": PASSWORD},
        )
        assert_problem(other, 403, "forbidden")
    wrong = await api.call(
        "POST", "/auth/signout", key=api.user, json_body={"email": api.user.email, "password": "x"}
    )
    assert assert_problem(wrong, 400, "invalid-api-params")["field"] == "password"
    anonymous = await api.call(
        "POST", "/auth/signout", json_body={"email": api.user.email, "password": PASSWORD}
    )
    assert_problem(anonymous, 401, "unauthorized")
    active = await api.db.fetch(sa.select(keypairs.c.is_active).where(keypairs.c.is_active))
    assert len(active.all()) == 3
    status = await api.db.fetch(sa.select(users.c.status).where(users.c.uuid == api.user.user_id))
    assert status.scalar_one() == "active"


# ---------------------------------------------------------------- update-password


async def test_update_password_for_each_role(api: Api) -> None:
    dadmin = await add_domain_admin(api)
    await set_password(api, dadmin.email)
    for key, name in ((api.user, "user"), (dadmin, "dadmin"), (api.admin, "admin")):
        body = {
            "old_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password2": NEW_PASSWORD,
        }
        response = await api.call("POST", "/auth/update-password", key=key, json_body=body)
        assert response.status_code == 200, response.text
        assert_problem(
            await api.call("POST", "/auth/authorize", json_body=login(name)), 401, "unauthorized"
        )
        answer = await api.call("POST", "/auth/authorize", json_body=login(name, NEW_PASSWORD))
        assert answer.json()["data"]["access_key"] == key.access_key


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"old_password": "nope", "new_password": "a", "new_password2": "a"}, "old_password"),
        ({"old_password": PASSWORD, "new_password": "a", "new_password2": "b"}, "new_password2"),
        ({"old_password": PASSWORD, "new_password": "", "new_password2": ""}, "new_password"),
        ({"old_password": PASSWORD, "new_password": "a"}, "new_password2"),
        ({"old_password": PASSWORD, "new_password": 1, "new_password2": 1}, "new_password"),
    ],
)
async def test_update_password_refusals_change_nothing(
    api: Api, body: dict[str, object], field: str
) -> None:
    before = await stored_hash(api, api.user.email)
    response = await api.call("POST", "/auth/update-password", key=api.user, json_body=body)
    assert assert_problem(response, 400, "invalid-api-params")["field"] == field
    assert await stored_hash(api, api.user.email) == before


async def test_update_password_needs_a_valid_signature(api: Api) -> None:
    before = await stored_hash(api, api.user.email)
    body = {"old_password": PASSWORD, "new_password": "a", "new_password2": "a"}
    anonymous = await api.call("POST", "/auth/update-password", json_body=body)
    assert_problem(anonymous, 401, "unauthorized")
    forged = Key(api.user.access_key, "x" * 40, api.user.email, api.user.user_id)
    response = await api.call("POST", "/auth/update-password", key=forged, json_body=body)
    assert response.status_code == 401, response.text
    assert await stored_hash(api, api.user.email) == before


# ---------------------------------------------------------------- update-full-name


async def test_update_full_name_of_ones_own_account(api: Api) -> None:
    dadmin = await add_domain_admin(api)
    for key in (api.user, dadmin, api.admin):
        body = {"email": key.email, "full_name": "Renamed " + key.email}
        response = await api.call("POST", "/auth/update-full-name", key=key, json_body=body)
        assert response.status_code == 200, response.text
        name = await api.db.fetch(sa.select(users.c.full_name).where(users.c.email == key.email))
        assert name.scalar_one() == "Renamed " + key.email


async def test_update_full_name_refusals_change_nothing(api: Api) -> None:
    other = await api.call(
        "POST",
        "/auth/update-full-name",
        key=api.admin,
        json_body={"email": api.user.email, "full_name": "Hijacked"},
    )
    assert_problem(other, 403, "forbidden")
    too_long = await api.call(
        "POST",
        "/auth/update-full-name",
        key=api.user,
        json_body={"email": api.user.email, "full_name": "x" * 65},
    )
    assert assert_problem(too_long, 400, "invalid-api-params")["field"] == "full_name"
    anonymous = await api.call(
        "POST", "/auth/update-full-name", json_body={"email": api.user.email, "full_name": "A"}
    )
    assert_problem(anonymous, 401, "unauthorized")
    name = await api.db.fetch(sa.select(users.c.full_name).where(users.c.uuid == api.user.user_id))
    assert name.scalar_one() == "User"
