"""``bai manager config get|put|put-json|delete``: the shared config from the command line.

Each test runs the real command against the database a manager.toml names,
on SQLite and on PostgreSQL, as an operator would before the first manager
starts (the spec's ``backend.ai mgr etcd ...``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from bai.cli.main import cli


def manager_toml(path: Path, db_url: str) -> Path:
    """Write a manager.toml whose ``[db]`` is the database at *db_url*."""
    url = sa.make_url(db_url)
    if url.get_backend_name() == "sqlite":
        db = f'type = "sqlite"\npath = "{url.database}"\n'
    else:
        db = (
            f'type = "postgresql"\naddr = "{url.host}:{url.port or 5432}"\n'
            f'name = "{url.database}"\nuser = "{url.username}"\npassword = "{url.password or ""}"\n'
        )
    path.write_text(f"[db]\n{db}")
    return path


@pytest.fixture
def toml(tmp_path: Path, db_url: str) -> Path:
    return manager_toml(tmp_path / "manager.toml", db_url)


def bai(toml: Path, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["manager", "--config", str(toml), "config", *args], input=stdin)


def tree(toml: Path) -> Any:
    """The whole configuration, as ``get --prefix ""`` prints it."""
    shown = bai(toml, "get", "--prefix", "")
    assert shown.exit_code == 0, shown.output
    return json.loads(shown.stdout)


def test_put_then_get_as_the_spec_does(toml: Path) -> None:
    assert bai(toml, "put", "config/redis/addr", "bai-m1:8110").exit_code == 0
    assert bai(toml, "put", "volumes/_types/group", "").exit_code == 0
    assert bai(toml, "get", "config/redis/addr").stdout == "bai-m1:8110\n"
    assert bai(toml, "get", "volumes/_types/group").stdout == "\n"
    # Without --json a value stays the string it was typed as.
    assert bai(toml, "put", "volumes/proxies/m1/ssl_verify", "false").exit_code == 0
    assert tree(toml)["volumes"]["proxies"]["m1"]["ssl_verify"] == "false"


def test_json_values_and_prefix_trees(toml: Path) -> None:
    registry = {"": "https://cr.backend.ai", "type": "harbor2", "project": "stable"}
    put = bai(toml, "put", "--json", "config/docker/registry/cr.backend.ai", json.dumps(registry))
    assert (put.exit_code, put.stdout) == (0, "")
    assert bai(toml, "put", "--json", "config/limits", "[1, null]").exit_code == 0
    assert bai(toml, "get", "config/docker/registry/cr.backend.ai/type").stdout == "harbor2\n"
    assert json.loads(bai(toml, "get", "config/limits").stdout) == [1, None]
    shown = bai(toml, "get", "--prefix", "config/docker")
    assert shown.exit_code == 0
    assert json.loads(shown.stdout) == {"registry": {"cr.backend.ai": registry}}
    assert json.loads(bai(toml, "get", "--prefix", "config/nothing").stdout) == {}


def test_a_missing_key_exits_1_and_says_so(toml: Path) -> None:
    bai(toml, "put", "config/redis/addr", "x")
    missing = bai(toml, "get", "config/redis")
    assert missing.exit_code == 1
    assert missing.stdout == ""
    assert "no value at 'config/redis'" in missing.stderr
    assert "--prefix" in missing.stderr


def test_delete_a_key_or_a_prefix_and_count_them(toml: Path) -> None:
    bai(toml, "put", "--json", "some", '{"key1": {"f": 1, "": 0}, "key12": 2}')
    assert bai(toml, "delete", "some/key1").stdout == "deleted 1 key\n"
    assert bai(toml, "delete", "some/key1").stdout == "deleted 0 keys\n"
    # A prefix means whole path segments: some/key1 does not select some/key12.
    assert bai(toml, "delete", "--prefix", "some/key1").stdout == "deleted 1 key\n"
    assert tree(toml) == {"some": {"key12": 2}}
    assert bai(toml, "delete", "--prefix", "").stdout == "deleted 1 key\n"
    assert tree(toml) == {}


def test_the_whole_tree_backs_up_and_restores(toml: Path, tmp_path: Path) -> None:
    bai(toml, "put", "--json", "config", '{"redis": {"addr": "r:1"}, "docker": {"x": true}}')
    bai(toml, "put", "volumes/default_host", "m1:local")
    backup = tmp_path / "backup.json"
    backup.write_text(bai(toml, "get", "--prefix", "").stdout)
    assert bai(toml, "delete", "--prefix", "").stdout == "deleted 3 keys\n"
    assert bai(toml, "put-json", "", str(backup)).exit_code == 0
    assert tree(toml) == json.loads(backup.read_text())
    # From standard input, below a key: the subtree lands there.
    assert bai(toml, "put-json", "copy", "-", stdin=backup.read_text()).exit_code == 0
    assert tree(toml)["copy"] == json.loads(backup.read_text())


@pytest.mark.parametrize(
    ("args", "stdin", "problem"),
    [
        (["put", "--json", "a", "{bad"], None, "Invalid value for VALUE: not JSON"),
        (["put", "--json", "a", "NaN"], None, "a: a config value must be JSON"),
        (["put", "--json", "a", '{"b/": 1}'], None, "value.b/: a config key must not"),
        (["put", "a//b", "x"], None, "key: a config key must not start or end with '/'"),
        (["put", "", "x"], None, 'the root key "" holds no value'),
        (["put-json", "", "-"], '{"": 1}', 'the root key "" holds no value'),
        (["put-json", "a", "-"], "[1,", "Invalid value for FILE: not JSON"),
        (["get", "a b"], None, "key: a config key must be printable and have no spaces"),
        (["get", ""], None, "key: a config key must have 1 to 512 characters"),
        (["delete", "/a", "--prefix"], None, "prefix: a config key must not start"),
    ],
)
def test_bad_input_exits_2_naming_the_problem_and_writes_nothing(
    toml: Path, args: list[str], stdin: str | None, problem: str
) -> None:
    bai(toml, "put", "kept", "1")
    failed = bai(toml, *args, stdin=stdin)
    assert failed.exit_code == 2
    assert problem in failed.stderr
    assert tree(toml) == {"kept": "1"}


def test_an_unreachable_database_exits_1(tmp_path: Path) -> None:
    toml = tmp_path / "manager.toml"
    toml.write_text('[db]\ntype = "postgresql"\naddr = "127.0.0.1:1"\nconnect-timeout = "2s"\n')
    failed = bai(toml, "get", "a")
    assert failed.exit_code == 1
    assert "cannot connect to" in failed.stderr
