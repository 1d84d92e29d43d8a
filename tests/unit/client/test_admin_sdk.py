"""The SDK's GraphQL helpers and administration wrappers against the fake manager.

What is pinned: the query text and typed variables each wrapper sends (the
official client's shapes), that no caller text reaches the query, and how
``errors`` and ``ok: false`` answers are raised.
"""

from __future__ import annotations

from typing import Any

import pytest

from bai.client import (
    APIClient,
    Auth,
    ErrorLog,
    GraphQLError,
    Group,
    Manager,
    MutationFailed,
    ResourcePolicy,
    User,
)
from bai.client.admin import check_fields, fetch_object, mutate
from bai.common.errors import InvalidValue

from support.fakemanager import FakeManager, manager

__all__ = ["manager"]


def sent(fake: FakeManager) -> dict[str, Any]:
    body: dict[str, Any] = fake.last("POST").json()
    return body


def test_check_fields_accepts_fields_and_one_level_of_subfields() -> None:
    assert check_fields(["email", "groups { id name }"]) == "email groups { id name }"
    for bad in (["email } users { password"], ["a(b: 1)"], ["x { y { z } }"], []):
        with pytest.raises(InvalidValue):
            check_fields(bad)


async def test_ok_false_raises_mutation_failed(manager: FakeManager) -> None:
    manager.answer(
        "POST", "/admin/gql", {"data": {"delete_user": {"ok": False, "msg": "no such user"}}}
    )
    async with APIClient(manager.config()) as api:
        with pytest.raises(MutationFailed) as failed:
            await User.delete(api, "x@y")
    assert (failed.value.mutation, failed.value.msg) == ("delete_user", "no such user")
    assert str(failed.value) == "delete_user failed: no such user"
    assert sent(manager)["query"] == (
        "mutation($email: String!) { delete_user(email: $email) { ok msg } }"
    )


async def test_errors_raise_graphql_error_with_each_message(manager: FakeManager) -> None:
    manager.answer(
        "POST",
        "/admin/gql",
        {"data": None, "errors": [{"message": "denied"}, {"message": "also denied"}]},
    )
    async with APIClient(manager.config()) as api:
        with pytest.raises(GraphQLError) as raised:
            await mutate(api, "purge_domain", {"name": ("d", "String!")})
    assert raised.value.messages == ["denied", "also denied"]
    assert raised.value.detail == "denied; also denied"
    assert raised.value.status == 400


async def test_policy_kinds_name_their_own_mutations_and_inputs(manager: FakeManager) -> None:
    manager.answer(
        "POST",
        "/admin/gql",
        {"data": {"create_user_resource_policy": {"ok": True, "msg": "success"}}},
    )
    async with APIClient(manager.config()) as api:
        await ResourcePolicy.create(api, "p", {"max_vfolder_count": 3}, kind="user")
        with pytest.raises(InvalidValue, match="keypair, user, project"):
            await ResourcePolicy.list(api, "domain")
    body = sent(manager)
    assert "$props: CreateUserResourcePolicyInput!" in body["query"]
    assert body["variables"] == {"name": "p", "props": {"max_vfolder_count": 3}}


async def test_group_create_sends_json_strings_for_slots(manager: FakeManager) -> None:
    manager.answer(
        "POST",
        "/admin/gql",
        {"data": {"create_group": {"ok": True, "msg": "", "group": {"id": "g1", "name": "t"}}}},
    )
    async with APIClient(manager.config()) as api:
        created = await Group.create(api, "dom", "t", total_resource_slots={"cpu": "8"})
    body = sent(manager)
    assert created == {"id": "g1", "name": "t"}
    assert body["variables"]["props"]["total_resource_slots"] == '{"cpu": "8"}'
    assert (
        "create_group(name: $name, props: $props) { ok msg group { id domain_name name } }"
        in (body["query"])
    )


async def test_an_absent_object_is_none(manager: FakeManager) -> None:
    manager.answer("POST", "/admin/gql", {"data": {"domain": None}})
    async with APIClient(manager.config()) as api:
        assert await fetch_object(api, "domain", fields=["name"]) is None


async def test_rest_wrappers_send_the_official_bodies(manager: FakeManager) -> None:
    manager.answer("GET", "/manager/announcement", {"enabled": True, "message": "hi"})
    manager.answer("GET", "/logs/error", {"logs": [{"log_id": "1"}], "count": 4})
    manager.answer("POST", "/auth/update-password", {"error_msg": "none"})
    async with APIClient(manager.config()) as api:
        announcement = await Manager.get_announcement(api)
        page = await ErrorLog.list(api, page_size=1, page_no=2)
        await Auth.update_password(api, "a", "b", "b")
        with pytest.raises(InvalidValue, match="message"):
            await Manager.update_announcement(api, message="")
    logs_request = next(r for r in manager.requests if r.path == "/logs/error")
    assert (announcement.enabled, announcement.message) == (True, "hi")
    assert (page.count, page.logs) == (4, [{"log_id": "1"}])
    assert logs_request.query == {"mark_read": ["false"], "page_size": ["1"], "page_no": ["2"]}
    assert manager.bodies("POST", "/auth/update-password") == [
        {"old_password": "a", "new_password": "b", "new_password2": "b"}
    ]
