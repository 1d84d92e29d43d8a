"""`bai config`: the client settings, and the shared config through /config/*."""

from __future__ import annotations

import socket

from test_cli_session import invoke

from support.fakemanager import SECRET_KEY, FakeManager, manager

__all__ = ["manager"]


async def test_config_shows_settings_and_server_version(manager: FakeManager) -> None:
    shown = await invoke(manager, "config", env={"BACKEND_GROUP": "vision"})
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert f"API endpoint: {manager.url} (mode: api)" in lines
    assert 'Group name: "vision"' in lines
    assert 'Access key: "AKIATESTTESTTESTTEST"' in lines
    assert "Server version: fake (API: v6.20220615)" in lines
    assert SECRET_KEY not in shown.output
    assert f'Secret key: "{SECRET_KEY[:4]}' in shown.stdout
    assert [r.path for r in manager.requests] == ["/"]


async def test_config_against_a_dead_server_says_so(manager: FakeManager) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    shown = await invoke(manager, "config", env={"BACKEND_ENDPOINT": dead})
    assert shown.exit_code == 1
    assert "Server version: (failed to fetch: cannot reach" in shown.stdout


async def test_bad_configuration_is_named(manager: FakeManager) -> None:
    shown = await invoke(manager, "config", env={"BACKEND_ENDPOINT": "localhost"})
    assert shown.exit_code == 2
    assert "BACKEND_ENDPOINT" in shown.stderr


async def test_shared_config_get_set_delete(manager: FakeManager) -> None:
    manager.answer("POST", "/config/get", {"result": {"a/b": "1", "a/c": "2"}})
    manager.answer("POST", "/config/set", {"result": "ok"})
    manager.answer("POST", "/config/delete", {"result": "ok"})
    got = await invoke(manager, "config", "get", "a", "--prefix")
    set_plain = await invoke(manager, "config", "set", "a/b", "3")
    set_tree = await invoke(manager, "config", "set", "a/d", '{"x": "1"}', "--json")
    bad_json = await invoke(manager, "config", "set", "a/d", "[1]", "--json")
    deleted = await invoke(manager, "config", "delete", "a", "--prefix")
    assert got.stdout == '{\n  "a/b": "1",\n  "a/c": "2"\n}\n'
    assert set_plain.stderr == "✔ Set a/b.\n"
    assert set_tree.exit_code == 0
    assert bad_json.exit_code == 2
    assert deleted.stderr == "✔ Deleted a and every key under it.\n"
    assert [r.json() for r in manager.requests] == [
        {"key": "a", "prefix": True},
        {"key": "a/b", "value": "3"},
        {"key": "a/d", "value": {"x": "1"}},
        {"key": "a", "prefix": True},
    ]
