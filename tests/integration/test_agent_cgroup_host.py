"""Kernel cgroups on this host's real hierarchies: limits, accounting, killing, removal."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from bai.agent.cgroups import CgroupLimits, CgroupV2, KernelCgroup, detect

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root")
UNIFIED = Path("/sys/fs/cgroup/unified")
JOIN = 'for f; do echo $$ > "$f"; done; exec sh -c "while true; do sleep 10 & sleep 0.01; done"'


def _fill(cgroup: KernelCgroup) -> subprocess.Popen[bytes]:
    """A process tree in *cgroup* that keeps forking; a loaded host gets 15 s to reach 5."""
    process = subprocess.Popen(["sh", "-c", JOIN, "sh", *cgroup.procs_files])
    deadline = time.monotonic() + 15
    while len(cgroup.pids()) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    return process


def test_the_hosts_driver_limits_measures_and_kills() -> None:
    driver, problem = detect(f"bai.test-{uuid.uuid4().hex[:8]}")
    assert driver is not None, problem
    cgroup = driver.create("kernel-a")
    try:
        unenforced = cgroup.apply(CgroupLimits(cpu=Decimal("0.5"), memory=64 * 2**20, pids=100))
        assert "memory" not in unenforced
        process = _fill(cgroup)
        assert len(cgroup.pids()) >= 5
        usage = cgroup.usage()
        assert usage.memory is not None and usage.memory > 0
        assert usage.cpu_ns is not None and usage.pids is not None and usage.pids >= 5
        assert cgroup.kill(timeout=5)
        assert cgroup.pids() == set()
        process.wait(5)
        assert set(driver.children()) == {"kernel-a"}
    finally:
        cgroup.kill()
        cgroup.remove()
        driver.remove_parent()
    assert not cgroup.exists()
    assert driver.children() == {}


@pytest.mark.skipif(
    not (UNIFIED / "cgroup.procs").exists(), reason="no cgroup2 mount at /sys/fs/cgroup/unified"
)
def test_v2_driver_on_the_unified_hierarchy() -> None:
    parent = UNIFIED / f"bai.test-{uuid.uuid4().hex[:8]}"
    driver = CgroupV2(UNIFIED, parent)
    cgroup = driver.create("kernel-b")
    try:
        missing = cgroup.apply(CgroupLimits(memory=2**30, pids=50))
        # Limits the host's v2 tree cannot enforce are reported, not failed.
        assert set(missing) == {"memory", "pids"} - set(driver.controllers)
        process = _fill(cgroup)
        assert cgroup.pids()
        assert cgroup.usage().cpu_ns is not None
        assert cgroup.kill(timeout=5)
        process.wait(5)
        assert cgroup.pids() == set()
    finally:
        cgroup.kill()
        cgroup.remove()
        driver.remove_parent()
    assert not parent.exists()
