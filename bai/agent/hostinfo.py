"""Detection of what this host offers kernels: cgroups, bubblewrap, Docker and NVIDIA GPUs.

Every probe is read-only, never raises for a missing feature (it reports it as
absent with the reason), and is bounded in time, so ``bai info`` and the
agent's start-up work the same on a laptop, a CI machine and a GPU node.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
DOCKER_SOCKET = Path("/var/run/docker.sock")
_PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class CgroupInfo:
    """Which cgroup hierarchy is mounted and which controllers bai can use."""

    version: int | None
    controllers: tuple[str, ...] = ()
    writable: bool = False
    detail: str = ""


@dataclass(frozen=True)
class ToolInfo:
    """Whether a helper program (bwrap, dockerd) is usable, with its version or the reason not."""

    available: bool
    version: str = ""
    detail: str = ""


@dataclass(frozen=True)
class GPUInfo:
    """NVIDIA devices seen through NVML; ``devices`` is empty without a driver."""

    driver_version: str = ""
    devices: tuple[dict[str, Any], ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class HostInfo:
    cgroups: CgroupInfo
    bwrap: ToolInfo
    docker: ToolInfo
    gpus: GPUInfo
    cpu_count: int = field(default_factory=lambda: os.cpu_count() or 1)


def detect_cgroups(root: Path = CGROUP_ROOT) -> CgroupInfo:
    """Tell cgroup v2 (one unified hierarchy) from v1 (one mount per controller)."""
    wanted = ("cpu", "memory", "pids")
    controllers_file = root / "cgroup.controllers"
    if controllers_file.is_file():
        available = controllers_file.read_text().split()
        usable = tuple(c for c in wanted if c in available)
        return CgroupInfo(2, usable, os.access(root, os.W_OK), str(root))
    if not root.is_dir():
        return CgroupInfo(None, detail=f"{root} is not mounted")
    usable = tuple(c for c in wanted if (root / c).is_dir())
    if not usable:
        return CgroupInfo(None, detail=f"no cpu, memory or pids hierarchy under {root}")
    writable = all(os.access(root / c, os.W_OK) for c in usable)
    return CgroupInfo(1, usable, writable, str(root))


def _version_of(argv: list[str]) -> ToolInfo:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=_PROBE_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return ToolInfo(False, detail=str(exc))
    output = (done.stdout or done.stderr).strip()
    if done.returncode != 0:
        return ToolInfo(False, detail=output or f"exit code {done.returncode}")
    return ToolInfo(True, version=output.splitlines()[0] if output else "")


def detect_bwrap() -> ToolInfo:
    """Bubblewrap gives local kernels private mount, pid and ipc namespaces."""
    path = shutil.which("bwrap")
    if path is None:
        return ToolInfo(False, detail="bwrap is not installed (apt-get install bubblewrap)")
    return _version_of([path, "--version"])


def detect_docker() -> ToolInfo:
    """Docker is usable when an engine answers on its socket, not merely when a client exists."""
    client = shutil.which("docker")
    if client is None:
        return ToolInfo(False, detail="docker is not installed")
    if not DOCKER_SOCKET.exists():
        return ToolInfo(False, detail=f"no engine socket at {DOCKER_SOCKET}")
    info = _version_of([client, "version", "--format", "{{.Server.Version}}"])
    if info.available:
        return ToolInfo(True, version=f"engine {info.version}")
    return info


def detect_gpus() -> GPUInfo:
    """Enumerate NVIDIA GPUs with NVML; a host without the driver reports no devices."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return GPUInfo(detail=f"NVML unavailable: {exc}")
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(
                {
                    "index": index,
                    "name": _text(pynvml.nvmlDeviceGetName(handle)),
                    "uuid": _text(pynvml.nvmlDeviceGetUUID(handle)),
                    "memory_bytes": int(memory.total),
                }
            )
        return GPUInfo(_text(pynvml.nvmlSystemGetDriverVersion()), tuple(devices))
    finally:
        pynvml.nvmlShutdown()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def detect_host() -> HostInfo:
    """Run every probe once."""
    return HostInfo(detect_cgroups(), detect_bwrap(), detect_docker(), detect_gpus())
