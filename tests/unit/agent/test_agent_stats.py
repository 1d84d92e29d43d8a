"""Per-kernel stats as the manager receives them, and host ports for service ports."""

from __future__ import annotations

import socket
from decimal import Decimal

import pytest

from bai.agent.cgroups import CgroupUsage
from bai.agent.errors import InsufficientPorts
from bai.agent.kernel import AgentKernel, format_stats
from bai.agent.kernel_store import KernelRecord
from bai.agent.ports import PortPool
from bai.common.types import KernelStatus


def test_format_stats_reports_decimal_strings_with_capacities() -> None:
    usage = CgroupUsage(cpu_ns=2_500_000_000, memory=64 * 2**20, io_read=10, io_write=20, pids=7)
    stat = format_stats(usage, Decimal("50"), Decimal(2), 256 * 2**20)
    assert stat["cpu_used"] == {"current": "2500", "capacity": None, "unit_hint": "msec"}
    assert stat["cpu_util"] == {
        "current": "50.00",
        "capacity": "200.00",
        "unit_hint": "percent",
        "pct": "25.00",
    }
    assert stat["mem"]["current"] == str(64 * 2**20)
    assert stat["mem"]["pct"] == "25.00"
    assert stat["io_read"]["current"] == "10" and stat["io_write"]["current"] == "20"
    assert stat["pids"]["current"] == "7"
    # What the host cannot measure is left out rather than reported as zero.
    assert set(format_stats(CgroupUsage(memory=1), None, None, None)) == {"collected_at", "mem"}


def test_cpu_util_needs_two_samples() -> None:
    record = KernelRecord(
        kernel_id="k",
        session_id="s",
        status="RUNNING",
        created_at=0.0,
        image="i",
        architecture="x86_64",
        runtime_type="python",
    )
    kernel = AgentKernel(record, KernelStatus.RUNNING, cpu_limit=Decimal(1))
    kernel.update_stats(CgroupUsage(cpu_ns=0, oom_kills=0))
    assert kernel.last_stat is not None and "cpu_util" not in kernel.last_stat
    kernel.update_stats(CgroupUsage(cpu_ns=10_000_000, oom_kills=2))
    assert kernel.last_stat is not None and "cpu_util" in kernel.last_stat
    assert Decimal(kernel.last_stat["cpu_util"]["current"]) > 0
    assert kernel.oom_kills == 0  # left for the next finished run to report


def test_port_pool_hands_out_free_ports_once() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        pool = PortPool(port, port + 2)
        first = pool.allocate(2)
        assert port not in first  # something on the host listens there
        assert len(set(first)) == 2
        with pytest.raises(InsufficientPorts):
            pool.allocate(1)
        pool.release(first[:1])
        assert pool.allocate(1) == first[:1]
        # Ports of kernels found again after a restart are taken too.
        pool.release(first)
        pool.claim(first)
        with pytest.raises(InsufficientPorts):
            pool.allocate(1)


def test_port_pools_that_hold_their_ports_never_share_one() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        low = probe.getsockname()[1]
    # Two agents on one host with the same port range, allocating at once; the
    # range leaves room for ports other programs hold meanwhile.
    first, second = PortPool(low, low + 19), PortPool(low, low + 19)
    mine = first.allocate(2, hold=True)
    theirs = second.allocate(2, hold=True)
    assert not set(mine) & set(theirs)
    held = first.take(mine[0])
    assert held is not None and held.getsockname()[1] == mine[0]
    held.close()
    assert first.take(mine[0]) is None
    # Released ports are bindable again.
    first.release(mine)
    second.release(theirs)
    for port in [*mine, *theirs]:
        with socket.socket() as again:
            again.bind(("127.0.0.1", port))
