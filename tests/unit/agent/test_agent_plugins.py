"""Compute plugins: cpu and mem on this host, the mock accelerator files, cuda without a driver."""

from __future__ import annotations

import json
import os
from decimal import Decimal as D
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from bai.agent.alloc import InsufficientResource, InvalidAllocation
from bai.agent.hostinfo import GPUInfo
from bai.agent.plugins import PluginError, create_allocator, hostres, load_plugins
from bai.agent.plugins.cpu import CPUPlugin
from bai.agent.plugins.cuda import CUDAPlugin
from bai.agent.plugins.fractional import FractionSettings
from bai.agent.plugins.mem import MemPlugin
from bai.agent.plugins.mock import MockPlugin, load_mock_config
from bai.common.config import AgentConfig, parse_config
from bai.common.slots import ResourceSlot
from bai.common.types import SlotTypes

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
MOCK = CONFIGS / "mock-accelerator.toml"
MOCK_FRACTIONAL = CONFIGS / "mock-accelerator-fractional.toml"


def host_cores() -> list[int]:
    cores = sorted(os.sched_getaffinity(0))
    quota = hostres.cgroup_cpu_limit()
    return cores if quota is None else cores[: max(1, int(quota))]


# ------------------------------------------------------------------ cpu, mem


async def test_cpu_offers_the_usable_cores_minus_the_reserved_lowest_ones() -> None:
    plugin = CPUPlugin(reserved_cpu=1)
    await plugin.init()
    cores = host_cores()
    assert [d.device_id for d in plugin.devices()] == [str(c) for c in cores[1:]]
    assert plugin.available_slots() == ResourceSlot({"cpu": len(cores) - 1})
    assert plugin.slot_types() == {"cpu": SlotTypes.COUNT}
    info = json.loads(json.dumps(plugin.info()))
    assert info["host_cores"] == len(cores) and info["reserved_cpu"] == 1


async def test_cpu_allocations_name_the_cores_for_a_cpuset() -> None:
    plugin = CPUPlugin(reserved_cpu=0)
    await plugin.init()
    alloc_map = plugin.create_alloc_map()
    allocation = alloc_map.allocate("k", {"cpu": 1})
    assert CPUPlugin.cores(allocation) == [host_cores()[0]]
    assert plugin.environ(allocation) == {}


async def test_reserving_every_core_leaves_zero_cpu_not_an_error() -> None:
    plugin = CPUPlugin(reserved_cpu=4096)
    await plugin.init()
    assert plugin.devices() == ()
    assert plugin.available_slots() == ResourceSlot({"cpu": 0})
    assert "cpu" in plugin.available_slots()
    with pytest.raises(InsufficientResource):
        plugin.create_alloc_map().allocate("k", {"cpu": 1})


async def test_mem_offers_memtotal_minus_reserved_as_one_pool() -> None:
    plugin = MemPlugin(reserved_mem=1024**3)
    await plugin.init()
    total = hostres.mem_total()
    limit = hostres.cgroup_memory_limit()
    host = total if limit is None else min(total, limit)
    assert host > 1024**3
    assert plugin.available_slots() == ResourceSlot({"mem": host - 1024**3})
    alloc_map = plugin.create_alloc_map()
    assert alloc_map.allocate("k", {"mem": 4096}) == {"mem": {"root": D(4096)}}


async def test_mem_reserved_beyond_the_host_leaves_zero() -> None:
    plugin = MemPlugin(reserved_mem=2**62)
    await plugin.init()
    assert plugin.available_slots() == ResourceSlot({"mem": 0})


# ------------------------------------------------------------ host probes


def test_meminfo_total_is_read_in_bytes(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemFree:  10 kB\nMemTotal:       24684084 kB\n")
    assert hostres.mem_total(meminfo) == 24684084 * 1024
    meminfo.write_text("garbage\n")
    assert hostres.mem_total(meminfo) == 0
    assert hostres.mem_total(tmp_path / "absent") == 0


def test_numa_nodes_come_from_sysfs(tmp_path: Path) -> None:
    (tmp_path / "cpu0" / "node1").mkdir(parents=True)
    (tmp_path / "cpu1").mkdir()
    assert hostres.core_numa_nodes([0, 1, 2], tmp_path) == {0: 1, 1: None, 2: None}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v1_limits_take_the_tightest_of_own_and_ancestors(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = tmp_path / "self-cgroup"
    proc.write_text("4:memory:/agents/a1\n1:cpu,cpuacct:/agents/a1\n")
    _write(root / "cpu" / "cpu.cfs_quota_us", "-1\n")
    _write(root / "cpu" / "cpu.cfs_period_us", "100000\n")
    _write(root / "cpu" / "agents" / "cpu.cfs_quota_us", "250000\n")
    _write(root / "cpu" / "agents" / "cpu.cfs_period_us", "100000\n")
    _write(root / "cpu" / "agents" / "a1" / "cpu.cfs_quota_us", "-1\n")
    _write(root / "memory" / "memory.limit_in_bytes", "9223372036854771712\n")
    _write(root / "memory" / "agents" / "a1" / "memory.limit_in_bytes", "1073741824\n")
    assert hostres.cgroup_cpu_limit(root, proc) == Fraction(5, 2)
    assert hostres.cgroup_memory_limit(root, proc) == 1024**3


def test_cgroup_v2_limits_and_no_limits(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    proc = tmp_path / "self-cgroup"
    proc.write_text("0::/kubepods/pod1\n")
    _write(root / "cgroup.controllers", "cpu memory pids\n")
    _write(root / "kubepods" / "cpu.max", "max 100000\n")
    _write(root / "kubepods" / "pod1" / "cpu.max", "150000 100000\n")
    _write(root / "kubepods" / "pod1" / "memory.max", "max\n")
    assert hostres.cgroup_cpu_limit(root, proc) == Fraction(3, 2)
    assert hostres.cgroup_memory_limit(root, proc) is None
    assert hostres.cgroup_cpu_limit(tmp_path / "absent", proc) is None


# -------------------------------------------------------------------- mock


async def test_the_discrete_sample_config_offers_four_whole_gpus() -> None:
    plugin = MockPlugin(MOCK)
    await plugin.init()
    assert plugin.key == "cuda"
    assert plugin.slot_types() == {"cuda.device": SlotTypes.COUNT}
    assert plugin.available_slots() == ResourceSlot({"cuda.device": 4})
    assert [d.numa_node for d in plugin.devices()] == [0, 1, 0, 1]
    assert {d.memory_size for d in plugin.devices()} == {40 * 1024**3}
    info = json.loads(json.dumps(plugin.info()))
    assert info["name"] == "mock" and info["cuda_support"] is True
    assert info["attributes"] == {"nvidia_driver": "450.0.0", "cuda_runtime": "11.0"}
    assert info["formats"]["shares"]["number_format"] == {"binary": False, "round_length": 2}
    assert info["devices"][0]["device_id"] == "c59395cd-ac91-4cd3-a1b0-3d2568aa2d01"


async def test_the_fractional_sample_config_offers_shares_by_unit_mem_and_unit_proc() -> None:
    plugin = MockPlugin(MOCK_FRACTIONAL)
    await plugin.init()
    assert plugin.slot_types() == {
        "cuda.shares": SlotTypes.COUNT,
        "cuda.device:10g-mig": SlotTypes.UNIQUE,
    }
    # 40 GiB and 108 SMs: min(40, 10.8); 16 GiB and 80 SMs: min(16, 8).
    assert [d.capacity for d in plugin.devices()] == [D("10.8"), D("10.8"), D(8), D(1)]
    assert plugin.available_slots() == ResourceSlot(
        {"cuda.shares": D("29.6"), "cuda.device:10g-mig": 1}
    )
    mig = plugin.devices()[3]
    assert mig.device_id == "MIG-c59395cd-ac91-4cd3-a1b0-3d2568aa2d03/3/0"


async def test_mock_shares_allocate_and_tell_the_kernel_its_limits() -> None:
    plugin = MockPlugin(MOCK_FRACTIONAL)
    await plugin.init()
    alloc_map = plugin.create_alloc_map()
    allocation = alloc_map.allocate("k", {"cuda.shares": D("0.5")})
    small = "c59395cd-ac91-4cd3-a1b0-3d2568aa2d05"
    assert allocation == {"cuda.shares": {small: D("0.5")}}
    assert plugin.environ(allocation) == {
        "BACKENDAI_MOCK_CUDA_DEVICES": small,
        "BACKENDAI_MOCK_CUDA_DEVICE_COUNT": "1",
        "BACKENDAI_MOCK_CUDA_MEMORY_LIMITS": f"{small}:{512 * 1024**2}",
        "BACKENDAI_MOCK_CUDA_PROCESSOR_LIMITS": f"{small}:5",
    }
    with pytest.raises(InvalidAllocation, match="cannot mix"):
        alloc_map.allocate("k2", {"cuda.shares": D("0.5"), "cuda.device:10g-mig": 1})


async def test_mock_whole_devices_environ_and_exclusivity() -> None:
    plugin = MockPlugin(MOCK)
    await plugin.init()
    alloc_map = plugin.create_alloc_map()
    allocation = alloc_map.allocate("k", {"cuda.device": 2})
    env = plugin.environ(allocation)
    assert env["BACKENDAI_MOCK_CUDA_DEVICE_COUNT"] == "2"
    assert env["BACKENDAI_MOCK_CUDA_DEVICES"].split(",") == list(allocation["cuda.device"])
    assert plugin.environ({})["BACKENDAI_MOCK_CUDA_DEVICE_COUNT"] == "0"
    with pytest.raises(InvalidAllocation, match="cannot mix"):
        alloc_map.allocate("k2", {"cuda.device": 1, "cuda.shares": D("0.5")})


async def test_plugin_config_overrides_the_file_like_etcd_would() -> None:
    plugin = MockPlugin(MOCK, plugin_config={"allocation_mode": "fractional", "unit_mem": "8G"})
    await plugin.init()
    # unit_proc stays 8: min(40 / 8, 108 / 8) = 5 shares per device.
    assert plugin.available_slots() == ResourceSlot({"cuda.shares": 20})


def _device(**overrides: Any) -> dict[str, Any]:
    device = {
        "mother_uuid": "u1",
        "model_name": "Mock",
        "numa_node": 0,
        "subproc_count": 4,
        "memory_size": "1G",
    }
    device.update(overrides)
    return device


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)


def _mock_file(tmp_path: Path, **top: Any) -> Path:
    data: dict[str, Any] = {
        "slot_name": "npu",
        "device_plugin_name": "MockDevice",
        "devices": [_device()],
    }
    data.update(top)
    text = "".join(
        f"{key} = {_toml_value(value)}\n" for key, value in data.items() if value is not None
    )
    path = tmp_path / "mock.toml"
    path.write_text(text)
    return path


async def test_a_custom_slot_name_makes_its_own_slots(tmp_path: Path) -> None:
    plugin = MockPlugin(_mock_file(tmp_path))
    await plugin.init()
    assert plugin.key == "npu"
    assert plugin.available_slots() == ResourceSlot({"npu.device": 1})
    assert plugin.environ({"npu.device": {"u1": D(1)}})["BACKENDAI_MOCK_NPU_DEVICES"] == "u1"


@pytest.mark.parametrize(
    ("top", "match"),
    [
        ({"slot_name": None}, "slot_name: is required"),
        ({"slot_name": "Big.Slot"}, "slot_name: must be lower-case"),
        ({"slot_name": "cpu"}, "slot_name"),
        ({"device_plugin_name": "AMDDevice"}, "device_plugin_name: must be one of"),
        ({"devices": "none"}, "devices: must be a list"),
        ({"colour": "red"}, "unknown key"),
        ({"devices": [_device(memory_size="lots")]}, r"devices\[0\]: memory_size"),
        ({"devices": [_device(numa_node=-1)]}, r"devices\[0\]: numa_node"),
        ({"devices": [_device(subproc_count=0)]}, "subproc_count"),
        ({"devices": [_device(smp_count=8)]}, "unknown key"),
        ({"devices": [_device(), _device()]}, r"devices\[1\].mother_uuid: two devices"),
        ({"devices": [_device(is_mig_device=True, model_name="MIG-1g")]}, "slot_name = 'cuda'"),
        ({"plugin_config": {"allocation_mode": "halves"}}, "allocation_mode"),
        ({"plugin_config": {"unit_proc": 0}}, "unit_proc"),
        ({"plugin_config": {"unit_mem": "-1G"}}, "unit_mem"),
        ({"formats": {"device": {"colour": "red"}}}, "formats.device"),
        ({"formats": {"device": {"number_format": {"round_length": -1}}}}, "round_length"),
    ],
)
def test_broken_mock_configs_name_the_file_key_and_value(
    tmp_path: Path, top: dict[str, Any], match: str
) -> None:
    path = _mock_file(tmp_path, **top)
    with pytest.raises(PluginError, match=match) as info:
        load_mock_config(path)
    assert str(path) in str(info.value)


def test_mig_devices_need_a_mig_model_name(tmp_path: Path) -> None:
    path = _mock_file(
        tmp_path, slot_name="cuda", devices=[_device(is_mig_device=True, model_name="A100")]
    )
    with pytest.raises(PluginError, match="MIG-<profile>"):
        load_mock_config(path)


def test_unreadable_mock_files_are_plugin_errors(tmp_path: Path) -> None:
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("slot_name = \n")
    with pytest.raises(PluginError, match="not valid TOML"):
        load_mock_config(bad_toml)
    bad_utf8 = tmp_path / "bad-utf8.toml"
    bad_utf8.write_bytes(b'slot_name = "\xff"\n')
    with pytest.raises(PluginError, match="UTF-8"):
        load_mock_config(bad_utf8)
    with pytest.raises(PluginError, match="cannot read"):
        load_mock_config(tmp_path / "absent.toml")


def test_share_of_a_device_rounds_down_to_the_quantum() -> None:
    settings = FractionSettings.parse({"unit_mem": "3G", "unit_proc": 7}, source="t")
    assert settings.share_of(10 * 1024**3, None) == D("3.33")
    assert settings.share_of(10 * 1024**3, 20) == D("2.85")
    assert settings.share_spec(D("0.5")) == (3 * 1024**3 // 2, 3)


# -------------------------------------------------------------------- cuda


async def test_cuda_without_a_driver_reports_zero_devices_cleanly() -> None:
    plugin = CUDAPlugin()
    await plugin.init()
    if plugin.devices():
        pytest.skip("this host has NVIDIA GPUs")
    assert plugin.available_slots() == ResourceSlot({"cuda.device": 0})
    assert "cuda.device" in plugin.available_slots()
    info = json.loads(json.dumps(plugin.info()))
    assert info["cuda_support"] is False
    assert "NVML" in info["detail"]
    assert plugin.environ({}) == {"CUDA_VISIBLE_DEVICES": ""}
    with pytest.raises(InsufficientResource):
        plugin.create_alloc_map().allocate("k", {"cuda.device": 1})


def _gpus(count: int) -> GPUInfo:
    return GPUInfo(
        driver_version="550.54.15",
        devices=tuple(
            {
                "index": i,
                "name": "NVIDIA H100 80GB HBM3",
                "uuid": f"GPU-{i:08d}",
                "memory_bytes": 80 * 1024**3,
            }
            for i in range(count)
        ),
    )


async def test_cuda_gpus_are_whole_devices_named_by_uuid() -> None:
    plugin = CUDAPlugin(gpus=_gpus(2))
    await plugin.init()
    assert plugin.available_slots() == ResourceSlot({"cuda.device": 2})
    alloc_map = plugin.create_alloc_map()
    allocation = alloc_map.allocate("k", {"cuda.device": 1})
    assert plugin.environ(allocation) == {"CUDA_VISIBLE_DEVICES": "GPU-00000000"}
    assert plugin.environ({}) == {"CUDA_VISIBLE_DEVICES": ""}
    with pytest.raises(InvalidAllocation, match="cannot mix"):
        alloc_map.allocate("k2", {"cuda.device": 1, "cuda.shares": D("0.5")})
    assert plugin.info()["nvidia_driver"] == "550.54.15"


async def test_cuda_fractional_mode_offers_shares_by_memory() -> None:
    plugin = CUDAPlugin({"allocation_mode": "fractional", "unit_mem": "10G"}, gpus=_gpus(2))
    await plugin.init()
    assert plugin.slot_types() == {"cuda.shares": SlotTypes.COUNT}
    assert plugin.available_slots() == ResourceSlot({"cuda.shares": 16})
    alloc_map = plugin.create_alloc_map()
    allocation = alloc_map.allocate("k", {"cuda.shares": D(9)})
    assert plugin.environ(allocation) == {"CUDA_VISIBLE_DEVICES": "GPU-00000000,GPU-00000001"}


# ------------------------------------------------------------------ loader


def _config(allow: list[str] | None = None) -> AgentConfig:
    lines = ["[resource]", "reserved-cpu = 0"]
    if allow is not None:
        lines = ["[agent]", f"allow-compute-plugins = {json.dumps(allow)}", *lines]
    return parse_config(AgentConfig, "\n".join(lines), env={})


def _system_mock_file() -> bool:
    return Path("/etc/bai/mock-accelerator.toml").exists()


async def test_the_loader_always_has_cpu_and_mem_and_picks_the_mock_over_an_empty_cuda() -> None:
    plugins = await load_plugins(_config(), mock_config_path=MOCK, gpus=GPUInfo(detail="none"))
    assert list(plugins) == ["cpu", "mem", "cuda"]
    assert plugins["cuda"].name == "mock"
    allocator = create_allocator(plugins)
    assert allocator.capacity()["cuda.device"] == 4
    placed = allocator.allocate("k", {"cpu": 1, "mem": 1024, "cuda.device": 1})
    assert set(placed) == {"cpu", "mem", "cuda"}


async def test_an_allow_list_without_accelerators_loads_only_cpu_and_mem() -> None:
    plugins = await load_plugins(_config(["cpu", "mem"]), mock_config_path=MOCK)
    assert list(plugins) == ["cpu", "mem"]


async def test_backend_ai_plugin_names_are_understood() -> None:
    config = _config(["ai.backend.accelerator.mock"])
    plugins = await load_plugins(config, mock_config_path=MOCK_FRACTIONAL)
    assert plugins["cuda"].name == "mock"
    assert "cuda.shares" in plugins["cuda"].slot_types()


async def test_an_unknown_plugin_name_is_a_config_error() -> None:
    with pytest.raises(PluginError, match=r"allow-compute-plugins.*'rocm'"):
        await load_plugins(_config(["rocm"]))


async def test_a_missing_mock_file_skips_the_mock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    if _system_mock_file():
        pytest.skip("this host has a system-wide mock accelerator file")
    plugins = await load_plugins(_config(["mock"]), gpus=GPUInfo(detail="none"))
    assert list(plugins) == ["cpu", "mem"]


async def test_the_mock_file_is_found_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mock-accelerator.toml").write_bytes(MOCK.read_bytes())
    monkeypatch.chdir(tmp_path)
    plugins = await load_plugins(_config(["mock"]))
    assert plugins["cuda"].available_slots() == ResourceSlot({"cuda.device": 4})


async def test_a_mock_and_a_real_cuda_both_with_devices_conflict() -> None:
    with pytest.raises(PluginError, match="both offer devices"):
        await load_plugins(_config(), mock_config_path=MOCK, gpus=_gpus(1))


async def test_a_broken_mock_file_stops_the_loader(tmp_path: Path) -> None:
    path = _mock_file(tmp_path, slot_name="Bad")
    with pytest.raises(PluginError, match="slot_name"):
        await load_plugins(_config(), mock_config_path=path)
