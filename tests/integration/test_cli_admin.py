"""``bai admin ...``, ``bai login``/``logout``/``update-password`` against the real manager API.

Each test runs the real commands (in-process with click's runner, in a
thread, with the environment a user would have: :func:`invoke`, the
``test_client_api`` helper plus stdin) against a manager on SQLite and on
PostgreSQL, reads what they print (``-o json`` where a script would) and checks the effect through
another command.
"""

from __future__ import annotations

import functools
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trio
from click.testing import CliRunner, Result

from bai.cli.main import cli
from bai.manager.db import Database
from bai.manager.models import users
from bai.manager.models.identity import hash_password

from support.api import Api, Key, manager_config, running_api
from support.api_session import Deployment

#: A key with both halves empty: the command runs with no keypair in its environment.
NO_KEY = Key("", "", "", uuid.UUID(int=0))


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    # No auth cache: a keypair (de)activated by one command counts for the next.
    async with running_api(db, auth_cache_ttl=0) as running:
        yield running


@pytest.fixture(autouse=True)
def login_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where ``bai login`` keeps its keypair in these tests (never the user's own)."""
    path = tmp_path / "login" / "client.env"
    monkeypatch.setenv("BAI_CLIENT_ENV", str(path))
    return path


async def invoke(api: Api, key: Key, *args: str, stdin: str | None = None) -> Result:
    """Run ``bai ARGS`` in-process as a user whose environment names *api* and *key*
    (and no other ``BACKEND_*`` setting), with *stdin* as its input."""
    environment: dict[str, str | None] = {k: None for k in os.environ if k.startswith("BACKEND_")}
    environment.update(
        BACKEND_ENDPOINT=api.base_url,
        BACKEND_ACCESS_KEY=key.access_key,
        BACKEND_SECRET_KEY=key.secret_key,
    )
    runner = CliRunner()
    return await trio.to_thread.run_sync(
        functools.partial(runner.invoke, cli, list(args), input=stdin, env=environment)
    )


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


async def admin(api: Api, *args: str) -> Result:
    return await invoke(api, api.admin, "admin", *args)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def set_password(api: Api, email: str, password: str) -> None:
    async with api.db.begin() as conn:
        await conn.execute(
            sa.update(users).where(users.c.email == email).values(password=hash_password(password))
        )


# ------------------------------------------------------------------ lists


async def test_lists_print_json_pages_and_chosen_fields(api: Api) -> None:
    first = as_json(
        await admin(api, "user", "list", "--limit", "1", "--order", "email", "-o", "json")
    )
    second = as_json(
        await admin(
            api,
            "user",
            "list",
            "--limit",
            "1",
            "--offset",
            "1",
            "--order",
            "email",
            "-f",
            "email,role",
            "-o",
            "json",
        )
    )
    groups = as_json(await admin(api, "group", "list", "-f", "name,domain_name", "-o", "json"))
    domains = as_json(await admin(api, "domain", "list", "-o", "json"))
    sgroups = as_json(await admin(api, "scaling-group", "list", "-f", "name,driver", "-o", "json"))
    policies = as_json(await admin(api, "resource-policy", "list", "-o", "json"))
    presets = as_json(await admin(api, "preset", "list", "-o", "json"))
    agents = as_json(await admin(api, "agent", "list", "--all", "-o", "json"))
    sessions = as_json(await admin(api, "session", "list", "-o", "json"))
    assert first["total_count"] == 2 and first["items"][0]["email"] == "admin@lablup.com"
    assert second["items"] == [{"email": "user@lablup.com", "role": "user"}]
    assert groups["items"] == [{"name": "default", "domain_name": "default"}]
    assert "default" in [d["name"] for d in domains["items"]]
    assert "default" in [s["name"] for s in sgroups["items"]]
    assert set(sgroups["items"][0]) == {"name", "driver"}
    assert "default" in [p["name"] for p in policies["items"]]
    assert presets["total_count"] == len(presets["items"])
    assert agents["total_count"] == len(agents["items"])
    assert sessions == {"total_count": 0, "items": []}


async def test_tables_for_people(api: Api) -> None:
    table = ok(await admin(api, "user", "list", "-f", "email,role,groups"))
    info = ok(await invoke(api, api.user, "admin", "user", "info"))
    lines = [line.split("\t") for line in table.stdout.splitlines()]
    assert lines[0] == ["Email", "Role", "Projects"]
    assert ["user@lablup.com", "user", "default"] in lines[1:]
    assert "Email\tuser@lablup.com" in info.stdout


async def test_an_unknown_field_is_a_usage_error(api: Api) -> None:
    refused = await admin(api, "user", "list", "-f", "email,password")
    assert refused.exit_code == 2
    assert "unknown field 'password'" in refused.stderr


# ------------------------------------------------------------------ keypairs and policies


async def test_keypair_commands(api: Api) -> None:
    created = as_json(await admin(api, "keypair", "add", "user@lablup.com", "-o", "json"))
    access_key = created["access_key"]
    new = Key(access_key, created["secret_key"], "user@lablup.com", api.user.user_id)
    ok(await admin(api, "keypair", "deactivate", access_key))
    refused = await invoke(api, new, "admin", "keypair", "info")
    ok(await admin(api, "keypair", "activate", access_key))
    ok(await admin(api, "keypair", "update", access_key, "--rate-limit", "9000"))
    own = as_json(await invoke(api, new, "admin", "keypair", "info", "-o", "json"))
    listed = as_json(
        await admin(api, "keypair", "list", "--user-id", "user@lablup.com", "-o", "json")
    )
    ok(await admin(api, "keypair", "delete", access_key))
    after = as_json(
        await admin(api, "keypair", "list", "--user-id", "user@lablup.com", "-o", "json")
    )
    assert created["ok"] is True and created["secret_key"]
    assert refused.exit_code == 1 and "401" in refused.stderr
    assert (own["access_key"], own["is_active"], own["rate_limit"]) == (access_key, True, 9000)
    assert listed["total_count"] == 2
    assert [k["access_key"] for k in after["items"]] == [api.user.access_key]


async def test_keypair_resource_policy_commands(api: Api) -> None:
    name = unique("policy")
    ok(
        await admin(
            api,
            "resource-policy",
            "add",
            name,
            "--default-for-unspecified",
            "LIMITED",
            "--total-resource-slots",
            '{"cpu": "4", "mem": "8g"}',
            "--max-concurrent-sessions",
            "2",
            "--max-containers-per-session",
            "1",
            "--idle-timeout",
            "600",
        )
    )
    ok(await admin(api, "resource-policy", "update", name, "--max-concurrent-sessions", "6"))
    shown = as_json(await admin(api, "resource-policy", "info", name, "-o", "json"))
    ok(await admin(api, "resource-policy", "delete", name))
    missing = await admin(api, "resource-policy", "info", name)
    wrong_kind = await admin(api, "resource-policy", "add", name, "--max-vfolder-count", "3")
    assert (shown["max_concurrent_sessions"], shown["idle_timeout"]) == (6, 600)
    assert missing.exit_code == 1 and "no keypair resource policy" in missing.stderr
    assert wrong_kind.exit_code == 2 and "does not apply" in wrong_kind.stderr


async def test_project_resource_policy_commands(api: Api) -> None:
    name = unique("project-policy")
    add = ("resource-policy", "add", name, "--kind", "project", "--max-vfolder-count", "4")
    ok(await admin(api, *add))
    shown = as_json(
        await admin(api, "resource-policy", "info", name, "-k", "project", "-o", "json")
    )
    listed = as_json(await admin(api, "resource-policy", "list", "-k", "project", "-o", "json"))
    ok(await admin(api, "resource-policy", "delete", name, "-k", "project"))
    assert shown["max_vfolder_count"] == 4
    assert set(listed["items"][0]) == {
        "name",
        "created_at",
        "max_vfolder_count",
        "max_quota_scope_size",
    }


async def test_a_user_keypair_is_refused_with_the_reason(api: Api) -> None:
    refused = await invoke(api, api.user, "admin", "keypair", "add", "user@lablup.com")
    listed = as_json(
        await admin(api, "keypair", "list", "--user-id", "user@lablup.com", "-o", "json")
    )
    assert refused.exit_code == 1
    assert refused.stderr.strip()
    assert listed["total_count"] == 1


# ------------------------------------------------------------------ login


async def test_login_saves_the_keypair_and_logout_forgets_it(api: Api, login_file: Path) -> None:
    await set_password(api, "user@lablup.com", "correct horse 1")
    login = ("login", "user@lablup.com", "--password-stdin")
    wrong = await invoke(api, NO_KEY, *login, stdin="wrong\n")
    signed_in = ok(await invoke(api, NO_KEY, *login, stdin="correct horse 1\n"))
    mine = as_json(await invoke(api, NO_KEY, "admin", "keypair", "info", "-o", "json"))
    mode = os.stat(login_file).st_mode & 0o777
    ok(await invoke(api, NO_KEY, "logout"))
    after = await invoke(api, NO_KEY, "admin", "keypair", "info")
    assert wrong.exit_code == 1 and "401" in wrong.stderr
    assert "Signed in as user@lablup.com" in signed_in.stderr
    assert mine["access_key"] == api.user.access_key
    assert mode == 0o600
    assert not os.path.exists(login_file)  # noqa: ASYNC240
    assert after.exit_code == 2 and "bai login" in after.stderr


async def test_update_password(api: Api) -> None:
    await set_password(api, "user@lablup.com", "old-password-1")
    changed = await invoke(
        api,
        api.user,
        "update-password",
        "--password-stdin",
        stdin="old-password-1\nnew-password-2\nnew-password-2\n",
    )
    login = ("login", "user@lablup.com", "--password-stdin")
    old = await invoke(api, NO_KEY, *login, stdin="old-password-1\n")
    new = await invoke(api, NO_KEY, *login, stdin="new-password-2\n")
    assert changed.exit_code == 0, changed.output
    assert old.exit_code == 1 and "401" in old.stderr
    assert new.exit_code == 0, new.output


# ------------------------------------------------------------------ identity and resources


async def test_user_commands(api: Api) -> None:
    email = f"{unique('ann')}@example.com"
    created = as_json(
        await admin(
            api, "user", "add", "default", email, "ann-password-1", "-n", "Ann", "-o", "json"
        )
    )
    ok(await admin(api, "user", "update", email, "--full-name", "Ann B.", "--role", "admin"))
    shown = as_json(await admin(api, "user", "info", email, "-o", "json"))
    twice = await admin(api, "user", "add", "default", email, "ann-password-1")
    ok(await admin(api, "user", "deactivate", email))
    inactive = as_json(await admin(api, "user", "info", email, "-f", "status", "-o", "json"))
    ok(await admin(api, "user", "delete", email))
    ok(await admin(api, "user", "purge", email, "--yes"))
    gone = await admin(api, "user", "info", email)
    assert created["ok"] is True and created["uuid"]
    assert (shown["full_name"], shown["role"]) == ("Ann B.", "admin")
    assert twice.exit_code == 1
    assert inactive == {"status": "inactive"}
    assert gone.exit_code == 1


async def test_domain_and_project_commands(api: Api) -> None:
    domain = unique("dom")
    ok(await admin(api, "domain", "add", domain, "--description", "for tests"))
    ok(await admin(api, "domain", "update", domain, "--description", "changed"))
    shown = as_json(await admin(api, "domain", "info", domain, "-o", "json"))
    project = as_json(await admin(api, "group", "add", domain, "team", "-o", "json"))
    email = f"{unique('m')}@example.com"
    member = as_json(await admin(api, "user", "add", domain, email, "pw-1234567", "-o", "json"))
    ok(await admin(api, "group", "add-users", project["id"], member["uuid"]))
    members = as_json(await admin(api, "user", "list", "--group", project["id"], "-o", "json"))
    ok(await admin(api, "group", "remove-users", project["id"], member["uuid"]))
    ok(await admin(api, "group", "update", project["id"], "--description", "the team"))
    info = as_json(await admin(api, "group", "info", project["id"], "-o", "json"))
    ok(await admin(api, "group", "delete", project["id"]))
    refused = await admin(api, "domain", "delete", domain)
    ok(await admin(api, "user", "purge", email, "--yes"))
    ok(await admin(api, "group", "purge", project["id"], "--yes"))
    ok(await admin(api, "domain", "delete", domain))
    ok(await admin(api, "domain", "purge", domain, "--yes"))
    gone = await admin(api, "domain", "info", domain)
    assert shown["description"] == "changed"
    assert [u["uuid"] for u in members["items"]] == [member["uuid"]]
    assert info["description"] == "the team"
    assert refused.exit_code == 1 and "still has 1 user" in refused.stderr
    assert gone.exit_code == 1


async def test_scaling_group_and_preset_commands(api: Api) -> None:
    name = unique("sg")
    preset = unique("preset")
    ok(await admin(api, "scaling-group", "add", name, "--description", "GPU nodes"))
    ok(await admin(api, "scaling-group", "update", name, "--private"))
    ok(await admin(api, "scaling-group", "associate-domain", name, "default"))
    shown = as_json(await admin(api, "scaling-group", "info", name, "-o", "json"))
    ok(await admin(api, "scaling-group", "dissociate-domain", name, "default"))
    ok(await admin(api, "scaling-group", "delete", name))
    available = as_json(
        await invoke(api, api.user, "admin", "scaling-group", "available", "default", "-o", "json")
    )
    ok(await admin(api, "preset", "add", preset, "-r", "cpu=2", "-r", "mem=4g"))
    listed = as_json(await admin(api, "preset", "list", "-o", "json"))
    ok(await admin(api, "preset", "delete", preset))
    assert (shown["description"], shown["is_public"]) == ("GPU nodes", False)
    assert [sg["name"] for sg in available["items"]] == ["default"]
    assert preset in [p["name"] for p in listed["items"]]


# ------------------------------------------------------------------ the manager


async def test_manager_announcement_and_error_log_commands(api: Api) -> None:
    ok(await admin(api, "manager", "freeze"))
    frozen = as_json(await admin(api, "manager", "status", "-o", "json"))
    ok(await admin(api, "manager", "unfreeze"))
    running = as_json(await admin(api, "manager", "status", "-o", "json"))
    ok(await admin(api, "announcement", "update", "maintenance at 10:00"))
    posted = as_json(await invoke(api, api.user, "admin", "announcement", "get", "-o", "json"))
    ok(await admin(api, "announcement", "delete"))
    refused = await invoke(api, api.user, "admin", "manager", "freeze")
    ok(await invoke(api, api.user, "admin", "error-log", "add", "it broke"))
    logs = as_json(await invoke(api, api.user, "admin", "error-log", "list", "-o", "json"))
    ok(await invoke(api, api.user, "admin", "error-log", "clear", str(logs["items"][0]["log_id"])))
    after = as_json(await invoke(api, api.user, "admin", "error-log", "list", "-o", "json"))
    assert (frozen["status"], running["status"]) == ("frozen", "running")
    assert posted == {"enabled": True, "message": "maintenance at 10:00"}
    assert refused.exit_code == 1 and "403" in refused.stderr
    assert logs["total_count"] == 1 and logs["items"][0]["message"] == "it broke"
    assert after["total_count"] == 0


async def test_agents_and_the_scheduler_in_a_deployment(deployment: Deployment) -> None:
    api = deployment.api
    agents = as_json(await admin(api, "agent", "list", "-o", "json"))
    agent_id = agents["items"][0]["id"]
    shown = as_json(await admin(api, "agent", "info", agent_id, "-o", "json"))
    ok(await admin(api, "manager", "exclude-agents", agent_id))
    excluded = await deployment.cluster.ctx.dispatcher.status()
    ok(await admin(api, "manager", "include-agents", agent_id))
    unknown = await admin(api, "manager", "exclude-agents", "no-such-agent")
    refused = await invoke(api, api.user, "admin", "agent", "list")
    assert agents["total_count"] == 1
    assert (shown["id"], shown["status"]) == (agent_id, "ALIVE")
    assert agent_id in str(excluded)
    assert unknown.exit_code == 1 and "404" in unknown.stderr
    assert refused.exit_code == 1


async def test_an_expired_password_is_changed_without_a_keypair(db: Database) -> None:
    config = manager_config('max-password-age = "30d"\n')
    async with running_api(db, config=config, auth_cache_ttl=0) as api:
        async with api.db.begin() as conn:
            await conn.execute(
                sa.update(users)
                .where(users.c.email == "user@lablup.com")
                .values(
                    password=hash_password("old-password-1"),
                    password_changed_at=datetime.now(UTC) - timedelta(days=31),
                )
            )
        login = ("login", "user@lablup.com", "--password-stdin")
        expired = await invoke(api, NO_KEY, *login, stdin="old-password-1\n")
        changed = await invoke(
            api,
            NO_KEY,
            "update-password",
            "--expired",
            "user@lablup.com",
            "--password-stdin",
            stdin="old-password-1\nnew-password-2\nnew-password-2\n",
        )
        signed_in = await invoke(api, NO_KEY, *login, stdin="new-password-2\n")
    assert expired.exit_code == 1 and "expired" in expired.stderr.lower()
    assert "bai update-password --expired user@lablup.com" in expired.stderr
    assert changed.exit_code == 0, changed.output
    assert signed_in.exit_code == 0, signed_in.output
