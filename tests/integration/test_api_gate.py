"""The API's front: GET /, versions, signatures, roles, owner_access_key, rate limits.

Every test runs the real app on hypercorn over a real database (SQLite and
PostgreSQL) and talks to it over HTTP with signed requests.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import trio

from bai.common.auth import sign_request
from bai.manager.db import Database
from bai.manager.fixtures import populate
from bai.manager.models import domains, users

from support.api import Api, Key, assert_problem, running_api


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    async with running_api(db) as running:
        yield running


# ---------------------------------------------------------------------------
# public routes and versions
# ---------------------------------------------------------------------------


async def test_root_answers_versions_without_credentials(api: Api) -> None:
    response = await api.http.get(api.base_url + "/")
    assert response.status_code == 200
    assert response.json() == {"version": "v6.20220615", "manager": "0.1.0"}
    assert response.headers["X-RateLimit-Window"] == "900"


@pytest.mark.parametrize(
    ("path", "version"), [("/v6", "v6.20220615"), ("/v5/", "v5.20191215"), ("/v4", "v4.20190615")]
)
async def test_major_version_urls_answer_that_majors_revision(
    api: Api, path: str, version: str
) -> None:
    response = await api.http.get(api.base_url + path)
    assert response.status_code == 200
    assert response.json()["version"] == version


async def test_unsupported_major_prefix_is_404(api: Api) -> None:
    assert_problem(await api.call("GET", "/v2", key=api.user), 404, "generic-not-found")


async def test_version_prefixed_routes_reach_the_same_handlers(api: Api) -> None:
    response = await api.call("GET", "/v6/auth", key=api.user, params={"echo": "x"})
    assert response.status_code == 200
    assert response.json() == {"authorized": "yes", "echo": "x"}


@pytest.mark.parametrize("version", ["v6.20220615", "v5.20191215", "v4.20190315"])
async def test_supported_versions_are_accepted(api: Api, version: str) -> None:
    response = await api.call("GET", "/auth", key=api.user, params={"echo": "v"}, version=version)
    assert response.status_code == 200


@pytest.mark.parametrize("version", ["v7.20230615", "v3.20170615", "v2.20170315"])
async def test_unsupported_versions_are_refused(api: Api, version: str) -> None:
    response = await api.call("GET", "/auth", key=api.user, params={"echo": "v"}, version=version)
    body = assert_problem(response, 400, "unsupported-api-version")
    assert version in str(body["detail"])


async def test_malformed_version_header_names_it(api: Api) -> None:
    response = await api.call("GET", "/", headers={"X-BackendAI-Version": "six"})
    body = assert_problem(response, 400, "invalid-api-params")
    assert body["field"] == "X-BackendAI-Version"


# ---------------------------------------------------------------------------
# authentication
# ---------------------------------------------------------------------------


async def test_signed_request_is_authenticated(api: Api) -> None:
    response = await api.call("GET", "/auth/test", key=api.user, params={"echo": "hello"})
    assert response.status_code == 200
    assert response.json() == {"authorized": "yes", "echo": "hello"}


async def test_missing_authorization_is_401(api: Api) -> None:
    body = assert_problem(await api.call("GET", "/auth", params={"echo": "x"}), 401, "unauthorized")
    assert "Authorization" in str(body["detail"])


async def test_wrong_signature_is_401(api: Api) -> None:
    forged = Key(api.user.access_key, "x" * 40, api.user.email, api.user.user_id)
    body = assert_problem(
        await api.call("GET", "/auth", key=forged, params={"echo": "x"}), 401, "unauthorized"
    )
    assert api.user.secret_key not in str(body)


def _signed_by_user(api: Api, path: str) -> dict[str, str]:
    """The headers of a ``GET`` of *path* signed with the user's keypair."""
    return sign_request(
        method="GET",
        path=path,
        host=api.host,
        api_version="v6.20220615",
        access_key=api.user.access_key,
        secret_key=api.user.secret_key,
    )


async def test_signature_covers_the_query_string(api: Api) -> None:
    signed = _signed_by_user(api, "/auth?echo=x")
    response = await api.http.get(api.base_url + "/auth?echo=y", headers=signed)
    assert_problem(response, 401, "unauthorized")


async def test_a_bare_question_mark_is_verified_as_the_client_signed_it(api: Api) -> None:
    # httpx sends "/auth/role?" as written; the server's ASGI scope has no trace of the "?".
    for target in ("/auth/role?", "/auth/role"):
        response = await api.call("GET", target, key=api.user)
        assert response.status_code == 200, response.text
        assert response.json()["global_role"] == "user"
    forged = Key(api.user.access_key, "x" * 40, api.user.email, api.user.user_id)
    for target in ("/auth/role?", "/auth/role"):
        assert_problem(await api.call("GET", target, key=forged), 401, "unauthorized")
    # What was signed with a bare "?" still covers the query: nothing may be added to it.
    signed = _signed_by_user(api, "/auth/role?")
    response = await api.http.get(api.base_url + "/auth/role?group=x", headers=signed)
    assert_problem(response, 401, "unauthorized")


async def test_unknown_access_key_is_401(api: Api) -> None:
    stranger = Key("AKIAUNKNOWN000000000", "y" * 40, "x@y", api.user.user_id)
    body = assert_problem(
        await api.call("GET", "/auth", key=stranger, params={"echo": "x"}), 401, "unauthorized"
    )
    assert "unknown access key" in str(body["detail"])


@pytest.mark.parametrize("minutes", [16, -16])
async def test_date_far_from_server_time_is_400(api: Api, minutes: int) -> None:
    when = datetime.now(UTC) + timedelta(minutes=minutes)
    response = await api.call("GET", "/auth", key=api.user, params={"echo": "x"}, now=when)
    body = assert_problem(response, 400, "invalid-auth-params")
    assert body["field"] == "Date"


async def test_date_within_the_window_is_accepted(api: Api) -> None:
    when = datetime.now(UTC) - timedelta(minutes=14)
    response = await api.call("GET", "/auth", key=api.user, params={"echo": "x"}, now=when)
    assert response.status_code == 200


async def test_inactive_keypair_is_401_only_after_the_signature_holds(api: Api) -> None:
    await api.update_keypair(api.user, is_active=False)
    body = assert_problem(
        await api.call("GET", "/auth", key=api.user, params={"echo": "x"}), 401, "unauthorized"
    )
    assert "inactive" in str(body["detail"])
    forged = Key(api.user.access_key, "x" * 40, api.user.email, api.user.user_id)
    body = assert_problem(
        await api.call("GET", "/auth", key=forged, params={"echo": "x"}), 401, "unauthorized"
    )
    assert "inactive" not in str(body["detail"])


async def test_keypair_changes_apply_once_the_cached_lookup_expires(db: Database) -> None:
    async with running_api(db, auth_cache_ttl=0.5) as api:
        assert (
            await api.call("GET", "/auth", key=api.user, params={"echo": "x"})
        ).status_code == 200
        await api.update_keypair(api.user, is_active=False)
        assert (
            await api.call("GET", "/auth", key=api.user, params={"echo": "x"})
        ).status_code == 200
        await trio.sleep(0.6)
        response = await api.call("GET", "/auth", key=api.user, params={"echo": "x"})
        assert_problem(response, 401, "unauthorized")


async def test_a_changed_secret_key_applies_once_the_cached_lookup_expires(db: Database) -> None:
    async with running_api(db, auth_cache_ttl=0.5) as api:
        old, new = api.user, replace(api.user, secret_key="s" * 40)
        assert (await api.call("GET", "/auth", key=old, params={"echo": "x"})).status_code == 200
        await api.update_keypair(api.user, secret_key=new.secret_key)
        await trio.sleep(0.6)
        response = await api.call("GET", "/auth", key=old, params={"echo": "x"})
        assert_problem(response, 401, "unauthorized")
        assert (await api.call("GET", "/auth", key=new, params={"echo": "x"})).status_code == 200


async def test_inactive_user_and_domain_are_401(api: Api) -> None:
    async with api.db.begin() as conn:
        await conn.execute(
            sa.update(users).where(users.c.uuid == api.user.user_id).values(status="inactive")
        )
    assert_problem(
        await api.call("GET", "/auth", key=api.user, params={"echo": "x"}), 401, "unauthorized"
    )
    async with api.db.begin() as conn:
        await conn.execute(sa.update(domains).values(is_active=False))
    assert_problem(
        await api.call("GET", "/auth", key=api.admin, params={"echo": "x"}), 401, "unauthorized"
    )


async def test_credentials_on_a_public_route_are_still_checked(api: Api) -> None:
    forged = Key(api.user.access_key, "x" * 40, api.user.email, api.user.user_id)
    assert (await api.call("GET", "/", key=api.user)).status_code == 200
    assert_problem(await api.call("GET", "/", key=forged), 401, "unauthorized")


# ---------------------------------------------------------------------------
# method override, unknown routes, bad input
# ---------------------------------------------------------------------------


async def test_method_override_routes_a_post_as_the_named_method(api: Api) -> None:
    response = await api.call(
        "POST",
        "/auth/role",
        key=api.user,
        sign_method="GET",
        headers={"X-Method-Override": "GET"},
    )
    assert response.status_code == 200
    assert response.json()["global_role"] == "user"


async def test_method_override_is_refused_on_other_methods(api: Api) -> None:
    response = await api.call(
        "GET", "/auth/role", key=api.user, headers={"X-Method-Override": "DELETE"}
    )
    body = assert_problem(response, 400, "invalid-api-params")
    assert body["field"] == "X-Method-Override"


async def test_unknown_route_and_method_are_problems(api: Api) -> None:
    assert_problem(await api.call("GET", "/no/such/route", key=api.user), 404, "generic-not-found")
    response = await api.call("DELETE", "/resource/presets", key=api.user)
    assert_problem(response, 405, "method-not-allowed")
    assert "GET" in response.headers["Allow"]


async def test_malformed_json_is_400_naming_the_problem(api: Api) -> None:
    response = await api.call("POST", "/config/get", key=api.admin, content=b'{"key": "a",')
    body = assert_problem(response, 400, "invalid-api-params")
    assert "not valid JSON" in str(body["detail"])


async def test_wrong_types_name_the_field(api: Api) -> None:
    response = await api.call(
        "POST", "/config/get", key=api.admin, json_body={"key": "a", "prefix": "yes"}
    )
    body = assert_problem(response, 400, "invalid-api-params")
    assert body["field"] == "prefix"
    assert body["data"] == {"prefix": "Expected `bool`, got `str`"}


# ---------------------------------------------------------------------------
# roles and owner_access_key
# ---------------------------------------------------------------------------


@pytest.fixture
async def domain_admins(api: Api) -> dict[str, Key]:
    """A domain admin of ``default`` and a user of another domain, with keypairs."""
    report = await populate(
        api.db,
        {
            "domains": [{"name": "other"}],
            "users": [
                {"email": "dadmin@lablup.com", "domain_name": "default", "role": "admin",
                 "resource_policy": "default", "groups": ["default"]},
                {"email": "stranger@other.com", "domain_name": "other", "role": "user",
                 "resource_policy": "default"},
            ],
            "keypairs": [
                {"user": "dadmin@lablup.com", "resource_policy": "default"},
                {"user": "stranger@other.com", "resource_policy": "default"},
            ],
        },
    )  # fmt: skip
    rows = await api.db.fetch(sa.select(users.c.email, users.c.uuid))
    ids = {row.email: row.uuid for row in rows}
    return {
        kp.user_email: Key(kp.access_key, kp.secret_key, kp.user_email, ids[kp.user_email])
        for kp in report.keypairs
    }


async def test_roles_gate_the_config_routes(api: Api, domain_admins: dict[str, Key]) -> None:
    body = {"key": "some/key"}
    assert (await api.call("POST", "/config/get", key=api.admin, json_body=body)).status_code == 200
    for key in (api.user, domain_admins["dadmin@lablup.com"]):
        response = await api.call("POST", "/config/get", key=key, json_body=body)
        assert_problem(response, 403, "forbidden")


async def test_admin_keypair_flag_can_lower_privileges(api: Api) -> None:
    await api.update_keypair(api.admin, is_admin=False)
    response = await api.call("POST", "/config/get", key=api.admin, json_body={"key": "k"})
    assert_problem(response, 403, "forbidden")


async def test_users_cannot_act_for_another_key(api: Api) -> None:
    response = await api.call(
        "POST",
        "/resource/check-presets",
        key=api.user,
        params={"owner_access_key": api.admin.access_key},
    )
    assert_problem(response, 403, "forbidden")
    own = await api.call(
        "POST",
        "/resource/check-presets",
        key=api.user,
        params={"owner_access_key": api.user.access_key},
    )
    assert own.status_code == 200


async def test_superadmin_may_act_for_anyone(api: Api, domain_admins: dict[str, Key]) -> None:
    for target in (api.user.access_key, domain_admins["stranger@other.com"].access_key):
        response = await api.call(
            "GET", "/auth/role", key=api.admin, params={"owner_access_key": target}
        )
        assert response.status_code == 200, response.text


async def test_domain_admin_may_act_only_within_the_domain(
    api: Api, domain_admins: dict[str, Key]
) -> None:
    dadmin = domain_admins["dadmin@lablup.com"]
    ok = await api.call(
        "GET", "/auth/role", key=dadmin, params={"owner_access_key": api.user.access_key}
    )
    assert ok.status_code == 200
    for target in (domain_admins["stranger@other.com"].access_key, api.admin.access_key):
        response = await api.call(
            "GET", "/auth/role", key=dadmin, params={"owner_access_key": target}
        )
        assert_problem(response, 403, "forbidden")


async def test_unknown_owner_key_names_the_parameter(api: Api) -> None:
    response = await api.call(
        "GET", "/auth/role", key=api.admin, params={"owner_access_key": "AKIANOSUCHKEY0000000"}
    )
    body = assert_problem(response, 400, "invalid-api-params")
    assert body["field"] == "owner_access_key"


# ---------------------------------------------------------------------------
# rate limits
# ---------------------------------------------------------------------------


async def test_rate_limit_headers_count_down_per_access_key(api: Api) -> None:
    await api.update_keypair(api.user, rate_limit=5)
    seen = []
    for _ in range(5):
        response = await api.call("GET", "/auth", key=api.user, params={"echo": "x"})
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "5"
        assert response.headers["X-RateLimit-Window"] == "900"
        seen.append(int(response.headers["X-RateLimit-Remaining"]))
    assert seen == [4, 3, 2, 1, 0]
    refused = await api.call("GET", "/auth", key=api.user, params={"echo": "x"})
    assert_problem(refused, 429, "too-many-requests")
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert int(refused.headers["Retry-After"]) > 0
    # Another keypair is not affected.
    other = await api.call("GET", "/auth", key=api.admin, params={"echo": "x"})
    assert other.status_code == 200


async def test_failed_requests_count_too(api: Api) -> None:
    await api.update_keypair(api.user, rate_limit=2)
    assert (await api.call("POST", "/config/get", key=api.user, json_body={})).status_code == 403
    assert (await api.call("GET", "/nope/x", key=api.user)).status_code == 404
    assert (await api.call("POST", "/config/get", key=api.user, json_body={})).status_code == 403
    limited = await api.call("GET", "/auth", key=api.user, params={"echo": "x"})
    assert_problem(limited, 429, "too-many-requests")


async def test_public_calls_are_limited_per_client_address(db: Database) -> None:
    async with running_api(db, public_rate_limit=3) as api:
        remaining = []
        for _ in range(3):
            response = await api.http.get(api.base_url + "/")
            remaining.append(response.headers["X-RateLimit-Remaining"])
        assert remaining == ["2", "1", "0"]
        assert_problem(await api.http.get(api.base_url + "/"), 429, "too-many-requests")
        # Failed authentications count against the address, not the key they name.
        forged = Key(api.user.access_key, "x" * 40, api.user.email, api.user.user_id)
        assert_problem(await api.call("GET", "/auth", key=forged), 429, "too-many-requests")
        response = await api.call("GET", "/auth", key=api.user, params={"echo": "x"})
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "30000"


# ---------------------------------------------------------------------------
# hostile connections
# ---------------------------------------------------------------------------


async def test_clients_that_hang_up_mid_body_leave_the_api_serving(api: Api) -> None:
    """Hypercorn 0.18 lost its listener when an answer met a closing connection
    (``bai.common.hypercorn_setup``): 300 such clients stopped ``bai up``."""
    host, port = api.host.rsplit(":", 1)
    head = (
        b"POST /session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10000000\r\n\r\n"
    )

    def hang_up() -> None:
        # From another thread, so that the server is busy answering while each one goes.
        for _ in range(300):
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(head + b"{" * 70000)

    await trio.to_thread.run_sync(hang_up)
    response = await api.http.get(api.base_url + "/")
    assert response.status_code == 200
