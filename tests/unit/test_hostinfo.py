"""Host detection behind ``bai info`` and the agent's start-up checks."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from bai import __version__
from bai.agent.hostinfo import detect_cgroups, detect_gpus
from bai.cli.main import cli


def test_cgroup_v2_is_recognised_by_its_unified_controllers_file(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    info = detect_cgroups(tmp_path)
    assert info.version == 2
    assert info.controllers == ("cpu", "memory", "pids")


def test_cgroup_v1_is_recognised_by_per_controller_hierarchies(tmp_path: Path) -> None:
    for name in ("cpu", "memory", "blkio"):
        (tmp_path / name).mkdir()
    info = detect_cgroups(tmp_path)
    assert info.version == 1
    assert info.controllers == ("cpu", "memory")


def test_missing_cgroup_mount_is_reported_not_raised(tmp_path: Path) -> None:
    info = detect_cgroups(tmp_path / "absent")
    assert info.version is None
    assert "not mounted" in info.detail


def test_gpu_probe_without_a_driver_reports_zero_devices() -> None:
    info = detect_gpus()
    if info.devices:
        assert info.driver_version
    else:
        assert info.detail


def test_bai_info_json_reports_version_and_probes() -> None:
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["version"] == __version__
    assert report["slots_implementation"] in ("cython", "python")
    assert set(report) >= {"cgroups", "bwrap", "docker", "gpus", "cpu_count"}


def test_bai_info_prints_a_readable_summary() -> None:
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"bai {__version__}")
    assert "cgroups" in result.output and "gpus" in result.output
