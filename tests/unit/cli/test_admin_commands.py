"""``bai admin``, ``bai login``: option parsing, the requests sent and how answers print.

Against the signature-checking fake manager: what each command sends
(GraphQL text and variables, REST bodies) and what it prints for a user
(tables, ``-o json``, failure lines and exit statuses); the pure helpers of
:mod:`bai.cli.commands.admin.output` directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from test_cli_session import invoke

from bai.cli.commands.admin.output import cell, header, page_of, parse_format
from bai.cli.commands.admin.resource_policy import policy_values
from bai.client.envfile import login_env_path

from support.fakemanager import FakeManager, manager

__all__ = ["manager"]


# ------------------------------------------------------------------ pure parts


def test_parse_format_checks_names_and_keeps_subfields() -> None:
    known = ("email", "role", "groups { id name }")
    assert parse_format(None, known, ("email",)) == ["email"]
    assert parse_format("role, groups,role", known, ()) == ["role", "groups { id name }"]
    with pytest.raises(click.BadParameter, match="unknown field 'password'"):
        parse_format("email,password", known, ())
    with pytest.raises(click.BadParameter, match="names no field"):
        parse_format(" , ", known, ())


def test_cells_and_headers_read_well() -> None:
    assert cell(None) == "-"
    assert cell(True) == "yes"
    assert cell('{"cpu": "2", "mem": "4g"}') == "cpu=2 mem=4g"
    assert cell([{"id": "1", "name": "default"}, {"id": "2", "name": "ml"}]) == "default, ml"
    assert cell(["a", "b"]) == "a, b"
    assert header("is_active") == "Active?"
    assert header("max_vfolder_count") == "Max Vfolder Count"


def test_local_pages() -> None:
    items = [{"n": i} for i in range(5)]
    assert page_of(items, 2, 3) == [{"n": 3}, {"n": 4}]
    assert page_of(items, 2, 9) == []


def test_policy_values_keep_the_kinds_apart() -> None:
    given: dict[str, Any] = {
        "total_resource_slots": '{"cpu": "4"}',
        "max_concurrent_sessions": 2,
        "max_vfolder_count": None,
    }
    assert policy_values("keypair", given) == {
        "total_resource_slots": {"cpu": "4"},
        "max_concurrent_sessions": 2,
    }
    with pytest.raises(click.UsageError, match="--total-resource-slots does not apply to user"):
        policy_values("user", given)
    with pytest.raises(click.BadParameter, match="not JSON"):
        policy_values("keypair", {"total_resource_slots": "{cpu"})


def test_login_file_location(tmp_path: Path) -> None:
    assert login_env_path({"BAI_CLIENT_ENV": str(tmp_path / "x.env")}) == tmp_path / "x.env"
    assert login_env_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "bai" / "client.env"


# ------------------------------------------------------------------ against the fake manager


def gql(manager: FakeManager) -> dict[str, Any]:
    body: dict[str, Any] = manager.last("POST").json()
    return body


async def test_user_list_sends_a_paginated_query_and_prints_json(manager: FakeManager) -> None:
    manager.answer(
        "POST",
        "/admin/gql",
        {"data": {"user_list": {"items": [{"email": "a@x", "role": "user"}], "total_count": 7}}},
    )
    result = await invoke(
        manager, "admin", "user", "list", "-s", "active", "--limit", "1", "--offset", "3",
        "-f", "email,role", "-o", "json",
    )  # fmt: skip
    sent = gql(manager)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "total_count": 7,
        "items": [{"email": "a@x", "role": "user"}],
    }
    assert "user_list(limit: $limit, offset: $offset, status: $status" in sent["query"]
    assert "items { email role } total_count" in sent["query"]
    assert sent["variables"]["limit"] == 1
    assert sent["variables"]["offset"] == 3
    assert sent["variables"]["status"] == "active"


async def test_a_table_says_where_the_next_page_starts(manager: FakeManager) -> None:
    manager.answer(
        "POST",
        "/admin/gql",
        {"data": {"keypair_list": {"items": [{"access_key": "AK1"}], "total_count": 3}}},
    )
    result = await invoke(manager, "admin", "keypair", "list", "-f", "access_key", "--limit", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["Access Key", "AK1"]
    assert "Showing 1-1 of 3 keypairs; use --offset 1 for more." in result.stderr


async def test_a_failed_mutation_prints_the_managers_reason(manager: FakeManager) -> None:
    manager.answer(
        "POST",
        "/admin/gql",
        {"data": {"create_domain": {"ok": False, "msg": "domain already exists"}}},
    )
    result = await invoke(manager, "admin", "domain", "add", "dup")
    sent = gql(manager)
    assert result.exit_code == 1
    assert "create_domain failed: domain already exists" in result.stderr
    assert sent["variables"] == {"name": "dup", "props": {"description": "", "is_active": True}}
    assert "mutation($name: String!, $props: DomainInput!)" in sent["query"]


async def test_graphql_errors_exit_1_with_the_message(manager: FakeManager) -> None:
    manager.answer(
        "POST", "/admin/gql", {"data": None, "errors": [{"message": "permission denied"}]}
    )
    result = await invoke(manager, "admin", "agent", "list")
    assert result.exit_code == 1
    assert "permission denied" in result.stderr


async def test_keypair_add_prints_both_keys(manager: FakeManager) -> None:
    manager.answer(
        "POST",
        "/admin/gql",
        {
            "data": {
                "create_keypair": {
                    "ok": True,
                    "msg": "success",
                    "keypair": {"access_key": "AKNEW", "secret_key": "SKNEW"},
                }
            }
        },
    )
    result = await invoke(manager, "admin", "keypair", "add", "u@x", "--rate-limit", "50")
    sent = gql(manager)
    assert result.exit_code == 0, result.output
    assert "Access Key: AKNEW" in result.stdout and "Secret Key: SKNEW" in result.stdout
    assert sent["variables"]["props"] == {"is_active": True, "is_admin": False, "rate_limit": 50}


async def test_group_membership_and_scaling_group_association(manager: FakeManager) -> None:
    gid = "5f1b0f8e-3c55-4c3b-9d44-0a3a3f0a2c11"
    manager.answer_each(
        "POST",
        "/admin/gql",
        [
            {"data": {"modify_group": {"ok": True, "msg": "ok"}}},
            {"data": {"associate_scaling_group_with_user_group": {"ok": True, "msg": "ok"}}},
        ],
    )
    added = await invoke(manager, "admin", "group", "add-users", gid, "u1", "u2")
    associated = await invoke(manager, "admin", "scaling-group", "associate-group", "gpu", gid)
    first, second = manager.bodies("POST", "/admin/gql")
    assert (added.exit_code, associated.exit_code) == (0, 0), added.output + associated.output
    assert first["variables"] == {
        "gid": gid,
        "props": {"user_update_mode": "add", "user_uuids": ["u1", "u2"]},
    }
    assert "$user_group: UUID!" in second["query"]
    assert second["variables"] == {"scaling_group": "gpu", "user_group": gid}


async def test_manager_freeze_and_announcement_bodies(manager: FakeManager) -> None:
    manager.answer("PUT", "/manager/status", None, status=204)
    manager.answer("POST", "/manager/announcement", None, status=204)
    frozen = await invoke(manager, "admin", "manager", "freeze", "--force-kill")
    posted = await invoke(manager, "admin", "announcement", "update", "hello")
    empty = await invoke(manager, "admin", "announcement", "update", " ")
    assert (frozen.exit_code, posted.exit_code) == (0, 0), frozen.output + posted.output
    assert manager.bodies("PUT", "/manager/status") == [{"status": "frozen", "force_kill": True}]
    assert manager.bodies("POST", "/manager/announcement") == [
        {"enabled": True, "message": "hello"}
    ]
    assert empty.exit_code == 2


async def test_login_sends_an_unsigned_authorize_and_a_refusal_saves_nothing(
    manager: FakeManager, tmp_path: Path
) -> None:
    # The fake manager refuses unsigned requests, as the real one refuses a wrong password.
    target = tmp_path / "login.env"
    env = {"BAI_CLIENT_ENV": str(target), "BACKEND_ACCESS_KEY": "", "BACKEND_SECRET_KEY": ""}
    result = await invoke(
        manager, "login", "u@x", "-d", "dom", "--password-stdin", env=env, stdin="pw\n"
    )
    sent = manager.last("POST")
    assert result.exit_code == 1
    assert "401 Unauthorized" in result.stderr
    assert sent.path == "/auth/authorize"
    assert "authorization" not in sent.headers
    assert sent.json() == {"type": "keypair", "domain": "dom", "username": "u@x", "password": "pw"}
    assert not target.exists()
    assert "Not signed in" in (await invoke(manager, "logout", env=env)).stderr


async def test_update_password_refuses_differing_new_passwords(manager: FakeManager) -> None:
    result = await invoke(manager, "update-password", "--password-stdin", stdin="old\nn1\nn2\n")
    assert result.exit_code == 2
    assert "differ" in result.stderr
    assert manager.bodies("POST", "/auth/update-password") == []
