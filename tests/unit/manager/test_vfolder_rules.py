"""The pure rules of virtual folders: names, permissions, grants, quotas, counts, hosts, types."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from bai.manager.vfolders.access import FolderAmbiguous, Viewer, _pick, access_of, parse_folder_id
from bai.manager.vfolders.errors import (
    InvalidFolderInput,
    VFolderLimitExceeded,
    VFolderPermissionDenied,
)
from bai.manager.vfolders.hosts import host_names, merge_allowed
from bai.manager.vfolders.lifecycle import DEFAULT_TYPES, allowed_types
from bai.manager.vfolders.rules import (
    MAX_NAME_LENGTH,
    Permission,
    check_count,
    check_grant,
    check_name,
    effective_permission,
    effective_quota,
    is_private_name,
    parse_quota,
    permission_allows,
)

RO, RW, WD = Permission.RO, Permission.RW, Permission.WD


# -------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name",
    [
        "data",
        "my-data_2",
        "v1.2",
        ".local",
        ".config",
        ".ssh",
        "데이터",
        "a" * MAX_NAME_LENGTH,
        "-x",
    ],
)
def test_good_names_pass_unchanged(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "must not be empty"),
        ("a/b", "slash"),
        ("/abs", "slash"),
        ("a\\b", "slash"),
        ("..", "reserved"),
        (".", "reserved"),
        ("_", "reserved"),
        (".bai", "reserved"),
        (".jupyter", "reserved"),
        (".bashrc", "reserved"),
        (".zshrc", "reserved"),
        (".bash_profile", "reserved"),
        (".profile", "reserved"),
        ("a b", "only letters"),
        ("tab\there", "only letters"),
        ("nul\x00", "only letters"),
        ("new\nline", "only letters"),
        ("a" * (MAX_NAME_LENGTH + 1), f"at most {MAX_NAME_LENGTH}"),
        ("a*b", "only letters"),
    ],
)
def test_bad_names_are_refused_naming_the_field(name: str, problem: str) -> None:
    with pytest.raises(InvalidFolderInput) as caught:
        check_name(name, field="target_name")
    assert caught.value.field == "target_name"
    assert problem in str(caught.value)
    assert caught.value.http_status == 400


def test_a_name_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidFolderInput) as caught:
        check_name(42)
    assert caught.value.field == "name"


def test_private_names_start_with_a_dot() -> None:
    assert is_private_name(".local")
    assert not is_private_name("local")


# --------------------------------------------------------------------- permissions


def test_permissions_are_ordered_and_round_trip() -> None:
    assert RO < RW < WD
    for label in ("ro", "rw", "wd"):
        assert Permission.of(label).label == label
    with pytest.raises(ValueError):
        Permission.of("rwx")


@pytest.mark.parametrize(
    ("have", "need", "allowed"),
    [
        ("ro", "ro", True),
        ("ro", "rw", False),
        ("ro", "wd", False),
        ("rw", "ro", True),
        ("rw", "rw", True),
        ("rw", "wd", False),
        ("wd", "wd", True),
        ("wd", "ro", True),
    ],
)
def test_a_level_meets_needs_up_to_itself(have: str, need: str, allowed: bool) -> None:
    assert permission_allows(have, need) is allowed


def _level(**given: Any) -> Permission | None:
    values: dict[str, Any] = {
        "ownership_type": "user",
        "folder_permission": RW,
        "is_owner": False,
        "grant": None,
        "is_member": False,
        "is_domain_admin": False,
        "is_superadmin": False,
    }
    values.update(given)
    return effective_permission(**values)


def test_user_folder_levels() -> None:
    assert _level(is_owner=True) is WD
    # The folder's member permission means nothing for user folders.
    assert _level(grant=RO) is RO
    assert _level(grant=WD) is WD
    assert _level() is None
    # Domain admins reach project folders, not other users' folders; superadmins reach all.
    assert _level(is_domain_admin=True) is None
    assert _level(is_superadmin=True) is WD
    # Being a member of some project says nothing about a user folder.
    assert _level(is_member=True) is None


def test_project_folder_levels() -> None:
    group = {"ownership_type": "group", "folder_permission": RO}
    assert _level(**group, is_member=True) is RO
    assert _level(**{**group, "folder_permission": RW}, is_member=True) is RW
    # A grant replaces the member permission, in both directions.
    assert _level(**group, is_member=True, grant=WD) is WD
    assert _level(**{**group, "folder_permission": WD}, is_member=True, grant=RO) is RO
    assert _level(**group) is None
    assert _level(**group, is_domain_admin=True) is WD
    assert _level(**group, is_superadmin=True) is WD
    # A non-member with a grant (shared directly) gets the grant.
    assert _level(**group, grant=RW) is RW


def test_only_the_owner_or_an_admin_grants_and_never_more_than_it_holds() -> None:
    check_grant(RO, granter=WD, granter_is_owner=True, granter_is_admin=False)
    check_grant(WD, granter=WD, granter_is_owner=True, granter_is_admin=False)
    check_grant(RW, granter=WD, granter_is_owner=False, granter_is_admin=True)
    # An invitee, even with wd, cannot invite others.
    with pytest.raises(VFolderPermissionDenied, match="owner or an admin"):
        check_grant(RO, granter=WD, granter_is_owner=False, granter_is_admin=False)
    # Nobody grants more than it holds.
    with pytest.raises(VFolderPermissionDenied, match="more than your own 'ro'") as caught:
        check_grant(RW, granter=RO, granter_is_owner=True, granter_is_admin=True, field="perm")
    assert caught.value.http_status == 403


# ----------------------------------------------------------------- quota, counts


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, None), ("0", None), (0, None), ("1k", 1024), ("10g", 10 * 2**30), (5000, 5000)],
)
def test_quotas_parse_from_sizes(given: object, expected: int | None) -> None:
    assert parse_quota(given) == expected


@pytest.mark.parametrize("given", ["-1", "lots", -5, True, [1], "1.3k"])
def test_bad_quotas_are_refused_naming_the_field(given: object) -> None:
    with pytest.raises(InvalidFolderInput) as caught:
        parse_quota(given, field="input.size_bytes")
    assert caught.value.field == "input.size_bytes"


def test_the_policy_caps_quotas_and_fills_in_a_missing_one() -> None:
    assert effective_quota(None, 0) is None
    assert effective_quota(100, 0) == 100
    assert effective_quota(None, 2**30) == 2**30
    assert effective_quota(2**20, 2**30) == 2**20
    assert effective_quota(2**30, 2**30) == 2**30
    with pytest.raises(InvalidFolderInput, match="max_vfolder_size") as caught:
        effective_quota(2**30 + 1, 2**30)
    assert caught.value.field == "quota"


def test_counts_are_limited_only_by_a_non_zero_limit() -> None:
    check_count(1000, 0, what="a user")
    check_count(2, 3, what="a user")
    with pytest.raises(VFolderLimitExceeded) as caught:
        check_count(3, 3, what="a user", field="target_name")
    assert caught.value.http_status == 406
    assert caught.value.field == "target_name"


# --------------------------------------------------------------------------- hosts


def test_host_values_are_lists_or_maps() -> None:
    assert host_names(["a:x", "b:y", 3]) == {"a:x", "b:y"}
    assert host_names({"a:x": ["create-vfolder"], "c:z": []}) == {"a:x", "c:z"}
    assert host_names(None) == set()
    assert host_names("a:x") == set()


def test_allowed_hosts_are_the_union_of_what_is_named_among_what_is_served() -> None:
    available = ["local:a", "local:b", "nfs:c"]
    # Nothing named anywhere: everything served is allowed.
    assert merge_allowed([[], {}, None], available) == available
    assert merge_allowed([["local:a"], [], {"nfs:c": []}], available) == ["local:a", "nfs:c"]
    # A named host that no proxy serves is not offered.
    assert merge_allowed([["gone:x"]], available) == []
    assert merge_allowed([["local:b", "gone:x"]], available) == ["local:b"]


def test_folder_types_come_from_the_shared_config() -> None:
    assert allowed_types({}) == DEFAULT_TYPES
    assert allowed_types({"volumes/_types/user": ""}) == ("user",)
    assert allowed_types({"volumes/_types": ["group"]}) == ("group",)
    assert allowed_types({"volumes/_types": {"user": "", "group": ""}}) == ("group", "user")
    # Unknown types are ignored; naming none of the known ones means the default.
    assert allowed_types({"volumes/_types/other": ""}) == DEFAULT_TYPES


# ----------------------------------------------------------- access from a row


VIEWER = Viewer(
    user_id=uuid.uuid4(),
    email="me@x",
    domain_name="default",
    access_key="AKIA",
    resource_policy="default",
    is_admin=False,
    is_superadmin=False,
)


def _row(**given: Any) -> SimpleNamespace:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "host": "local:vol",
        "name": "data",
        "ownership_type": "user",
        "user": uuid.uuid4(),
        "group": None,
        "permission": "rw",
        "grant": None,
        "member": None,
        "user_domain": "default",
        "group_domain": None,
        "user_email": "owner@x",
        "group_name": None,
        "status": "ready",
        "cloneable": False,
        "quota": None,
        "usage_mode": "general",
        "creator": "owner@x",
        "quota_scope_id": "user:x",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "last_used": None,
        "max_files": 0,
        "unmanaged_path": None,
        "status_changed": datetime(2026, 1, 1, tzinfo=UTC),
    }
    values.update(given)
    return SimpleNamespace(**values)


def test_access_of_a_row_splits_the_host_and_computes_the_level() -> None:
    own = access_of(_row(user=VIEWER.user_id), VIEWER)
    assert own is not None
    assert (own.proxy, own.volume, own.vfid) == ("local", "vol", own.id.hex)
    assert own.permission == "wd" and own.is_owner
    assert access_of(_row(), VIEWER) is None
    invited = access_of(_row(grant="ro"), VIEWER)
    assert invited is not None and invited.permission == "ro" and not invited.is_owner
    project = access_of(
        _row(
            ownership_type="group",
            user=None,
            group=uuid.uuid4(),
            member=VIEWER.user_id,
            permission="ro",
            group_domain="default",
        ),
        VIEWER,
    )
    assert project is not None and project.permission == "ro" and project.is_member


def test_a_name_picks_own_then_granted_then_project_folders() -> None:
    own = access_of(_row(user=VIEWER.user_id), VIEWER)
    invited = access_of(_row(grant="rw"), VIEWER)
    project = access_of(
        _row(ownership_type="group", user=None, group=uuid.uuid4(), member=VIEWER.user_id),
        VIEWER,
    )
    assert own is not None and invited is not None and project is not None
    assert _pick([project, invited, own], "data") is own
    assert _pick([project, invited], "data") is invited
    assert _pick([], "data") is None
    with pytest.raises(FolderAmbiguous) as caught:
        _pick([invited, invited], "data")
    assert caught.value.http_status == 409


def test_folder_ids_are_hex_or_dashed_uuids() -> None:
    folder_id = uuid.uuid4()
    assert parse_folder_id(folder_id.hex) == folder_id
    assert parse_folder_id(str(folder_id)) == folder_id
    assert parse_folder_id("data") is None
    assert parse_folder_id("z" * 32) is None
