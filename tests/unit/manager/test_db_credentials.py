"""Credentials kept in the database: generated keys, password hashes, reasons, fixtures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bai.common.errors import InvalidValue
from bai.common.types import KernelStatus
from bai.manager.fixtures import DEFAULT_FIXTURE, FixtureError, default_fixture, load_fixture
from bai.manager.models.identity import (
    generate_access_key,
    generate_secret_key,
    hash_password,
    verify_password,
)
from bai.manager.transitions import check_reason, initial_status

FAST = 1_000  # iterations for tests; the format records the count, so verify still works


def test_access_keys_look_like_aws_keys_and_do_not_repeat() -> None:
    keys = {generate_access_key() for _ in range(200)}
    assert len(keys) == 200
    assert all(re.fullmatch(r"AKIA[A-Z0-9]{16}", key) for key in keys)


def test_secret_keys_are_40_shell_safe_characters() -> None:
    keys = {generate_secret_key() for _ in range(200)}
    assert len(keys) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9]{40}", key) for key in keys)


def test_password_hash_verifies_only_the_password() -> None:
    stored = hash_password("correct horse", iterations=FAST)
    assert stored.startswith("pbkdf2_sha256$1000$")
    assert "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("", stored)


def test_same_password_gets_different_salts() -> None:
    assert hash_password("pw", iterations=FAST) != hash_password("pw", iterations=FAST)


@pytest.mark.parametrize(
    "stored",
    [
        None,
        "",
        "plain",
        "md5$1$abc$def",
        "pbkdf2_sha256$x$c2FsdA==$aGFzaA==",
        "pbkdf2_sha256$0$c2FsdA==$aGFzaA==",
        "pbkdf2_sha256$1000$not base64!$aGFzaA==",
        "pbkdf2_sha256$99999999999$c2FsdA==$aGFzaA==",
    ],
)
def test_malformed_hashes_match_nothing(stored: str | None) -> None:
    assert not verify_password("pw", stored)


def test_empty_password_is_rejected() -> None:
    with pytest.raises(InvalidValue, match="password"):
        hash_password("")


@pytest.mark.parametrize("reason", ["user-requested", "agent-lost", "x", "exit-0", "a" * 64])
def test_kebab_case_reasons_pass(reason: str) -> None:
    assert check_reason(reason) == reason


@pytest.mark.parametrize("reason", ["", "A", "two words", "-lead", "trail-", "a--b", "a_b", 3])
def test_other_reasons_fail(reason: object) -> None:
    with pytest.raises(InvalidValue, match="reason"):
        check_reason(reason)


def test_initial_status_starts_the_history() -> None:
    values = initial_status(KernelStatus.PENDING, "enqueued")
    assert values["status"] is KernelStatus.PENDING and values["status_info"] == "enqueued"
    (entry,) = values["status_history"]
    assert entry["status"] == "PENDING" and entry["reason"] == "enqueued"
    assert entry["timestamp"] == values["status_changed"].isoformat()


def test_default_fixture_is_a_fresh_copy() -> None:
    first = default_fixture()
    first["users"].clear()
    assert len(default_fixture()["users"]) == 2
    assert len(DEFAULT_FIXTURE["users"]) == 2
    emails = {u["email"] for u in default_fixture()["users"]}
    assert emails == {"admin@lablup.com", "user@lablup.com"}


def test_load_fixture_reads_files_and_names_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(default_fixture()))
    assert load_fixture(good) == default_fixture()
    (tmp_path / "bad.json").write_text('{"domains": [}')
    # A relative path: the message shortens a long one (tmp_path is longer under xdist).
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FixtureError, match="line 1 column") as info:
        load_fixture(Path("bad.json"))
    assert "line 1 column" in str(info.value) and "bad.json" in str(info.value)
    with pytest.raises(FixtureError, match="cannot read"):
        load_fixture(tmp_path / "missing.json")
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(FixtureError, match="JSON object"):
        load_fixture(listed)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe{")
    with pytest.raises(FixtureError, match="UTF-8"):
        load_fixture(binary)
