"""``bai manager fixture populate``: how a distributed manager gets its first keypairs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from bai.cli.main import cli

KEYPAIR_LINE = re.compile(
    r"^(\S+@\S+) \((admin|user)\): access key (AKIA\w{16})  secret key \S{40}$"
)


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "manager.toml"
    path.write_text(f'[db]\ntype = "sqlite"\npath = "{tmp_path / "bai.sqlite3"}"\n')
    return path


def _populate(config: Path, source: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli, ["manager", "--config", str(config), "fixture", "populate", source]
    )
    return result.exit_code, result.stdout, result.stderr


def test_default_set_creates_the_keypairs_once(tmp_path: Path) -> None:
    config = _config(tmp_path)
    code, out, _ = _populate(config, "default")
    assert code == 0, out
    pairs = [KEYPAIR_LINE.match(line) for line in out.splitlines()[1:]]
    assert [(m.group(1), m.group(2)) for m in pairs if m] == [
        ("admin@lablup.com", "admin"),
        ("user@lablup.com", "user"),
    ]
    code, out, _ = _populate(config, "default")
    assert (code, out) == (0, "added nothing\n")


def test_a_bad_fixture_file_writes_nothing_and_says_why(tmp_path: Path) -> None:
    config = _config(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"domains": [{"name": "d1"}], "users": [{"email": 5}]}))
    code, _, err = _populate(config, str(bad))
    assert code == 2
    assert "users" in err
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"domains": [{"name": "d1"}]}))
    assert _populate(config, str(good))[:2] == (0, "added 1 domains\n")
