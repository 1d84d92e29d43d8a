"""Launch planning: what a kernel of a ``create_kernels`` request gets, decided without I/O.

The kernel supervisor (:mod:`bai.agent.supervisor`) allocates devices and
host ports; the functions here turn a :class:`~bai.common.agent_api.KernelConfig`
and that allocation into the :class:`~bai.agent.backends.base.KernelLaunch`
the backend makes the kernel from (environment, cgroup limits, service-ports
label, hostname, bootstrap script (the owner's stored one, then the session's),
virtual folder mounts, SSH keypair, dotfiles) and the
:class:`~bai.agent.kernel_store.KernelRecord` the agent remembers it by.
They only compute: every input (the host's core count, the clock) is an
argument, so the same request always plans the same kernel.

The environment a kernel gets, later entries winning: a standard ``PATH``
(the runtime's folder first), ``LANG``, ``TERM``, ``USER`` and ``LOGNAME``;
the request's ``environ``; the ``BACKENDAI_*`` variables of its session and
cluster; the image's core-count variables (``ai.backend.envs.corecount``)
set to the cores it may use; the variables each compute plugin names for its
allocation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from decimal import Decimal
from typing import Final

from bai.agent.alloc import Allocation, allocation_to_json, allocation_total
from bai.agent.backends.base import KernelLaunch
from bai.agent.cgroups import CgroupLimits
from bai.agent.dotfiles import compose_bootstrap
from bai.agent.images import Image
from bai.agent.kernel_store import KernelRecord
from bai.agent.plugins import ComputePlugin
from bai.agent.plugins.cpu import CPUPlugin
from bai.common.agent_api import ClusterInfo, CreateKernels, InvalidRequest, KernelConfig
from bai.common.errors import InvalidValue
from bai.common.slots import ResourceSlot
from bai.common.types import KernelStatus, SlotTypes
from bai.kernel.service import INTRINSIC_SERVICE_PORTS, ServicePort

_STANDARD_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def kernel_hostname(config: KernelConfig) -> str:
    """A kernel's host name in its cluster: the one asked for, else role and index."""
    return config.cluster_hostname or f"{config.cluster_role}{config.cluster_idx}"


def cluster_of(req: CreateKernels) -> ClusterInfo:
    """The request's cluster, or (when it names none) the cluster of its own kernels."""
    if req.cluster is not None:
        return req.cluster
    ordered = sorted(req.kernels, key=lambda k: k.local_rank)
    replicas: dict[str, int] = {}
    for k in ordered:
        replicas[k.cluster_role] = replicas.get(k.cluster_role, 0) + 1
    return ClusterInfo(
        size=len(ordered),
        hosts=[kernel_hostname(k) for k in ordered],
        replicas=replicas,
    )


def requested_slots(
    index: int, config: KernelConfig, slot_types: Mapping[str, SlotTypes]
) -> ResourceSlot:
    """The slots the request's kernel number *index* asks for; InvalidRequest names the field."""
    try:
        return ResourceSlot.parse(config.resource_slots, slot_types)
    except InvalidValue as exc:
        where = f"kernels[{index}].resource_slots"
        raise InvalidRequest(
            exc.problem,
            value=exc.value,
            field=f"{where}.{exc.field}" if exc.field else where,
        ) from None


def kernel_services(image: Image) -> tuple[ServicePort, ...]:
    """The service ports a kernel of *image* has: the image's, then the intrinsic ones.

    Every kernel offers ``sshd`` and ``ttyd`` besides what its image declares;
    an image that declares a service of the same name keeps its own.
    """
    declared = {service.name for service in image.service_ports}
    return image.service_ports + tuple(
        service for service in INTRINSIC_SERVICE_PORTS if service.name not in declared
    )


def container_ports(image: Image) -> list[int]:
    """Every port of the kernel's service ports, in label order (each needs a host port)."""
    return [port for service in kernel_services(image) for port in service.ports]


def occupied_slots(allocation: Mapping[str, Allocation]) -> ResourceSlot:
    """The slots an allocation (by plugin) holds in all."""
    return sum((allocation_total(part) for part in allocation.values()), ResourceSlot())


def cpu_and_memory(slots: ResourceSlot) -> tuple[Decimal | None, int | None]:
    """The cores and bytes *slots* hold, each None when it holds none (no limit)."""
    cpu = slots.get("cpu", Decimal(0))
    mem = slots.get("mem", Decimal(0))
    return (cpu if cpu > 0 else None, int(mem) if mem > 0 else None)


def ports_label(image: Image, mapping: Mapping[int, int]) -> str:
    """The service-ports label with container ports replaced by their host ports."""
    entries = []
    for service in kernel_services(image):
        ports = [mapping[p] for p in service.ports]
        text = str(ports[0]) if len(ports) == 1 else "[" + ",".join(map(str, ports)) + "]"
        entries.append(f"{service.name}:{service.protocol}:{text}")
    return ",".join(entries)


def plan_launch(
    *,
    session_id: str,
    config: KernelConfig,
    cluster: ClusterInfo,
    image: Image,
    allocation: Mapping[str, Allocation],
    occupied: ResourceSlot,
    port_map: Mapping[int, int],
    plugins: Mapping[str, ComputePlugin],
    pids_max: int,
    peers: tuple[str, ...],
    bootstrap_timeout: float,
    host_cpus: int,
) -> KernelLaunch:
    """What the backend makes the kernel from (see the module docstring for its environment).

    *occupied* is the allocation's total, *port_map* maps each container port
    to its host port, *host_cpus* is the core count a kernel without a
    ``cpu`` slot sees.
    """
    cpu, memory = cpu_and_memory(occupied)
    cores = CPUPlugin.cores(allocation.get("cpu", {}))
    core_count = max(math.ceil(cpu), 1) if cpu is not None else host_cpus
    hostname = kernel_hostname(config)
    runtime_dir = os.path.dirname(image.runtime_path)
    environ: dict[str, str] = {
        "PATH": f"{runtime_dir}:{_STANDARD_PATH}" if runtime_dir else _STANDARD_PATH,
        "LANG": "C.UTF-8",
        "TERM": "xterm",
        "USER": "work",
        "LOGNAME": "work",
    }
    environ.update(config.environ)
    environ.update(
        {
            "BACKENDAI_KERNEL_ID": str(config.kernel_id),
            "BACKENDAI_SESSION_ID": session_id,
            "BACKENDAI_KERNEL_IMAGE": image.name,
            "BACKENDAI_SESSION_TYPE": config.session_type,
            "BACKENDAI_CLUSTER_SIZE": str(cluster.size),
            "BACKENDAI_CLUSTER_HOSTS": ",".join(cluster.hosts),
            "BACKENDAI_CLUSTER_REPLICAS": ",".join(
                f"{role}:{count}" for role, count in cluster.replicas.items()
            ),
            "BACKENDAI_CLUSTER_HOST": hostname,
            "BACKENDAI_CLUSTER_IDX": str(config.cluster_idx),
            "BACKENDAI_CLUSTER_ROLE": config.cluster_role,
            "BACKENDAI_CLUSTER_LOCAL_RANK": str(config.local_rank),
        }
    )
    for name in image.corecount_envs:
        environ[name] = str(core_count)
    for key, plugin in plugins.items():
        environ.update(plugin.environ(allocation.get(key, {})))
    limits = CgroupLimits(
        cpu=cpu,
        memory=memory,
        pids=pids_max,
        cpus=tuple(cores) if cores else None,
    )
    return KernelLaunch(
        image=image,
        environ=environ,
        limits=limits,
        service_ports_label=ports_label(image, port_map),
        hostname=hostname,
        peers=peers,
        bootstrap_script=compose_bootstrap(config.user_bootstrap_script, config.bootstrap_script),
        bootstrap_timeout=bootstrap_timeout,
        mounts=tuple(config.mounts),
        ssh_keypair=config.ssh_keypair,
        dotfiles=tuple(config.dotfiles),
        shmem=config.resource_opts.shmem,
    )


def plan_record(
    *,
    session_id: str,
    config: KernelConfig,
    image: Image,
    launch: KernelLaunch,
    allocation: Mapping[str, Allocation],
    occupied: ResourceSlot,
    port_map: Mapping[int, int],
    created_at: float,
) -> KernelRecord:
    """The kernel's first record (``PREPARING``), before the backend made anything."""
    return KernelRecord(
        kernel_id=str(config.kernel_id),
        session_id=session_id,
        status=KernelStatus.PREPARING.value,
        created_at=created_at,
        image=image.name,
        architecture=image.architecture,
        runtime_type=image.runtime_type,
        cluster_role=config.cluster_role,
        cluster_idx=config.cluster_idx,
        cluster_hostname=launch.hostname,
        local_rank=config.local_rank,
        occupied_slots=occupied.to_json(),
        allocations={key: allocation_to_json(part) for key, part in allocation.items() if part},
        resource_opts={"pids_max": launch.limits.pids},
        service_ports=[
            {
                "name": service.name,
                "protocol": service.protocol,
                "container_ports": [port_map[p] for p in service.ports],
                "host_ports": [port_map[p] for p in service.ports],
            }
            for service in kernel_services(image)
        ],
        mounts=list(launch.mounts),
    )
