"""Where the agent puts kernel cgroups, read from mountinfo and /proc/self/cgroup."""

from __future__ import annotations

from pathlib import Path

from bai.agent.cgroups import CgroupV1, CgroupV2, detect

V1_CGROUP = "5:memory:/payments/agent\n4:cpu,cpuacct:/payments/agent\n0::/\n"


def _mountinfo(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_v1_kernels_nest_under_the_agents_own_cgroups(tmp_path: Path) -> None:
    memory, cpu = tmp_path / "memory", tmp_path / "cpu,cpuacct"
    mountinfo = _mountinfo(
        tmp_path,
        [
            f"35 31 0:32 / {memory} rw,relatime - cgroup cgroup rw,memory",
            f"32 31 0:29 / {cpu} rw,relatime - cgroup cgroup rw,cpu,cpuacct",
            "41 31 0:38 / /proc rw - proc proc rw",
        ],
    )
    proc_cgroup = tmp_path / "cgroup"
    proc_cgroup.write_text(V1_CGROUP)
    driver, problem = detect("bai.i-1", mountinfo=mountinfo, proc_cgroup=proc_cgroup)
    assert problem == ""
    assert isinstance(driver, CgroupV1)
    assert set(driver.controllers) == {"memory", "cpu", "cpuacct"}
    kernel = driver.create("k1")
    assert kernel.paths["memory"] == str(memory / "payments/agent/bai.i-1/k1")
    # Co-mounted controllers share one directory, joined once.
    assert kernel.paths["cpu"] == kernel.paths["cpuacct"] == str(cpu / "payments/agent/bai.i-1/k1")
    assert len(kernel.procs_files) == 2
    assert set(driver.children()) == {"k1"}


def test_absolute_parents_and_mounts_of_a_sub_tree(tmp_path: Path) -> None:
    unified = tmp_path / "unified"
    unified.mkdir()
    # A container sees its own cgroup as the mount's root.
    mountinfo = _mountinfo(
        tmp_path, [f"41 31 0:38 /machine/ctr {unified} rw,relatime - cgroup2 cgroup2 rw"]
    )
    proc_cgroup = tmp_path / "cgroup"
    proc_cgroup.write_text("0::/machine/ctr/agent\n")
    driver, _ = detect("bai", mountinfo=mountinfo, proc_cgroup=proc_cgroup)
    assert isinstance(driver, CgroupV2)
    assert driver.create("k").paths == {"unified": str(unified / "agent/bai/k")}
    driver, _ = detect("/bai-root", mountinfo=mountinfo, proc_cgroup=proc_cgroup)
    assert isinstance(driver, CgroupV2)
    assert driver.create("k").paths == {"unified": str(unified / "bai-root/k")}


def test_hosts_without_cgroups_are_reported_not_raised(tmp_path: Path) -> None:
    mountinfo = _mountinfo(tmp_path, ["41 31 0:38 / /proc rw - proc proc rw"])
    proc_cgroup = tmp_path / "cgroup"
    proc_cgroup.write_text("0::/\n")
    assert detect("bai", mountinfo=mountinfo, proc_cgroup=proc_cgroup) == (
        None,
        "no cgroup hierarchy is mounted",
    )
    driver, problem = detect("bai", mountinfo=tmp_path / "absent", proc_cgroup=proc_cgroup)
    assert driver is None and "cannot read" in problem
    driver, problem = detect("../escape", mountinfo=mountinfo, proc_cgroup=proc_cgroup)
    assert driver is None and "bad cgroup parent" in problem
