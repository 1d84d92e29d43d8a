"""The pure dotfile rules: paths, modes, limits, precedence (manager) and the agent's contract."""

from __future__ import annotations

import msgspec
import pytest

from bai.common.agent_api import MAX_DOTFILE_SIZE, Dotfile, KernelConfig, dotfile_parts
from bai.common.errors import InvalidValue
from bai.common.scratch_paths import ScratchPathError
from bai.manager.dotfiles import rules


def entry(path: str, perm: str = "644", data: str = "x") -> rules.Stored:
    return {"path": path, "perm": perm, "data": data}


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/etc/profile", "relative to /home/work"),
        ("/home/work/.bashrc", "relative to /home/work"),
        ("../.bashrc", "'..'"),
        ("a/../../b", "'..'"),
        ("", "names no file"),
        (".", "names no file"),
        ("a\x00b", "NUL"),
        ("x" * 256, "at most 255 bytes"),
        (".ssh", "reserved"),
        (".ssh/authorized_keys", "reserved"),
        ("id_container", "reserved"),
        ("bootstrap.sh", "reserved"),
    ],
)
def test_bad_paths_are_refused_naming_the_field(path: str, problem: str) -> None:
    with pytest.raises(ScratchPathError) as caught:
        rules.add([], path, "644", "data", scope="a user")
    assert caught.value.field == "path"
    assert problem in str(caught.value)


def test_paths_are_stored_normalised() -> None:
    assert rules.add([], "./.config2//app.conf", "600", "a", scope="a user") == [
        entry(".config2/app.conf", "600", "a")
    ]
    assert dotfile_parts(".vimrc") == [".vimrc"]
    # Within .ssh, only authorized_keys is the agent's.
    assert rules.normal_path(".ssh/config") == ".ssh/config"


@pytest.mark.parametrize("permission", ["", "7", "0644", "888", "rwx", "64a", 644])
def test_permission_must_be_three_octal_digits(permission: object) -> None:
    with pytest.raises(InvalidValue) as caught:
        rules.add([], ".bashrc", permission, "data", scope="a user")
    assert caught.value.field == "permission"


def test_a_taken_path_is_a_conflict_and_nesting_paths_are_refused() -> None:
    entries = rules.add([], ".bashrc", "644", "one", scope="a user")
    with pytest.raises(rules.DotfileExists):
        rules.add(entries, "./.bashrc", "644", "two", scope="a user")
    with pytest.raises(InvalidValue) as caught:
        rules.add(entries, ".bashrc/inner", "644", "two", scope="a user")
    assert caught.value.field == "path"
    folder = rules.add([], "conf/a", "644", "x", scope="a user")
    with pytest.raises(InvalidValue):
        rules.add(folder, "conf", "644", "x", scope="a user")
    # A sibling in the same folder is fine.
    assert len(rules.add(folder, "conf/b", "644", "x", scope="a user")) == 2


def test_count_and_size_limits() -> None:
    entries: list[rules.Stored] = []
    for i in range(rules.MAX_DOTFILES):
        entries = rules.add(entries, f"f{i}", "644", "", scope="a user")
    with pytest.raises(InvalidValue) as caught:
        rules.add(entries, "one-more", "644", "", scope="a user")
    assert caught.value.field == "path" and "at most 100" in str(caught.value)
    with pytest.raises(InvalidValue) as too_big:
        rules.add([], "big", "644", "x" * (MAX_DOTFILE_SIZE + 1), scope="a user")
    assert too_big.value.field == "data"
    half = "y" * (MAX_DOTFILE_SIZE // 2)
    one = rules.add([], "a", "644", half, scope="a user")
    with pytest.raises(InvalidValue) as over:
        rules.add(one, "b", "644", half, scope="a user")
    assert over.value.field == "data" and "bytes" in str(over.value)
    # Non-ASCII text counts in bytes as stored.
    with pytest.raises(InvalidValue):
        rules.add([], "wide", "644", "é" * (MAX_DOTFILE_SIZE // 2 + 10), scope="a user")


def test_replace_remove_and_find() -> None:
    entries = [entry(".bashrc", "644", "old"), entry(".vimrc")]
    updated = rules.replace(entries, "./.bashrc", "600", "new", scope="a user")
    assert updated == [entry(".bashrc", "600", "new"), entry(".vimrc")]
    assert entries[0]["data"] == "old"  # the input is not changed
    with pytest.raises(rules.DotfileNotFound):
        rules.replace(entries, ".zshrc", "600", "new", scope="a user")
    assert rules.remove(entries, ".vimrc") == [entry(".bashrc", "644", "old")]
    with pytest.raises(rules.DotfileNotFound):
        rules.remove(entries, ".zshrc")
    assert rules.shown(rules.find(entries, ".bashrc")) == {
        "path": ".bashrc",
        "permission": "644",
        "perm": "644",
        "data": "old",
    }
    assert rules.listing(entries)[1] == {"path": ".vimrc", "permission": "644", "data": "x"}


def test_merge_prefers_user_then_project_then_domain() -> None:
    user = [entry(".bashrc", data="user"), entry("tools/run", data="user")]
    project = [entry(".bashrc", data="project"), entry(".vimrc", data="project"), entry("tools")]
    domain = [entry(".vimrc", data="domain"), entry(".inputrc", data="domain")]
    merged = rules.merge(user, project, domain)
    assert {item["path"]: item["data"] for item in merged} == {
        ".bashrc": "user",
        "tools/run": "user",
        ".vimrc": "project",
        ".inputrc": "domain",
    }
    # Stored junk never reaches a kernel.
    assert rules.merge([entry("../escape"), entry("/abs"), entry("ok", perm="9")]) == []
    assert rules.read_stored([{"path": 1}, "x", entry("a")]) == [entry("a")]
    assert rules.read_stored(None) == []


def test_bootstrap_script_limits() -> None:
    assert rules.check_bootstrap_script("  echo hi\n\n") == "echo hi"
    assert rules.check_bootstrap_script("") == ""
    with pytest.raises(InvalidValue) as caught:
        rules.check_bootstrap_script("x" * (rules.MAX_BOOTSTRAP_SCRIPT + 1))
    assert caught.value.field == "script"


def kernel(**extra: object) -> KernelConfig:
    body = {"kernel_id": "00000000-0000-0000-0000-000000000001", "image": "python", **extra}
    return msgspec.convert(body, KernelConfig)


def test_the_agent_contract_refuses_what_the_manager_refuses() -> None:
    config = kernel(dotfiles=[{"path": ".bashrc", "mode": 0o600, "data": "x"}])
    assert config.dotfiles == [Dotfile(path=".bashrc", mode=0o600, data="x")]
    assert kernel().dotfiles == [] and kernel().user_bootstrap_script is None
    for bad in (
        {"path": "/etc/passwd", "mode": 0o644, "data": ""},
        {"path": "../x", "mode": 0o644, "data": ""},
        {"path": "./x", "mode": 0o644, "data": ""},
        {"path": ".ssh/authorized_keys", "mode": 0o644, "data": ""},
        {"path": "x", "mode": 0o4755, "data": ""},
        {"path": "x", "mode": 0o644, "data": "y" * (MAX_DOTFILE_SIZE + 1)},
    ):
        with pytest.raises(msgspec.ValidationError):
            kernel(dotfiles=[bad])
    with pytest.raises(msgspec.ValidationError, match="collides"):
        kernel(
            dotfiles=[
                {"path": "a", "mode": 0o644, "data": ""},
                {"path": "a/b", "mode": 0o644, "data": ""},
            ]
        )
