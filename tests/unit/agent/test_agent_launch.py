"""A create request plans the same kernel every time, without touching the host."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from bai.agent.alloc import Allocation, AllocMap
from bai.agent.backends.base import KernelLaunch
from bai.agent.images import Image
from bai.agent.kernel import AgentKernel
from bai.agent.launch import (
    cluster_of,
    container_ports,
    cpu_and_memory,
    kernel_hostname,
    kernel_services,
    occupied_slots,
    plan_launch,
    plan_record,
    ports_label,
    requested_slots,
)
from bai.agent.plugins import ComputePlugin, Device
from bai.common.agent_api import (
    ClusterInfo,
    CreateKernels,
    InvalidRequest,
    KernelConfig,
    parse,
)
from bai.common.slots import ResourceSlot
from bai.common.types import InvalidTransition, KernelStatus, SlotTypes
from bai.kernel.service import ServicePort, parse_service_ports

SESSION = "00000000-0000-0000-0000-0000000000aa"
KID = uuid.UUID("3f2c1b9e-5a8d-4c1e-9f00-1234567890ab")
IMAGE = Image(
    name="python:3.11",
    aliases=("python",),
    architecture="x86_64",
    labels={},
    runtime_type="python",
    runtime_path="/opt/py/bin/python3",
    service_ports=tuple(parse_service_ports("http:http:8080,ide:http:[8090,8091]")),
    corecount_envs=("OMP_NUM_THREADS", "NPROC"),
)
PORT_MAP = {8080: 30001, 8090: 30002, 8091: 30003, 2200: 30004, 7681: 30005}
ALLOCATION: dict[str, Allocation] = {
    "cpu": {"cpu": {"2": Decimal(1), "3": Decimal(1)}},
    "mem": {"mem": {"root": Decimal(512 * 1024**2)}},
}


class _FakePlugin(ComputePlugin):
    """Names the devices it was given in one variable, as the GPU plugins do."""

    name = "fake"

    def __init__(self) -> None:
        self.key = "fake"

    async def init(self) -> None:
        raise NotImplementedError

    def slot_types(self) -> dict[str, SlotTypes]:
        return {"fake.device": SlotTypes.COUNT}

    def devices(self) -> Sequence[Device]:
        return []

    def create_alloc_map(self) -> AllocMap:
        raise NotImplementedError

    def environ(self, allocation: Allocation) -> dict[str, str]:
        return {"FAKE_DEVICES": ",".join(sorted(allocation.get("fake.device", {})))}


def _config(**fields: Any) -> KernelConfig:
    return parse(
        {"session_id": SESSION, "kernels": [{"kernel_id": str(KID), "image": "python", **fields}]},
        CreateKernels,
    ).kernels[0]


def _launch(
    config: KernelConfig, allocation: Mapping[str, Allocation] = ALLOCATION
) -> KernelLaunch:
    return plan_launch(
        session_id=SESSION,
        config=config,
        cluster=ClusterInfo(size=2, hosts=["main1", "sub1"], replicas={"main": 1, "sub": 1}),
        image=IMAGE,
        allocation=allocation,
        occupied=occupied_slots(allocation),
        port_map=PORT_MAP,
        plugins={"fake": _FakePlugin()},
        pids_max=512,
        peers=("main1", "sub1"),
        bootstrap_timeout=12.5,
        host_cpus=64,
    )


def test_a_launch_carries_the_environment_limits_and_script() -> None:
    config = _config(
        environ={"PATH": "/mine", "BACKENDAI_KERNEL_ID": "forged", "MY_VAR": "1"},
        session_type="batch",
        bootstrap_script="echo hi",
    )
    launch = _launch(config)
    env = launch.environ
    # The runtime's folder comes first unless the request names its own PATH.
    assert env["PATH"] == "/mine"
    assert env["MY_VAR"] == "1"
    # The agent's variables win over the request's.
    assert env["BACKENDAI_KERNEL_ID"] == str(KID)
    assert env["BACKENDAI_SESSION_ID"] == SESSION
    assert env["BACKENDAI_SESSION_TYPE"] == "batch"
    assert env["BACKENDAI_CLUSTER_HOSTS"] == "main1,sub1"
    assert env["BACKENDAI_CLUSTER_REPLICAS"] == "main:1,sub:1"
    assert env["BACKENDAI_CLUSTER_HOST"] == "main1"
    assert env["OMP_NUM_THREADS"] == env["NPROC"] == "2"
    assert env["FAKE_DEVICES"] == ""
    assert launch.limits.cpu == Decimal(2)
    assert launch.limits.memory == 512 * 1024**2
    assert launch.limits.pids == 512
    assert launch.limits.cpus == (2, 3)
    assert launch.service_ports_label == (
        "http:http:30001,ide:http:[30002,30003],sshd:tcp:30004,ttyd:http:30005"
    )
    assert launch.hostname == "main1"
    assert launch.peers == ("main1", "sub1")
    assert (launch.bootstrap_script, launch.bootstrap_timeout) == ("echo hi", 12.5)
    assert _launch(config) == launch


def test_a_kernel_without_cpu_slots_sees_the_host_cores_and_no_limits() -> None:
    launch = _launch(_config(), allocation={"fake": {"fake.device": {"gpu-1": Decimal(1)}}})
    assert launch.environ["PATH"].startswith("/opt/py/bin:/usr/local/sbin:")
    assert launch.environ["OMP_NUM_THREADS"] == "64"
    assert launch.environ["FAKE_DEVICES"] == "gpu-1"
    assert (launch.limits.cpu, launch.limits.memory, launch.limits.cpus) == (None, None, None)


def test_the_record_names_the_allocation_and_host_ports() -> None:
    config = _config(cluster_role="sub", cluster_idx=2, local_rank=1)
    launch = _launch(config)
    record = plan_record(
        session_id=SESSION,
        config=config,
        image=IMAGE,
        launch=launch,
        allocation={**ALLOCATION, "fake": {}},
        occupied=occupied_slots(ALLOCATION),
        port_map=PORT_MAP,
        created_at=7.0,
    )
    assert record.kernel_id == str(KID)
    assert record.status == "PREPARING"
    assert record.created_at == 7.0
    assert (record.cluster_role, record.cluster_idx, record.cluster_hostname) == ("sub", 2, "sub2")
    assert record.occupied_slots == {"cpu": "2", "mem": str(512 * 1024**2)}
    # A plugin that gave the kernel nothing is left out.
    assert set(record.allocations) == {"cpu", "mem"}
    assert record.resource_opts == {"pids_max": 512}
    assert record.service_ports == [
        {"name": "http", "protocol": "http", "container_ports": [30001], "host_ports": [30001]},
        {
            "name": "ide",
            "protocol": "http",
            "container_ports": [30002, 30003],
            "host_ports": [30002, 30003],
        },
        {"name": "sshd", "protocol": "tcp", "container_ports": [30004], "host_ports": [30004]},
        {"name": "ttyd", "protocol": "http", "container_ports": [30005], "host_ports": [30005]},
    ]


def test_a_request_without_a_cluster_is_its_own_cluster() -> None:
    req = parse(
        {
            "session_id": SESSION,
            "kernels": [
                {
                    "kernel_id": str(uuid.uuid4()),
                    "image": "python",
                    "cluster_role": "sub",
                    "cluster_idx": 1,
                    "local_rank": 1,
                },
                {
                    "kernel_id": str(uuid.uuid4()),
                    "image": "python",
                    "local_rank": 0,
                    "cluster_hostname": "head",
                },
                {
                    "kernel_id": str(uuid.uuid4()),
                    "image": "python",
                    "cluster_role": "sub",
                    "cluster_idx": 2,
                    "local_rank": 2,
                },
            ],
        },
        CreateKernels,
    )
    assert cluster_of(req) == ClusterInfo(
        size=3, hosts=["head", "sub1", "sub2"], replicas={"main": 1, "sub": 2}
    )
    given = ClusterInfo(size=8, hosts=["a"], replicas={"main": 8})
    with_cluster = parse(
        {**_plain(req), "cluster": {"size": 8, "hosts": ["a"], "replicas": {"main": 8}}},
        CreateKernels,
    )
    assert cluster_of(with_cluster) == given
    assert [kernel_hostname(k) for k in req.kernels] == ["sub1", "head", "sub2"]


def _plain(req: CreateKernels) -> dict[str, Any]:
    return {
        "session_id": str(req.session_id),
        "kernels": [{"kernel_id": str(k.kernel_id), "image": k.image} for k in req.kernels],
    }


def test_bad_slots_name_the_kernel_and_the_slot() -> None:
    types = {"cpu": SlotTypes.COUNT, "mem": SlotTypes.BYTES}
    assert requested_slots(0, _config(resource_slots={"cpu": "2", "mem": "1g"}), types) == (
        ResourceSlot({"cpu": Decimal(2), "mem": Decimal(1024**3)})
    )
    with pytest.raises(InvalidRequest) as info:
        requested_slots(3, _config(resource_slots={"cpu": "lots"}), types)
    assert info.value.field is not None
    assert info.value.field.startswith("kernels[3].resource_slots")


def test_small_helpers() -> None:
    assert container_ports(IMAGE) == [8080, 8090, 8091, 2200, 7681]
    assert ports_label(IMAGE, PORT_MAP) == (
        "http:http:30001,ide:http:[30002,30003],sshd:tcp:30004,ttyd:http:30005"
    )
    assert cpu_and_memory(ResourceSlot({"cpu": Decimal("0.5")})) == (Decimal("0.5"), None)
    assert cpu_and_memory(ResourceSlot()) == (None, None)


def test_every_kernel_offers_sshd_and_ttyd_unless_its_image_declares_them() -> None:
    assert [s.name for s in kernel_services(IMAGE)] == ["http", "ide", "sshd", "ttyd"]
    own_ttyd = ServicePort("ttyd", "http", (9000,))
    image = replace(IMAGE, service_ports=(own_ttyd,))
    assert kernel_services(image) == (own_ttyd, ServicePort("sshd", "tcp", (2200,)))


def test_kernel_statuses_follow_the_transition_table() -> None:
    kernel = AgentKernel(
        plan_record(
            session_id=SESSION,
            config=_config(),
            image=IMAGE,
            launch=_launch(_config()),
            allocation=ALLOCATION,
            occupied=occupied_slots(ALLOCATION),
            port_map=PORT_MAP,
            created_at=0.0,
        ),
        KernelStatus.PREPARING,
    )
    kernel.transition(KernelStatus.CREATING)
    kernel.transition(KernelStatus.CREATING)  # staying is no change
    with pytest.raises(InvalidTransition):
        kernel.transition(KernelStatus.PREPARING)
    assert kernel.status is KernelStatus.CREATING
    for status in (
        KernelStatus.RUNNING,
        KernelStatus.RESTARTING,
        KernelStatus.RUNNING,
        KernelStatus.TERMINATING,
        KernelStatus.TERMINATED,
    ):
        kernel.transition(status)
    with pytest.raises(InvalidTransition):
        kernel.transition(KernelStatus.TERMINATING)
