"""The manager's administration routes with each role: ``/acl``, ``/config/resource-slots``,
``/scaling-groups``, ``/manager/status`` and ``/manager/announcement``, ``/logs/error``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from test_api_accounts import add_domain_admin

from bai.manager.db import Database
from bai.manager.models import error_logs, groups, scaling_groups, sgroups_for_domains, users
from bai.manager.models.identity import domains
from bai.manager.models.shared_config import get_config

from support.api import Api, Key, assert_problem, running_api


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    async with running_api(db, auth_cache_ttl=0) as running:
        yield running


async def default_project(api: Api) -> uuid.UUID:
    found = await api.db.fetch(sa.select(groups.c.id).where(groups.c.name == "default"))
    return uuid.UUID(str(found.scalar_one()))


# ---------------------------------------------------------------- /acl and slots


async def test_acl_lists_the_folder_host_permissions(api: Api) -> None:
    for key in (api.user, api.admin):
        answer = await api.call("GET", "/acl", key=key)
        permissions = answer.json()["vfolder_host_permission_list"]
        assert permissions[:4] == [
            "create-vfolder",
            "modify-vfolder",
            "delete-vfolder",
            "mount-in-session",
        ]
    assert_problem(await api.call("GET", "/acl"), 401, "unauthorized")


async def test_resource_slots_are_public(api: Api) -> None:
    answer = await api.call("GET", "/config/resource-slots")
    assert answer.status_code == 200, answer.text
    assert answer.json()["cpu"] == "count"
    assert answer.json()["mem"] == "bytes"
    details = (await api.call("GET", "/config/resource-slots/details")).json()
    assert details["cpu"]["human_readable_name"] == "CPU"
    assert details["mem"]["display_unit"] == "GiB"
    assert details["mem"]["number_format"] == {"binary": True, "round_length": 0}
    in_group = await api.call(
        "GET", "/config/resource-slots/details", key=api.user, params={"sgroup": "default"}
    )
    assert set(in_group.json()) == {"cpu", "mem"}
    empty = await api.call("GET", "/config/resource-slots/details", params={"sgroup": ""})
    assert assert_problem(empty, 400, "invalid-api-params")["field"] == "sgroup"


# ---------------------------------------------------------------- /scaling-groups


async def test_scaling_groups_by_role(api: Api) -> None:
    async with api.db.begin() as conn:
        await conn.execute(
            sa.insert(scaling_groups).values(
                name="private", is_public=False, driver="static", scheduler="fifo"
            )
        )
        await conn.execute(
            sa.insert(sgroups_for_domains).values(scaling_group="private", domain="default")
        )
    dadmin = await add_domain_admin(api)
    project = await default_project(api)
    for group in ("default", str(project)):
        user = await api.call("GET", "/scaling-groups", key=api.user, params={"group": group})
        assert user.json() == {"scaling_groups": [{"name": "default"}]}
        for key in (api.admin, dadmin):
            admin = await api.call("GET", "/scaling-groups", key=key, params={"group": group})
            assert admin.json() == {"scaling_groups": [{"name": "default"}, {"name": "private"}]}
    version = await api.call(
        "GET", "/scaling-groups/default/wsproxy-version", key=api.user, params={"group": "default"}
    )
    assert version.json() == {"wsproxy_version": "v1"}
    async with api.db.begin() as conn:
        await conn.execute(
            sa.update(scaling_groups)
            .where(scaling_groups.c.name == "default")
            .values(wsproxy_addr="http://127.0.0.1:1")
        )
    version = await api.call(
        "GET", "/scaling-groups/default/wsproxy-version", key=api.user, params={"group": "default"}
    )
    assert version.json() == {"wsproxy_version": "v2"}
    hidden = await api.call(
        "GET", "/scaling-groups/private/wsproxy-version", key=api.user, params={"group": "default"}
    )
    assert_problem(hidden, 404, "object-not-found")


async def test_scaling_groups_bad_input(api: Api) -> None:
    missing = await api.call("GET", "/scaling-groups", key=api.user)
    assert assert_problem(missing, 400, "invalid-api-params")["field"] == "group"
    unknown = await api.call("GET", "/scaling-groups", key=api.user, params={"group": "nope"})
    assert assert_problem(unknown, 400, "invalid-api-params")["field"] == "group"
    assert_problem(
        await api.call("GET", "/scaling-groups", params={"group": "x"}), 401, "unauthorized"
    )


# ---------------------------------------------------------------- /manager/status


async def test_status_is_public_and_freezing_needs_a_superadmin(api: Api) -> None:
    status = await api.call("GET", "/manager/status")
    body = status.json()
    assert (body["status"], body["active_sessions"]) == ("running", 0)
    assert body["nodes"][0]["status"] == "running"
    dadmin = await add_domain_admin(api)
    for key in (api.user, dadmin):
        refused = await api.call("PUT", "/manager/status", key=key, json_body={"status": "frozen"})
        assert_problem(refused, 403, "forbidden")
    assert_problem(
        await api.call("PUT", "/manager/status", json_body={"status": "frozen"}),
        401,
        "unauthorized",
    )
    assert (await api.call("GET", "/manager/status")).json()["status"] == "running"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "paused"}, "status"),
        ({}, "status"),
        ({"status": "frozen", "force_kill": "maybe"}, "force_kill"),
    ],
)
async def test_status_bad_input(api: Api, body: dict[str, object], field: str) -> None:
    response = await api.call("PUT", "/manager/status", key=api.admin, json_body=body)
    assert assert_problem(response, 400, "invalid-api-params")["field"] == field
    assert (await api.call("GET", "/manager/status")).json()["status"] == "running"


async def test_a_frozen_manager_refuses_new_sessions_and_folders(api: Api) -> None:
    frozen = await api.call("PUT", "/manager/status", key=api.admin, json_body={"status": "frozen"})
    assert frozen.status_code == 204, frozen.text
    async with api.db.begin_readonly() as conn:
        assert await get_config(conn, "manager/status") == "frozen"
    assert (await api.call("GET", "/manager/status")).json()["status"] == "frozen"
    create = await api.call(
        "POST", "/session", key=api.user, json_body={"image": "python", "name": "s1"}
    )
    problem = assert_problem(create, 503, "server-frozen")
    assert "frozen" in problem["detail"]
    folder = await api.call("POST", "/folders", key=api.user, json_body={"name": "f1"})
    assert_problem(folder, 503, "server-frozen")
    assert_problem(await api.call("GET", "/acl", key=api.user), 503, "server-frozen")
    # Reads go on during maintenance.
    assert (await api.call("GET", "/folders", key=api.user)).status_code == 200
    unfrozen = await api.call(
        "PUT", "/manager/status", key=api.admin, json_body={"status": "running"}
    )
    assert unfrozen.status_code == 204
    assert (await api.call("GET", "/acl", key=api.user)).status_code == 200


# ---------------------------------------------------------------- /manager/announcement


async def test_announcement_post_get_delete(api: Api) -> None:
    assert (await api.call("GET", "/manager/announcement")).json() == {
        "enabled": False,
        "message": "",
    }
    posted = await api.call(
        "POST",
        "/manager/announcement",
        key=api.admin,
        json_body={"enabled": True, "message": "Maintenance at 10:00"},
    )
    assert posted.status_code == 204, posted.text
    for key in (None, api.user):
        answer = await api.call("GET", "/manager/announcement", key=key)
        assert answer.json() == {"enabled": True, "message": "Maintenance at 10:00"}
    deleted = await api.call(
        "POST", "/manager/announcement", key=api.admin, json_body={"enabled": False}
    )
    assert deleted.status_code == 204
    assert (await api.call("GET", "/manager/announcement")).json()["enabled"] is False


async def test_announcement_refusals_change_nothing(api: Api) -> None:
    dadmin = await add_domain_admin(api)
    body = {"enabled": True, "message": "hello"}
    for key in (api.user, dadmin):
        refused = await api.call("POST", "/manager/announcement", key=key, json_body=body)
        assert_problem(refused, 403, "forbidden")
    empty = await api.call(
        "POST", "/manager/announcement", key=api.admin, json_body={"enabled": True, "message": " "}
    )
    assert assert_problem(empty, 400, "invalid-api-params")["field"] == "message"
    typed = await api.call(
        "POST", "/manager/announcement", key=api.admin, json_body={"enabled": "yes please"}
    )
    assert assert_problem(typed, 400, "invalid-api-params")["field"] == "enabled"
    assert (await api.call("GET", "/manager/announcement")).json()["enabled"] is False


# ---------------------------------------------------------------- /logs/error


def report(message: str, **extra: object) -> dict[str, object]:
    return {
        "severity": "error",
        "source": "webui",
        "message": message,
        "context_lang": "js",
        "context_env": '{"browser": "firefox"}',
    } | extra


async def file_report(api: Api, key: Key, message: str) -> None:
    answer = await api.call("POST", "/logs/error", key=key, json_body=report(message))
    assert answer.json() == {"success": True}, answer.text


async def test_error_logs_visibility_by_role(api: Api) -> None:
    dadmin = await add_domain_admin(api)
    async with api.db.begin() as conn:
        await conn.execute(sa.insert(domains).values(name="other"))
    outsider = await add_domain_admin(api, "outsider@other.org")
    async with api.db.begin() as conn:
        await conn.execute(
            sa.update(users).where(users.c.email == outsider.email).values(domain_name="other")
        )
    await file_report(api, api.user, "user's")
    await file_report(api, dadmin, "dadmin's")
    await file_report(api, outsider, "outsider's")

    async def messages(key: Key, **params: str) -> list[str]:
        answer = await api.call("GET", "/logs/error", key=key, params=params or None)
        body = answer.json()
        assert body["count"] >= len(body["logs"])
        return sorted(entry["message"] for entry in body["logs"])

    assert await messages(api.admin) == ["dadmin's", "outsider's", "user's"]
    assert await messages(dadmin) == ["dadmin's", "user's"]
    assert await messages(outsider) == ["outsider's"]
    assert await messages(api.user) == ["user's"]
    entry = (await api.call("GET", "/logs/error", key=api.user)).json()["logs"][0]
    assert entry["context_env"] == {"browser": "firefox"}
    assert entry["user"] == str(api.user.user_id)
    assert "is_cleared" not in entry
    # A user clears their own report: it disappears for them, admins still see it.
    cleared = await api.call("POST", f"/logs/error/{entry['log_id']}/clear", key=api.user)
    assert cleared.json() == {"success": True}
    assert await messages(api.user) == []
    admin_view = (await api.call("GET", "/logs/error", key=dadmin)).json()["logs"]
    assert {e["message"]: e["is_cleared"] for e in admin_view}["user's"] is True
    # Nobody clears what they cannot see.
    others = (await api.call("GET", "/logs/error", key=outsider)).json()["logs"][0]
    for key in (api.user, dadmin):
        refused = await api.call("POST", f"/logs/error/{others['log_id']}/clear", key=key)
        assert_problem(refused, 404, "object-not-found")
    assert_problem(await api.call("GET", "/logs/error"), 401, "unauthorized")


async def test_error_logs_paging_and_mark_read(api: Api) -> None:
    for index in range(5):
        await file_report(api, api.user, f"report {index}")
    page = await api.call(
        "GET", "/logs/error", key=api.user, params={"page_size": "2", "page_no": "2"}
    )
    body = page.json()
    assert body["count"] == 5
    assert [entry["message"] for entry in body["logs"]] == ["report 2", "report 1"]
    assert not any(entry["is_read"] for entry in body["logs"])
    await api.call(
        "GET",
        "/logs/error",
        key=api.user,
        params={"page_size": "2", "page_no": "1", "mark_read": "true"},
    )
    read = (await api.call("GET", "/logs/error", key=api.user)).json()["logs"]
    assert [entry["is_read"] for entry in read] == [True, True, False, False, False]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (report("x", severity="fatal"), "severity"),
        (report("x", context_env="not json"), "context_env"),
        (report("x", request_status="500"), "request_status"),
        ({"severity": "error", "source": "x", "message": "m", "context_lang": "js"}, "context_env"),
        (report("x", extra="field"), "extra"),
    ],
)
async def test_error_log_bad_input_adds_nothing(
    api: Api, body: dict[str, object], field: str
) -> None:
    response = await api.call("POST", "/logs/error", key=api.user, json_body=body)
    assert assert_problem(response, 400, "invalid-api-params")["field"] == field
    count = await api.db.fetch(sa.select(sa.func.count()).select_from(error_logs))
    assert count.scalar_one() == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"page_size": "101"}, "page_size"),
        ({"page_no": "0"}, "page_no"),
        ({"mark_read": "x"}, "mark_read"),
    ],
)
async def test_error_log_list_bad_query(api: Api, params: dict[str, str], field: str) -> None:
    response = await api.call("GET", "/logs/error", key=api.user, params=params)
    assert assert_problem(response, 400, "invalid-api-params")["field"] == field


async def test_clear_needs_a_uuid(api: Api) -> None:
    response = await api.call("POST", "/logs/error/not-a-uuid/clear", key=api.user)
    assert assert_problem(response, 400, "invalid-api-params")["field"] == "log_id"
