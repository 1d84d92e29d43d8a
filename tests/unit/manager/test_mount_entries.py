"""A session's resolved mounts: what the registry stores and what each kernel is sent."""

from __future__ import annotations

from typing import Any

import pytest

from bai.common.agent_api import MAX_MOUNTS, KernelConfig, parse
from bai.manager.sessions.errors import InvalidSessionRequest
from bai.manager.sessions.request import VFOLDER_MOUNT_KEYS, check_vfolder_mounts
from bai.manager.sessions.start import kernel_mounts

VFID = "0123456789abcdef0123456789abcdef"


def entry(name: str = "data", **changes: str) -> dict[str, str]:
    return {
        "name": name,
        "vfid": VFID,
        "host": "local:local",
        "host_path": f"/srv/vfroot/local/{name.lstrip('.')}",
        "kernel_path": f"/home/work/{name}",
        "mode": "rw",
        **changes,
    }


def test_resolved_mounts_pass_and_reach_each_kernel_without_the_host() -> None:
    entries = [entry(), entry(".local"), entry("ref", kernel_path="/mnt/ref", mode="ro")]
    check_vfolder_mounts(entries)
    mounts = kernel_mounts(entries)
    assert [set(m) for m in mounts] == [set(VFOLDER_MOUNT_KEYS) - {"host"}] * 3
    # What the manager sends is what an agent parses.
    config = parse({"kernel_id": VFID, "image": "python", "mounts": mounts}, KernelConfig)
    assert [(m.name, m.kernel_path, m.mode) for m in config.mounts] == [
        ("data", "/home/work/data", "rw"),
        (".local", "/home/work/.local", "rw"),
        ("ref", "/mnt/ref", "ro"),
    ]


def test_a_session_without_mounts_sends_none() -> None:
    check_vfolder_mounts([])
    assert kernel_mounts([]) == [] and kernel_mounts(None) == []


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        ("data", "mounts"),
        ({"name": "data"}, "mounts"),
        ([entry()] * (MAX_MOUNTS + 1), "mounts"),
        (["data"], "vfolder_mounts.0"),
        ([{k: v for k, v in entry().items() if k != "host"}], "vfolder_mounts.0"),
        ([{**entry(), "extra": "x"}], "vfolder_mounts.0"),
        ([entry(), entry("b", mode="wd")], "vfolder_mounts.1"),
        ([entry(host_path="relative/path")], "vfolder_mounts.0"),
        ([entry(host_path="/srv/../etc")], "vfolder_mounts.0"),
        ([entry(kernel_path="/etc/cron.d")], "vfolder_mounts.0"),
        ([entry(vfid="x" * 32)], "vfolder_mounts.0"),
        ([{**entry(), "mode": 1}], "vfolder_mounts.0"),
        ([entry("a"), entry("b", kernel_path="/home/work/a")], "vfolder_mounts.1"),
        ([entry("a", kernel_path="/data"), entry("b", kernel_path="/data/b")], "vfolder_mounts.1"),
    ],
)
def test_mounts_an_agent_would_refuse_are_refused_naming_the_entry(
    entries: Any, field: str
) -> None:
    with pytest.raises(InvalidSessionRequest) as caught:
        check_vfolder_mounts(entries)
    assert caught.value.field == field


def test_entries_that_are_not_maps_never_reach_a_kernel() -> None:
    assert kernel_mounts(["data", entry()]) == kernel_mounts([entry()])
