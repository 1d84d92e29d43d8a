"""Probes of the host capacity the cpu and mem plugins offer: cores, NUMA, memory, cgroups.

An agent may itself run restricted (a container, a systemd slice, ``taskset``),
so capacity is what *this process* may use, not what the machine has:

* cores are those of the process's CPU affinity (which a cgroup cpuset
  restricts), cut down further to ``floor(quota / period)`` when the agent's
  cgroup (or an ancestor) has a CPU bandwidth quota;
* memory is ``MemTotal`` of ``/proc/meminfo``, or the agent's cgroup memory
  limit (or an ancestor's) when that is lower.

Every function is synchronous, reads a few small files, never raises for a
missing or unreadable file (the limit is then taken as absent) and takes its
paths as arguments so tests can point it at a prepared tree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Final

from bai.agent.hostinfo import CGROUP_ROOT, detect_cgroups

__all__ = [
    "cgroup_cpu_limit",
    "cgroup_memory_limit",
    "core_numa_nodes",
    "mem_total",
    "usable_cores",
]

PROC_SELF_CGROUP: Final = Path("/proc/self/cgroup")
PROC_MEMINFO: Final = Path("/proc/meminfo")
SYS_CPU: Final = Path("/sys/devices/system/cpu")
# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit value.
_NO_LIMIT_ABOVE: Final = 2**62
_NODE_RE: Final = re.compile(r"node([0-9]+)")


def usable_cores() -> list[int]:
    """The ids of the cores this process may run on, ascending."""
    return sorted(os.sched_getaffinity(0))


def core_numa_nodes(cores: Sequence[int], sys_cpu: Path = SYS_CPU) -> dict[int, int | None]:
    """The NUMA node of each core (``/sys/devices/system/cpu/cpuN/nodeM``), None when unknown."""
    nodes: dict[int, int | None] = {}
    for core in cores:
        nodes[core] = None
        try:
            entries = os.listdir(sys_cpu / f"cpu{core}")
        except OSError:
            continue
        for entry in entries:
            match = _NODE_RE.fullmatch(entry)
            if match:
                nodes[core] = int(match[1])
                break
    return nodes


def mem_total(meminfo: Path = PROC_MEMINFO) -> int:
    """Bytes of ``MemTotal``; 0 when it cannot be read."""
    try:
        text = meminfo.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == "MemTotal":
            fields = rest.split()
            if fields and fields[0].isdigit():
                scale = 1024 if len(fields) > 1 and fields[1].lower() == "kb" else 1
                return int(fields[0]) * scale
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_dirs(root: Path, controller: str, proc_cgroup: Path) -> Iterator[tuple[int, Path]]:
    """Yield (version, folder) for the agent's cgroup of *controller* and each ancestor.

    A folder that does not exist (the agent sees a namespaced view) is left
    out; the hierarchy's root is always among the candidates.
    """
    info = detect_cgroups(root)
    if info.version is None:
        return
    text = _read(proc_cgroup) or ""
    own = "/"
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        wanted = controllers == "" if info.version == 2 else controller in controllers.split(",")
        if wanted:
            own = path
    base = root if info.version == 2 else root / controller
    folder = base / own.lstrip("/")
    for candidate in (folder, *folder.parents):
        if candidate.is_relative_to(base) and candidate.is_dir():
            yield info.version, candidate


def cgroup_cpu_limit(
    root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP
) -> Fraction | None:
    """The tightest CPU bandwidth quota (in CPUs) over the agent's cgroup and its ancestors."""
    limits: list[Fraction] = []
    for version, folder in _cgroup_dirs(root, "cpu", proc_cgroup):
        if version == 2:
            quota, _, period = (_read(folder / "cpu.max") or "max").partition(" ")
        else:
            quota = _read(folder / "cpu.cfs_quota_us") or "-1"
            period = _read(folder / "cpu.cfs_period_us") or ""
        if quota.isdigit() and period.isdigit() and int(period) > 0:
            limits.append(Fraction(int(quota), int(period)))
    return min(limits, default=None)


def cgroup_memory_limit(
    root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP
) -> int | None:
    """The tightest memory limit in bytes over the agent's cgroup and its ancestors."""
    limits: list[int] = []
    for version, folder in _cgroup_dirs(root, "memory", proc_cgroup):
        name = "memory.max" if version == 2 else "memory.limit_in_bytes"
        value = _read(folder / name) or ""
        if value.isdigit() and int(value) < _NO_LIMIT_ABOVE:
            limits.append(int(value))
    return min(limits, default=None)
