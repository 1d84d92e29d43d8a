"""``bai agent``: the agent service -- kernels, RPC for the manager, events, stats, recovery.

:class:`AgentService` is one Trio service (``await nursery.start(agent.serve)``
reports the RPC URLs it listens on).  It runs kernels through a
:class:`~bai.agent.backends.base.KernelBackend` (the local backend), keeps
their allocations in the compute plugins' maps, remembers them in the kernel
registry on disk, answers the manager's RPC calls, and publishes heartbeats
and the ends of its kernels on the event bus.

RPC methods
===========

Every method takes one map of arguments (see :mod:`bai.agent.requests` for
the exact fields and limits) and answers a msgpack value.  Kernel and session
ids travel as UUID strings.  Errors travel as the RPC ``err`` envelope whose
``type`` is one of: ``InvalidRequest`` (malformed arguments; ``detail`` names
the field), ``KernelNotFound``, ``KernelAlreadyExists``, ``KernelNotRunning``,
``UnknownImage``, ``InsufficientResource``/``FragmentedResource``/
``InvalidAllocation`` (the request cannot be placed), ``KernelCreationFailed``
(``detail = {"kernels": {kernel_id: "reason: message"}, "reasons": {kernel_id:
reason}}``), ``RunError`` (an execute call
that does not fit its run), ``RunnerLinkError`` (the runner did not answer in
time), ``ScratchPathError`` (a path leaving ``/home/work``, or naming a symbolic
link or special file), ``KernelFileError``, ``FileTooLarge`` and
``FileOperationTimeout``.  A failed call changes nothing.

``create_kernels {session_id, kernels: [KernelConfig], cluster?}``
    Creates the kernels of one session, all or nothing (all are started
    concurrently; if one fails the others are destroyed with reason
    ``cluster-peer-failed`` and ``KernelCreationFailed`` is raised).  Returns
    one map per kernel, in order: ``kernel_id``, ``session_id``, ``status``
    (``RUNNING``), ``agent_id``, ``agent_addr``, ``kernel_host``,
    ``repl_in``/``repl_out`` (runner addresses), ``service_ports``
    (``[{name, protocol, container_ports, host_ports}]``), ``occupied_slots``
    (ResourceSlot JSON), ``attached_devices`` (allocation by plugin:
    ``{plugin: {slot: {device: amount}}}``), ``resource_opts``, ``pid``,
    ``scratch_dir``, ``isolation`` (``bwrap`` or ``process``), ``image``.
    A kernel with a ``bootstrap_script`` gets it as ``bootstrap.sh`` in its
    ``/home/work`` and is RUNNING only once the script exited 0 (its output
    is in the kernel's log); a script that fails or outlives the agent's
    bootstrap timeout fails the kernel with reason ``bootstrap-failed`` and
    the end of its output in the message.  The script runs again when the
    kernel is restarted.
``destroy_kernel {kernel_id, reason="user-requested"}``
    Stops the kernel (SIGTERM, SIGKILL after the grace period), releases
    everything, answers ``{kernel_id, session_id, reason, exit_code,
    last_stat}``.  Repeating it for a kernel that just ended answers the same.
``restart_kernel {kernel_id}``
    Restarts the runner in the same scratch directory and allocation (the
    Python namespace is lost); answers like one kernel of create_kernels.
``execute {kernel_id, run_id, mode, code="", options=None, flush_timeout=None}``
    One call of the execute long-poll: mode ``query`` (new run of *code*),
    ``batch`` (new run; *options* is the Batch Execution Query Object),
    ``input`` (*code* answers a ``waiting-input``), ``continue``.  Returns
    the Execution Result Object ``{runId, status, exitCode, console,
    options}`` after the run finishes a step or after *flush_timeout* (2 s by
    default) with status ``continued``.  ``continue`` on a run already
    collected to its end answers ``finished`` with its exit code again.
``interrupt_kernel {kernel_id}`` -> nil
``get_completions {kernel_id, code, options}`` -> ``[str]``
``get_logs {kernel_id}`` -> ``{"logs": str}``
``upload_file {kernel_id, path, data: bin}`` -> ``{"path": abspath, "size": int}``
``upload_files {kernel_id, files: [{path, data: bin}]}`` -> ``[{"path": abspath, "size": int}]``
    Writes all the files or, when one is refused, none.
``download_file {kernel_id, path}`` -> tar archive (bin) of the file or folder
``list_files {kernel_id, path="."}`` -> ``{"files": JSON text, "errors": str, "abspath": str}``
``start_service {kernel_id, service, options: {envs, timeout}}``
    -> ``{"status": "started"|"running"|"failed", "error": str|None, "ports": [int]}``
``shutdown_service {kernel_id, service}`` -> ``{"status": "stopped"|"not-running"}``
``get_apps {kernel_id}`` -> ``[{name, protocol, ports, url_template, running}]``
``ping <anything>`` -> the same value
``gather_hwinfo`` -> ``{plugin key: {"status", "status_info", "metadata"}}``
``sync_kernel_registry {kernels: [[kernel_id, session_id]], terminate_unknown=False}``
    -> ``{"missing": [...], "unknown": [...], "terminated": [...]}``: kernels
    the manager lists but the agent does not run get an
    ``agent_kernel_terminated`` report (``already-terminated``, or their real
    reason if they ended recently); kernels the agent runs that the manager
    does not list are reported, and destroyed (``not-found-in-manager``) with
    *terminate_unknown*.
``get_stats {kernel_ids=None}`` -> ``{kernel_id: last_stat}``
``describe_kernels {kernel_ids}`` -> ``[description]``: those of the named
    kernels the agent has RUNNING, each as one kernel of ``create_kernels``
    answers it (a manager restarted while it created them records them so).

Events
======

``agent_started`` once serving, ``agent_heartbeat`` every
``heartbeat-interval`` (``agent_info``: ``id``, ``addr``, ``region``,
``scaling_group``, ``architecture``, ``version``, ``available_slots`` (the
capacity), ``occupied_slots``, ``slot_types``, ``compute_plugins``,
``images``, ``backend``, ``kernels`` (their number), ``kernel_statuses`` (the
status of each kernel the agent has, by id, which the manager checks its
running kernels against)), ``agent_terminated`` at shutdown;
and ``agent_kernel_terminated`` when a kernel is gone, with its reason
(``user-requested``, ``self-terminated``, ``oom-killed``,
``failed-to-start``, ``bootstrap-failed``, ``cluster-peer-failed``,
``agent-termination``, ...) and exit code.  That report is for the manager,
which moves the kernel on and publishes the public ``kernel_*`` events; the
agent's progress while creating, restarting or destroying a kernel reaches
the manager as the answers of its RPC calls.  A kernel-end report the bus
did not take is kept in an outbox and sent again, oldest first, until it is
delivered (the manager handles a report twice as once).

Guarantees
==========

* Every wait on a kernel has a deadline; a kernel that does not start ends
  ``TERMINATED`` with reason ``failed-to-start`` and the cause in the error.
* A kernel that ends by itself is reported at once (the agent waits on its
  process), with ``oom-killed`` when its cgroup's OOM killer fired.
* A kernel's end always frees its slots and ports, even when cleaning up its
  host state fails or runs out of time (the agent's next start removes what
  such a cleanup left).
* File operations touch only regular files and folders and never block on
  what a kernel made (see :mod:`bai.agent.files`); they run on threads of the
  kernel's own limiter, each within :data:`FILE_OP_TIMEOUT`, so no kernel's
  files can hold up the agent or other kernels.
* Cancelling :meth:`AgentService.serve` kills every kernel's processes and
  removes their cgroups and directories before it returns, even when the
  event bus fails while it says goodbye.
* After a ``kill -9`` of the agent, the next start re-adopts the kernels that
  survived (allocations, ports and runs included), reports the dead ones
  terminated, and removes cgroups and folders no registry entry names.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import sys
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final, TypeVar

import trio

import bai
from bai.agent import files, portfwd, requests
from bai.agent.alloc import (
    AllocationError,
    ResourceAllocator,
    allocation_from_json,
    allocation_to_json,
    allocation_total,
)
from bai.agent.backends.base import (
    DEFAULT_BOOTSTRAP_TIMEOUT,
    BackendError,
    KernelBackend,
    KernelLaunch,
    KernelProcess,
)
from bai.agent.backends.local import LocalBackend
from bai.agent.cgroups import CgroupLimits, OomKillCounter
from bai.agent.images import Image, ImageCatalog, host_architecture, load_catalog
from bai.agent.kernel import AgentKernel
from bai.agent.plugins import ComputePlugin, create_allocator, load_plugins
from bai.agent.plugins.cpu import CPUPlugin
from bai.agent.registry import KernelRecord, KernelRegistry
from bai.agent.requests import InvalidRequest, parse
from bai.agent.runnerlink import RunError, RunnerLink, RunnerLinkError
from bai.common.config import AgentConfig
from bai.common.daemon import private_dir
from bai.common.errors import BaiError, InvalidValue
from bai.common.events import (
    AgentHeartbeat,
    AgentKernelTerminated,
    AgentStarted,
    AgentTerminated,
    Event,
    EventBus,
    EventBusError,
)
from bai.common.rpc import Handler, RPCServer
from bai.common.slots import ResourceSlot
from bai.common.types import AgentId, KernelId, KernelStatus, SessionId
from bai.kernel.protocol import BOOTSTRAP_FAILED_EXIT

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The execute long-poll's flush timeout when the caller names none (ARCHITECTURE.md).
DEFAULT_FLUSH_TIMEOUT: Final = 2.0
#: Bytes of the runner's own log returned by get_logs.
LOG_TAIL_BYTES: Final = 64 * 1024
#: A kernel log larger than this is cut back to its last LOG_TAIL_BYTES.
LOG_MAX_BYTES: Final = 8 * 1024 * 1024
#: How long an event publish may take before it is given up (logged).
PUBLISH_TIMEOUT: Final = 5.0
#: Bound on the cleanup of one kernel (kill, wait, remove) at its end.
CLEANUP_TIMEOUT: Final = 30.0
#: How long a runner that dropped its link may take to exit before it counts as hung.
EXIT_GRACE: Final = 2.0
#: Kernel-end reports kept for another try while the bus fails; past this the
#: oldest goes (the manager's heartbeat check still ends its kernel).
OUTBOX_LIMIT: Final = 10_000
#: Longest wait between two tries of delivering the outbox.
OUTBOX_RETRY_MAX: Final = 2.0
#: Ended kernels whose destroy result is remembered.
TERMINATED_KEPT: Final = 1024
#: Bound on one file operation (upload, download, list), waiting for a thread included.
FILE_OP_TIMEOUT: Final = 10.0
_STANDARD_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class KernelNotFound(BaiError):
    """No kernel with that id runs on this agent."""


class KernelAlreadyExists(BaiError):
    """create_kernels named a kernel id this agent already has."""


class KernelNotRunning(BaiError):
    """The kernel exists but is not RUNNING (starting, restarting or terminating)."""


class KernelCreationFailed(BaiError):
    """Some kernel of a create_kernels call did not start; none of them is left running."""

    def __init__(
        self, message: str, failures: Mapping[str, str], reasons: Mapping[str, str]
    ) -> None:
        super().__init__(message)
        self.detail = {"kernels": dict(failures), "reasons": dict(reasons)}


class KernelStartFailed(BaiError):
    """Internal: a kernel could not be started (or restarted or re-adopted)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PortPool:
    """Host ports for service ports, from ``[container] port-range``; never hands one out twice.

    A port is handed out only when it can be bound on *host*.  With *hold* the
    pool keeps that bound socket until :meth:`take` or :meth:`release`, so
    no other process (another agent on the host, say) gets the port between
    its allocation and the agent's own listener on it.
    """

    def __init__(self, low: int, high: int, host: str = "127.0.0.1") -> None:
        self._low = low
        self._high = high
        self._host = host
        self._used: set[int] = set()
        self._held: dict[int, socket.socket] = {}
        self._next = low

    def claim(self, ports: Sequence[int]) -> None:
        """Mark *ports* taken (kernels found again after a restart)."""
        self._used.update(ports)

    def release(self, ports: Sequence[int]) -> None:
        for port in ports:
            held = self._held.pop(port, None)
            if held is not None:
                held.close()
        self._used.difference_update(ports)

    def take(self, port: int) -> socket.socket | None:
        """The socket bound to *port* since its allocation (None if none is held)."""
        return self._held.pop(port, None)

    def allocate(self, count: int, *, hold: bool = False) -> list[int]:
        """*count* free ports that nothing on the host listens on; raises InsufficientPorts."""
        chosen: dict[int, socket.socket] = {}
        size = self._high - self._low + 1
        for _ in range(size):
            if len(chosen) == count:
                break
            port = self._next
            self._next = self._low + (self._next - self._low + 1) % size
            if port in self._used:
                continue
            bound = self._bind(port)
            if bound is not None:
                chosen[port] = bound
        if len(chosen) < count:
            for bound in chosen.values():
                bound.close()
            raise InsufficientPorts(f"no {count} free ports left in {self._low}-{self._high}")
        for port, bound in chosen.items():
            if hold:
                self._held[port] = bound
            else:
                bound.close()
        self._used.update(chosen)
        return list(chosen)

    def _bind(self, port: int) -> socket.socket | None:
        # No SO_REUSEADDR: with it two unlistened sockets may share a port.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((self._host, port))
        except OSError:
            sock.close()
            return None
        return sock


class InsufficientPorts(BaiError):
    """The agent's port range has no room for a kernel's service ports."""


def _hostname(config: requests.KernelConfig) -> str:
    """A kernel's host name in its cluster: the one asked for, else role and index."""
    return config.cluster_hostname or f"{config.cluster_role}{config.cluster_idx}"


def _host_ports(record: KernelRecord) -> list[int]:
    """Every host port of a kernel's service ports."""
    return [port for service in record.service_ports for port in service["host_ports"]]


def _ports_label(image: Image, mapping: Mapping[int, int]) -> str:
    """The service-ports label with container ports replaced by their host ports."""
    entries = []
    for service in image.service_ports:
        ports = [mapping[p] for p in service.ports]
        text = str(ports[0]) if len(ports) == 1 else "[" + ",".join(map(str, ports)) + "]"
        entries.append(f"{service.name}:{service.protocol}:{text}")
    return ",".join(entries)


class AgentService:
    """The agent; see the module docstring.

    Beyond *config*: *event_bus* (running); *plugins* already initialized
    (default: :func:`~bai.agent.plugins.load_plugins` of the config);
    *catalog* (default: the config's ``image-catalog``, or the built-in
    one); *rpc_listen_addr* overriding the config's; *backend* (default: a
    :class:`LocalBackend` from the config).  The remaining arguments are
    tunables the config file does not carry yet: the stats interval, the
    start deadline of a kernel, the time a bootstrap script may take on top
    of it, the SIGTERM grace of destroy, the default pids limit, the cgroup
    parent, whether to use bwrap, and the upload and download size limits.
    (The manager's ``kernel-creation-timeout`` should exceed the start
    deadline plus the bootstrap time, so that the agent's reason wins.)
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        event_bus: EventBus,
        plugins: Mapping[str, ComputePlugin] | None = None,
        catalog: ImageCatalog | None = None,
        rpc_listen_addr: str | None = None,
        backend: KernelBackend | None = None,
        stats_interval: float = 5.0,
        start_timeout: float = 30.0,
        bootstrap_timeout: float = DEFAULT_BOOTSTRAP_TIMEOUT,
        destroy_grace: float = 2.0,
        pids_max: int = 4096,
        cgroup_parent: str | None = None,
        use_bwrap: bool | None = None,
        runner_python: str = sys.executable,
        max_upload_size: int = 8 * 1024 * 1024,
        max_download_size: int = 12 * 1024 * 1024,
    ) -> None:
        self.config = config
        self.agent_id = config.agent.id
        self._bus = event_bus
        self._given_plugins = plugins
        self.plugins: dict[str, ComputePlugin] = dict(plugins or {})
        self._catalog = catalog
        self._listen = rpc_listen_addr or str(config.agent.rpc_listen_addr)
        self._var = config.agent.var_base_path.resolve()
        self._registry = KernelRegistry(self._var / "kernels")
        if backend is None and config.agent.backend != "local":
            raise BackendError(f"the {config.agent.backend} backend is not available in bai yet")
        self.backend = backend or LocalBackend(
            agent_id=self.agent_id,
            scratch_root=config.container.scratch_root,
            ipc_base=config.agent.ipc_base_path,
            log_dir=self._var / "logs",
            runner_python=runner_python,
            cgroup_parent=cgroup_parent,
            use_bwrap=use_bwrap,
            kernel_uid=config.container.kernel_uid,
            kernel_gid=config.container.kernel_gid,
            scratch_type=config.container.scratch_type,
            scratch_size=int(config.container.scratch_size),
            network=config.container.kernel_network,
        )
        self.stats_interval = stats_interval
        self.start_timeout = start_timeout
        self.bootstrap_timeout = bootstrap_timeout
        self.destroy_grace = destroy_grace
        self.pids_max = pids_max
        self.max_upload_size = max_upload_size
        self.max_download_size = max_download_size
        low, high = config.container.port_range
        self.kernel_host = config.container.advertised_host or config.container.bind_host
        self._ports = PortPool(low, high, config.container.bind_host)
        self.allocator = ResourceAllocator({})
        self.catalog = catalog or ImageCatalog([])
        self.kernels: dict[str, AgentKernel] = {}
        self._terminated: OrderedDict[str, AgentKernel] = OrderedDict()
        self._outbox: deque[AgentKernelTerminated] = deque()
        self._outbox_filled = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.rpc_urls: list[str] = []
        self.architecture = host_architecture()

    @property
    def advertised_addr(self) -> str:
        """The RPC address the agent announces in heartbeats."""
        advertised = self.config.agent.rpc_advertise_addr
        if advertised:
            return str(advertised)
        return self.rpc_urls[0] if self.rpc_urls else self._listen

    # ------------------------------------------------------------------ service

    async def serve(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the agent until cancelled; reports the RPC URLs once it answers calls."""
        loaded_plugins = False
        if self._given_plugins is None:
            self.plugins = await load_plugins(self.config)
            loaded_plugins = True
        try:
            self.allocator = create_allocator(self.plugins)
            if self._catalog is None:
                self.catalog = await trio.to_thread.run_sync(
                    load_catalog, self.config.agent.image_catalog
                )
            await self.backend.init()
            await trio.to_thread.run_sync(self._prepare_state)
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    # Before the recovery, which reports the kernels that did not survive.
                    nursery.start_soon(self._deliver_outbox)
                    await self._recover()
                    server = RPCServer(self._listen, self._handlers())
                    self.rpc_urls = await nursery.start(server.serve)
                    log.info(
                        "agent %s serves RPC at %s (%s)",
                        self.agent_id,
                        ", ".join(self.rpc_urls),
                        self.backend.describe(),
                    )
                    await self._publish(AgentStarted(agent_id=AgentId(self.agent_id)))
                    nursery.start_soon(self._heartbeats)
                    nursery.start_soon(self._collect_stats)
                    task_status.started(self.rpc_urls)
            finally:
                try:
                    with trio.CancelScope(shield=True):
                        await self._publish(
                            AgentTerminated(agent_id=AgentId(self.agent_id), reason="shutdown")
                        )
                finally:
                    # The backend's host state goes whatever became of the goodbye.
                    with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                        await self.backend.shutdown()
        finally:
            if loaded_plugins:
                with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                    for plugin in self.plugins.values():
                        try:
                            await plugin.cleanup()
                        except Exception:
                            log.exception("compute plugin %s failed to clean up", plugin.name)

    async def _publish(self, event: Event) -> bool:
        """Publish *event*, bounded by :data:`PUBLISH_TIMEOUT`; never raises.

        Events are reports: the cleanup that follows one (a kernel's end, the
        agent's shutdown) must happen even when the bus fails.  Returns
        whether the bus took the event.
        """
        with trio.move_on_after(PUBLISH_TIMEOUT) as scope:
            try:
                await self._bus.publish(event)
                return True
            except (EventBusError, trio.ClosedResourceError) as exc:
                log.warning("could not publish %s: %s", event.name, exc)
            except Exception:
                log.exception("publishing %s failed", event.name)
        if scope.cancelled_caught:
            log.warning("publishing %s timed out", event.name)
        return False

    async def _report_end(
        self, kernel_id: str, session_id: str, reason: str, exit_code: int | None = None
    ) -> None:
        """Tell the manager that a kernel is gone (see the module docstring's events).

        A report the bus does not take goes to the outbox: without it the
        manager would keep the kernel's session running and its slots held.
        """
        event = AgentKernelTerminated(
            agent_id=AgentId(self.agent_id),
            kernel_id=KernelId(uuid.UUID(kernel_id)),
            session_id=SessionId(uuid.UUID(session_id)),
            reason=reason,
            exit_code=exit_code,
        )
        if not await self._publish(event):
            if len(self._outbox) >= OUTBOX_LIMIT:
                dropped = self._outbox.popleft()
                log.warning("outbox full: dropped the end report of kernel %s", dropped.kernel_id)
            self._outbox.append(event)
            self._outbox_filled.set()

    async def _deliver_outbox(self) -> None:
        """Send the outbox's reports, oldest first, until the bus takes each of them."""
        delay = 0.0
        while True:
            await self._outbox_filled.wait()
            while self._outbox:
                event = self._outbox[0]
                if await self._publish(event):
                    # Unless a full outbox dropped it while it was being published.
                    if self._outbox and self._outbox[0] is event:
                        self._outbox.popleft()
                    delay = 0.0
                else:
                    delay = min(max(2 * delay, 0.1), OUTBOX_RETRY_MAX)
                    await trio.sleep(delay)
            # No checkpoint since the outbox was seen empty: nothing was added unseen.
            self._outbox_filled = trio.Event()

    def _handlers(self) -> dict[str, Handler]:
        return {
            "create_kernels": self.rpc_create_kernels,
            "destroy_kernel": self.rpc_destroy_kernel,
            "restart_kernel": self.rpc_restart_kernel,
            "execute": self.rpc_execute,
            "interrupt_kernel": self.rpc_interrupt_kernel,
            "get_completions": self.rpc_get_completions,
            "get_logs": self.rpc_get_logs,
            "upload_file": self.rpc_upload_file,
            "upload_files": self.rpc_upload_files,
            "download_file": self.rpc_download_file,
            "list_files": self.rpc_list_files,
            "start_service": self.rpc_start_service,
            "shutdown_service": self.rpc_shutdown_service,
            "get_apps": self.rpc_get_apps,
            "ping": self.rpc_ping,
            "gather_hwinfo": self.rpc_gather_hwinfo,
            "sync_kernel_registry": self.rpc_sync_kernel_registry,
            "get_stats": self.rpc_get_stats,
            "describe_kernels": self.rpc_describe_kernels,
        }

    # ------------------------------------------------------------- heartbeats

    def agent_info(self) -> dict[str, Any]:
        """The ``agent_info`` of heartbeats."""
        return {
            "id": self.agent_id,
            "addr": self.advertised_addr,
            "public_host": self.kernel_host,
            "region": self.config.agent.region,
            "scaling_group": self.config.agent.scaling_group,
            "architecture": self.architecture,
            "version": bai.__version__,
            "available_slots": self.allocator.capacity().to_json(),
            "occupied_slots": self.allocator.allocated().to_json(),
            "slot_types": {k: v.value for k, v in self.allocator.slot_types().items()},
            "compute_plugins": {key: plugin.info() for key, plugin in self.plugins.items()},
            "images": [image.to_json() for image in self.catalog.images],
            "backend": self.backend.describe(),
            "kernels": len(self.kernels),
            "kernel_statuses": {kid: kernel.status.value for kid, kernel in self.kernels.items()},
        }

    async def _heartbeats(self) -> None:
        interval = float(self.config.agent.heartbeat_interval)
        while True:
            await self._publish(
                AgentHeartbeat(agent_id=AgentId(self.agent_id), agent_info=self.agent_info())
            )
            await trio.sleep(interval)

    # ------------------------------------------------------------------ stats

    async def _collect_stats(self) -> None:
        while True:
            await trio.sleep(self.stats_interval)
            running = [k for k in self.kernels.values() if k.status is KernelStatus.RUNNING]
            if not running:
                continue
            usage = await self.backend.usage([k.record for k in running])
            for kernel in running:
                sample = usage.get(kernel.kernel_id)
                if sample is not None:
                    kernel.update_stats(sample)
            await trio.to_thread.run_sync(_trim_logs, [k.record.log_path for k in running])

    # --------------------------------------------------------------- recovery

    def _prepare_state(self) -> None:
        # Kernel records hold each kernel's environment, kernel logs (the
        # backend's, below) its output: none of it is for other users.
        private_dir(self._var)
        self._registry.prepare()

    async def _recover(self) -> None:
        """Find the kernels of a previous run of this agent again (see the module docstring)."""
        records = await trio.to_thread.run_sync(self._registry.load)
        async with trio.open_nursery() as nursery:
            for record in records:
                nursery.start_soon(self._recover_one, record)
        swept = await self.backend.sweep(set(self.kernels))
        if swept:
            log.warning("removed leftovers of unknown kernels: %s", ", ".join(swept))

    async def _recover_one(self, record: KernelRecord) -> None:
        process = None
        if record.status == KernelStatus.RUNNING.value:
            process = await self.backend.adopt(record)
        kernel = AgentKernel(record, KernelStatus(record.status))
        self._set_limits(kernel)
        if process is not None:
            try:
                self.allocator.apply(record.kernel_id, _allocations(record.allocations))
            except AllocationError as exc:
                log.error("kernel %s: its allocation no longer fits: %s", record.kernel_id, exc)
                kernel.stop_reason = "agent-restart-mismatch"
                process = None
        if process is None:
            reason = kernel.stop_reason or (
                "self-terminated"
                if record.status == KernelStatus.RUNNING.value
                else "failed-to-start"
            )
            await self._end_orphan(kernel, reason)
            return
        self._ports.claim(_host_ports(record))
        self.kernels[record.kernel_id] = kernel
        assert self._nursery is not None
        try:
            await self._nursery.start(self._supervise, kernel, None, process)
        except KernelStartFailed as exc:
            log.warning("kernel %s could not be re-adopted: %s", record.kernel_id, exc)
        else:
            log.info("re-adopted kernel %s (pid %s)", record.kernel_id, record.pid)

    async def _end_orphan(self, kernel: AgentKernel, reason: str) -> None:
        """Clean up after a registry entry whose kernel did not survive the agent."""
        record = kernel.record
        with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
            await self.backend.terminate(record, None, grace=0)
            await self.backend.cleanup(record)
            await trio.to_thread.run_sync(self._registry.remove, record.kernel_id)
        kernel.status = KernelStatus.TERMINATED
        await self._report_end(record.kernel_id, record.session_id, reason)
        log.info("kernel %s did not survive the agent restart (%s)", record.kernel_id, reason)

    # ------------------------------------------------------- kernel lifecycle

    def _kernel(self, kernel_id: Any) -> AgentKernel:
        kernel = self.kernels.get(str(kernel_id))
        if kernel is None:
            raise KernelNotFound(f"no kernel {kernel_id} on agent {self.agent_id}")
        return kernel

    def _running(self, kernel_id: Any) -> AgentKernel:
        kernel = self._kernel(kernel_id)
        if kernel.status is not KernelStatus.RUNNING or kernel.link is None:
            raise KernelNotRunning(f"kernel {kernel_id} is {kernel.status.value}, not RUNNING")
        return kernel

    def _set_limits(self, kernel: AgentKernel) -> None:
        slots = ResourceSlot.from_json(kernel.record.occupied_slots)
        kernel.cpu_limit, kernel.memory_limit = _cpu_and_memory(slots)

    async def _save(self, record: KernelRecord) -> None:
        data = self._registry.encode(record)
        await trio.to_thread.run_sync(self._registry.write, record.kernel_id, data)

    def _check_stop(self, kernel: AgentKernel) -> None:
        if kernel.stop_reason is not None:
            raise KernelStartFailed(
                kernel.stop_reason, f"the kernel was stopped ({kernel.stop_reason})"
            )

    async def _supervise(
        self,
        kernel: AgentKernel,
        launch: KernelLaunch | None,
        process: KernelProcess | None,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Own one kernel from creation (or re-adoption) to its end; see the module docstring.

        Raises :class:`KernelStartFailed` through ``nursery.start`` when the
        kernel never became RUNNING; either way the kernel is cleaned up and
        reported terminated before this returns.
        """
        failure: KernelStartFailed | None = None
        started = False
        try:
            async with trio.open_nursery() as tasks:
                try:
                    await self._forward_ports(kernel, tasks)
                    if process is None:
                        assert launch is not None
                        process = await self._create(kernel, launch, tasks)
                    else:
                        await self._readopt(kernel, process, tasks)
                    task_status.started()
                    started = True
                    while True:
                        kernel.exit_code = await process.wait()
                        if not kernel.restarting or kernel.stop_reason is not None:
                            break
                        with trio.move_on_after(self.destroy_grace + CLEANUP_TIMEOUT):
                            await kernel.respawn.wait()
                        process = await self._respawn(kernel, tasks)
                    if kernel.link is not None:
                        # Let the reader take what the runner sent before it ended.
                        with trio.move_on_after(1.0):
                            await kernel.link.lost.wait()
                except KernelStartFailed as exc:
                    failure = exc
                tasks.cancel_scope.cancel()
        finally:
            cancelled = trio.current_effective_deadline() == -math.inf
            if failure is not None:
                # A kernel stopped while starting ends for the stop's reason.
                reason: str | None = kernel.stop_reason or failure.reason
            elif cancelled:
                reason = kernel.stop_reason or "agent-termination"
            else:
                reason = kernel.stop_reason
            await self._finish(kernel, reason)
        if failure is not None and not started:
            raise failure

    async def _forward_ports(self, kernel: AgentKernel, tasks: trio.Nursery) -> None:
        """Relay the kernel's host ports into its network, when it has one of its own."""
        ports = _host_ports(kernel.record)
        if not ports or not self.backend.isolates_network:
            return
        connect = functools.partial(self.backend.connect_port, kernel.record)
        listeners: list[trio.SocketListener] = []
        try:
            for port in ports:
                held = self._ports.take(port)
                if held is None:
                    listeners += await trio.open_tcp_listeners(
                        port, host=self.config.container.bind_host
                    )
                else:
                    listening = trio.socket.from_stdlib_socket(held)
                    try:
                        held.listen()
                    except OSError:
                        listening.close()
                        raise
                    listeners.append(trio.SocketListener(listening))
        except OSError as exc:
            for listener in listeners:
                await listener.aclose()
            raise KernelStartFailed(
                "failed-to-start", f"cannot listen on the kernel's service ports: {exc}"
            ) from None
        tasks.start_soon(portfwd.forward, listeners, connect)

    async def _readopt(
        self, kernel: AgentKernel, process: KernelProcess, tasks: trio.Nursery
    ) -> None:
        """Reconnect to a kernel that outlived the previous agent, taking over its runs."""
        kernel.process = process
        try:
            status = await self._await_ready(kernel, process, tasks, self.start_timeout)
        except KernelStartFailed as exc:
            raise KernelStartFailed("unresponsive-after-agent-restart", str(exc)) from None
        assert kernel.link is not None
        kernel.link.adopt_runs(status)
        kernel.status = KernelStatus.RUNNING
        kernel.ready.set()

    async def _create(
        self, kernel: AgentKernel, launch: KernelLaunch, tasks: trio.Nursery
    ) -> KernelProcess:
        record = kernel.record
        limit = self._start_limit(launch.bootstrap_script is not None)
        deadline = trio.current_time() + limit
        # The record exists before anything else does, so a crash at any later
        # point leaves nothing unnamed behind.
        await self._save(record)
        with trio.move_on_at(deadline):
            try:
                await self.backend.prepare(record, launch)
            except BackendError as exc:
                raise KernelStartFailed("failed-to-start", str(exc)) from None
            self._check_stop(kernel)
            kernel.status = KernelStatus.CREATING
            record.status = KernelStatus.CREATING.value
            try:
                process = await self.backend.spawn(record)
            except BackendError as exc:
                raise KernelStartFailed("failed-to-start", str(exc)) from None
            kernel.process = process
            await self._save(record)
            self._check_stop(kernel)
            try:
                await self._await_ready(kernel, process, tasks, deadline - trio.current_time())
            except KernelStartFailed:
                # Stopped while it started (its bootstrap script, say): the stop is why.
                self._check_stop(kernel)
                raise
            self._check_stop(kernel)
            kernel.status = KernelStatus.RUNNING
            record.status = KernelStatus.RUNNING.value
            await self._save(record)
            kernel.ready.set()
            log.info("kernel %s started (session %s)", record.kernel_id, record.session_id)
            return process
        excerpt = await self._log_excerpt(kernel)
        raise KernelStartFailed(
            "failed-to-start", f"the kernel did not start within {limit:g} s{excerpt}"
        )

    async def _await_ready(
        self,
        kernel: AgentKernel,
        process: KernelProcess,
        tasks: trio.Nursery,
        timeout: float,  # noqa: ASYNC109 - what is left of the start deadline
    ) -> dict[str, Any]:
        """Dial the runner and wait for its ``status`` answer, unless the process dies first."""
        record = kernel.record
        link = RunnerLink(record.input_addr, record.output_addr)
        kernel.link = link
        died: int | None = None
        status: dict[str, Any] | None = None
        async with trio.open_nursery() as race:

            async def watch() -> None:
                nonlocal died
                died = kernel.exit_code = await process.wait()
                race.cancel_scope.cancel()

            race.start_soon(watch)
            with trio.move_on_after(timeout):
                try:
                    await link.connect(timeout)
                    tasks.start_soon(link.serve)
                    status = await link.request("status", {}, timeout)
                except RunnerLinkError:
                    # The runner is going away: give watch() the time to learn its exit status.
                    await trio.sleep(EXIT_GRACE)
            race.cancel_scope.cancel()
        if status is not None:
            return status
        link.close("the kernel did not start")
        excerpt = await self._log_excerpt(kernel)
        if died is not None or not process.alive():
            code = died if died is not None else kernel.exit_code
            if code == BOOTSTRAP_FAILED_EXIT and record.bootstrap:
                raise KernelStartFailed("bootstrap-failed", f"the bootstrap script failed{excerpt}")
            raise KernelStartFailed(
                "failed-to-start", f"the kernel runner exited with code {code}{excerpt}"
            )
        raise KernelStartFailed(
            "failed-to-start", f"the kernel runner did not answer within {timeout:.1f} s{excerpt}"
        )

    def _start_limit(self, bootstrap: bool) -> float:
        """Seconds a kernel may take to become ready (its bootstrap script included)."""
        return self.start_timeout + (self.bootstrap_timeout if bootstrap else 0.0)

    async def _log_excerpt(self, kernel: AgentKernel) -> str:
        path = kernel.record.log_path
        if not path:
            return ""
        text = await trio.to_thread.run_sync(_tail, path, 2048)
        return f"; its log ends with:\n{text.strip()}" if text.strip() else ""

    async def _respawn(self, kernel: AgentKernel, tasks: trio.Nursery) -> KernelProcess:
        """Start the runner again for restart_kernel (same scratch, cgroup and allocation)."""
        record = kernel.record
        if kernel.link is not None:
            kernel.link.end_runs(-1, "\n[bai: the kernel was restarted]\n")
            kernel.link.close("the kernel was restarted")
        await self.backend.terminate(record, None, grace=0)
        try:
            process = await self.backend.spawn(record)
        except BackendError as exc:
            kernel.stop_reason = "restart-failed"
            raise KernelStartFailed("restart-failed", str(exc)) from None
        kernel.process = process
        await self._save(record)
        try:
            await self._await_ready(kernel, process, tasks, self._start_limit(record.bootstrap))
        except KernelStartFailed as exc:
            kernel.stop_reason = "restart-failed"
            raise KernelStartFailed("restart-failed", str(exc)) from None
        kernel.restarting = False
        kernel.status = KernelStatus.RUNNING
        kernel.ready.set()
        return process

    async def _death_reason(self, kernel: AgentKernel) -> str:
        if kernel.stop_reason is not None:
            return kernel.stop_reason
        if kernel.record.cgroup:
            usage = await self.backend.usage([kernel.record])
            sample = usage.get(kernel.kernel_id)
            if sample is not None and (sample.oom_kills or 0) > kernel.oom_kills:
                return "oom-killed"
        return "self-terminated"

    async def _finish(self, kernel: AgentKernel, reason: str | None) -> None:
        """Release everything of an ended kernel and report it.

        Runs shielded from cancellation.  Cleaning up the host gets
        :data:`CLEANUP_TIMEOUT`; the kernel's slots and ports are freed and
        its end reported whatever became of that cleanup (what a cut-off
        cleanup leaves, registry entry included, goes at the agent's next start).
        """
        record = kernel.record
        if kernel.oom_counter is not None:
            kernel.oom_counter.close()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLEANUP_TIMEOUT) as cleanup:
                reason = await self._clean_up(kernel, reason)
            if cleanup.cancelled_caught:
                log.error(
                    "kernel %s: cleanup did not finish within %g s",
                    record.kernel_id,
                    CLEANUP_TIMEOUT,
                )
            await self._release(kernel, reason or kernel.stop_reason or "unknown")

    async def _clean_up(self, kernel: AgentKernel, reason: str | None) -> str:
        """Stop what is left of *kernel* and remove its host state; the reason it ended."""
        record = kernel.record
        try:
            reason = reason or await self._death_reason(kernel)
        except Exception:
            log.exception("kernel %s: cannot tell why it ended", kernel.kernel_id)
            reason = reason or "unknown"
        kernel.stop_reason = kernel.stop_reason or reason
        kernel.status = KernelStatus.TERMINATING
        if kernel.link is not None:
            code = kernel.exit_code if kernel.exit_code is not None else -1
            kernel.link.end_runs(code, f"\n[bai: the kernel was terminated ({reason})]\n")
            kernel.link.close(f"the kernel was terminated ({reason})")
        try:
            await self.backend.terminate(record, kernel.process, grace=0)
            await self.backend.cleanup(record)
        except Exception:
            log.exception("kernel %s: cleanup failed", kernel.kernel_id)
        try:
            await trio.to_thread.run_sync(self._registry.remove, record.kernel_id)
        except OSError as exc:
            log.error("kernel %s: cannot remove its registry entry: %s", kernel.kernel_id, exc)
        return reason

    async def _release(self, kernel: AgentKernel, reason: str) -> None:
        """Free an ended kernel's slots and ports, remember its result, report its end."""
        record = kernel.record
        self.allocator.free(record.kernel_id)
        self._ports.release(_host_ports(record))
        kernel.status = KernelStatus.TERMINATED
        kernel.result = {
            "kernel_id": record.kernel_id,
            "session_id": record.session_id,
            "reason": reason,
            "exit_code": kernel.exit_code,
            "last_stat": kernel.last_stat,
        }
        if self.kernels.get(record.kernel_id) is kernel:
            del self.kernels[record.kernel_id]
        self._terminated[record.kernel_id] = kernel
        while len(self._terminated) > TERMINATED_KEPT:
            self._terminated.popitem(last=False)
        await self._report_end(record.kernel_id, record.session_id, reason, kernel.exit_code)
        kernel.gone.set()
        log.info(
            "kernel %s terminated (%s, exit code %s)", record.kernel_id, reason, kernel.exit_code
        )

    async def _destroy(self, kernel: AgentKernel, reason: str) -> dict[str, Any]:
        if not kernel.gone.is_set():
            if kernel.stop_reason is None:
                kernel.stop_reason = reason
            kernel.restarting = False
            kernel.status = KernelStatus.TERMINATING
            deadline = trio.current_time() + self.destroy_grace + CLEANUP_TIMEOUT
            # A destroy that began stops the kernel even if its caller goes away;
            # the supervisor then releases it.
            with trio.move_on_at(deadline, shield=True):
                await self.backend.terminate(
                    kernel.record, kernel.process, grace=self.destroy_grace
                )
            with trio.move_on_at(deadline):
                await kernel.gone.wait()
            if not kernel.gone.is_set():
                raise KernelNotRunning(f"kernel {kernel.kernel_id} did not end in time")
        return kernel.result

    # ------------------------------------------------------------ create_kernels

    def _launch(
        self,
        session_id: str,
        config: requests.KernelConfig,
        cluster: requests.ClusterInfo,
        image: Image,
        allocation: Mapping[str, Mapping[str, Mapping[str, Decimal]]],
        occupied: ResourceSlot,
        port_map: Mapping[int, int],
        pids_max: int,
        peers: tuple[str, ...],
    ) -> KernelLaunch:
        cpu, memory = _cpu_and_memory(occupied)
        cores = CPUPlugin.cores(allocation.get("cpu", {}))
        core_count = max(math.ceil(cpu), 1) if cpu is not None else (os.cpu_count() or 1)
        hostname = _hostname(config)
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
        for key, plugin in self.plugins.items():
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
            service_ports_label=_ports_label(image, port_map),
            hostname=hostname,
            peers=peers,
            bootstrap_script=config.bootstrap_script,
            bootstrap_timeout=self.bootstrap_timeout,
        )

    @staticmethod
    def _cluster(req: requests.CreateKernels) -> requests.ClusterInfo:
        if req.cluster is not None:
            return req.cluster
        ordered = sorted(req.kernels, key=lambda k: k.local_rank)
        replicas: dict[str, int] = {}
        for k in ordered:
            replicas[k.cluster_role] = replicas.get(k.cluster_role, 0) + 1
        return requests.ClusterInfo(
            size=len(ordered),
            hosts=[_hostname(k) for k in ordered],
            replicas=replicas,
        )

    async def rpc_create_kernels(self, args: Any) -> list[dict[str, Any]]:
        req = parse(args, requests.CreateKernels)
        ids = [str(k.kernel_id) for k in req.kernels]
        if len(set(ids)) != len(ids):
            raise InvalidRequest("a kernel id appears twice", value=ids, field="kernels")
        for kid in ids:
            if kid in self.kernels:
                raise KernelAlreadyExists(f"kernel {kid} already exists on this agent")
        slot_types = self.allocator.slot_types()
        plans: list[tuple[requests.KernelConfig, Image, ResourceSlot]] = []
        for index, config in enumerate(req.kernels):
            image = self.catalog.resolve(config.image, config.architecture)
            try:
                slots = ResourceSlot.parse(config.resource_slots, slot_types)
            except InvalidValue as exc:
                where = f"kernels[{index}].resource_slots"
                raise InvalidRequest(
                    exc.problem,
                    value=exc.value,
                    field=f"{where}.{exc.field}" if exc.field else where,
                ) from None
            plans.append((config, image, slots))
        cluster = self._cluster(req)
        peers = tuple(_hostname(k) for k in req.kernels)
        session_id = str(req.session_id)
        # Allocate everything first, all or nothing, so a request that cannot
        # be placed changes nothing.
        allocated: list[str] = []
        taken: list[int] = []
        kernels: list[tuple[AgentKernel, KernelLaunch]] = []
        try:
            for config, image, slots in plans:
                kid = str(config.kernel_id)
                allocation = self.allocator.allocate(kid, slots)
                allocated.append(kid)
                occupied = _occupied(allocation)
                wanted = [p for service in image.service_ports for p in service.ports]
                host_ports = (
                    self._ports.allocate(len(wanted), hold=self.backend.isolates_network)
                    if wanted
                    else []
                )
                taken += host_ports
                port_map = dict(zip(wanted, host_ports, strict=True))
                launch = self._launch(
                    session_id,
                    config,
                    cluster,
                    image,
                    allocation,
                    occupied,
                    port_map,
                    config.resource_opts.pids_max or self.pids_max,
                    peers,
                )
                record = KernelRecord(
                    kernel_id=kid,
                    session_id=session_id,
                    status=KernelStatus.PREPARING.value,
                    created_at=time.time(),
                    image=image.name,
                    architecture=image.architecture,
                    runtime_type=image.runtime_type,
                    cluster_role=config.cluster_role,
                    cluster_idx=config.cluster_idx,
                    cluster_hostname=launch.hostname,
                    local_rank=config.local_rank,
                    occupied_slots=occupied.to_json(),
                    allocations={
                        key: allocation_to_json(part) for key, part in allocation.items() if part
                    },
                    resource_opts={"pids_max": launch.limits.pids},
                    service_ports=[
                        {
                            "name": service.name,
                            "protocol": service.protocol,
                            "container_ports": [port_map[p] for p in service.ports],
                            "host_ports": [port_map[p] for p in service.ports],
                        }
                        for service in image.service_ports
                    ],
                )
                kernel = AgentKernel(record, KernelStatus.PREPARING)
                self._set_limits(kernel)
                kernels.append((kernel, launch))
        except BaseException:
            for kid in allocated:
                self.allocator.free(kid)
            self._ports.release(taken)
            raise
        for kernel, _ in kernels:
            self.kernels[kernel.kernel_id] = kernel
        failures: dict[str, str] = {}
        reasons: dict[str, str] = {}

        async def start(kernel: AgentKernel, launch: KernelLaunch) -> None:
            assert self._nursery is not None
            try:
                await self._nursery.start(self._supervise, kernel, launch, None)
            except KernelStartFailed as exc:
                failures[kernel.kernel_id] = f"{exc.reason}: {exc}"
                reasons[kernel.kernel_id] = exc.reason

        async with trio.open_nursery() as nursery:
            for kernel, launch in kernels:
                nursery.start_soon(start, kernel, launch)
        if failures:
            async with trio.open_nursery() as nursery:
                for kernel, _ in kernels:
                    if kernel.kernel_id not in failures:
                        nursery.start_soon(self._destroy, kernel, "cluster-peer-failed")
            first = next(iter(failures.items()))
            raise KernelCreationFailed(
                f"{len(failures)} of {len(kernels)} kernels failed to start "
                f"(kernel {first[0]}: {first[1]})",
                failures,
                reasons,
            )
        return [self._describe(kernel) for kernel, _ in kernels]

    def _describe(self, kernel: AgentKernel) -> dict[str, Any]:
        record = kernel.record
        return {
            "kernel_id": record.kernel_id,
            "session_id": record.session_id,
            "status": kernel.status.value,
            "agent_id": self.agent_id,
            "agent_addr": self.advertised_addr,
            "kernel_host": self.kernel_host,
            "image": record.image,
            "architecture": record.architecture,
            "repl_in": record.input_addr,
            "repl_out": record.output_addr,
            "service_ports": record.service_ports,
            "occupied_slots": record.occupied_slots,
            "attached_devices": record.allocations,
            "resource_opts": record.resource_opts,
            "pid": record.pid,
            "scratch_dir": record.scratch_dir,
            "isolation": record.isolation,
        }

    # ------------------------------------------------------- other lifecycle RPC

    async def rpc_destroy_kernel(self, args: Any) -> dict[str, Any]:
        req = parse(args, requests.DestroyKernel)
        kid = str(req.kernel_id)
        kernel = self.kernels.get(kid) or self._terminated.get(kid)
        if kernel is None:
            raise KernelNotFound(f"no kernel {kid} on agent {self.agent_id}")
        return await self._destroy(kernel, req.reason)

    async def rpc_restart_kernel(self, args: Any) -> dict[str, Any]:
        req = parse(args, requests.KernelArgs)
        kernel = self._running(req.kernel_id)
        kernel.restarting = True
        kernel.status = KernelStatus.RESTARTING
        kernel.ready = trio.Event()
        kernel.respawn = trio.Event()
        # The supervisor spawns the new runner only once the old one is wholly gone.
        await self.backend.terminate(kernel.record, kernel.process, grace=self.destroy_grace)
        kernel.respawn.set()
        with trio.move_on_after(self._start_limit(kernel.record.bootstrap) + CLEANUP_TIMEOUT):
            async with trio.open_nursery() as race:

                async def until(event: trio.Event) -> None:
                    await event.wait()
                    race.cancel_scope.cancel()

                race.start_soon(until, kernel.ready)
                race.start_soon(until, kernel.gone)
        if kernel.ready.is_set() and not kernel.gone.is_set():
            return self._describe(kernel)
        reason = kernel.stop_reason or "restart-timeout"
        raise KernelNotRunning(f"kernel {kernel.kernel_id} did not come back ({reason})")

    async def rpc_sync_kernel_registry(self, args: Any) -> dict[str, list[str]]:
        req = parse(args, requests.SyncKernelRegistry)
        listed = {str(kid): str(sid) for kid, sid in req.kernels}
        missing: list[str] = []
        for kid, sid in listed.items():
            if kid in self.kernels:
                continue
            missing.append(kid)
            ended = self._terminated.get(kid)
            await self._report_end(
                kid,
                sid,
                ended.result.get("reason", "already-terminated") if ended else "already-terminated",
                ended.exit_code if ended else None,
            )
        unknown = [
            kid
            for kid, k in self.kernels.items()
            if kid not in listed and k.status is KernelStatus.RUNNING
        ]
        terminated: list[str] = []
        if req.terminate_unknown and unknown:
            async with trio.open_nursery() as nursery:
                for kid in unknown:
                    nursery.start_soon(self._destroy, self.kernels[kid], "not-found-in-manager")
            terminated = list(unknown)
        return {"missing": missing, "unknown": unknown, "terminated": terminated}

    # ---------------------------------------------------------------- execution

    async def rpc_execute(self, args: Any) -> dict[str, Any]:
        req = parse(args, requests.Execute)
        kernel = self._running(req.kernel_id)
        link = kernel.link
        assert link is not None
        flush = req.flush_timeout or DEFAULT_FLUSH_TIMEOUT
        run_id = req.run_id
        if req.mode == "query":
            run = await link.start_run(run_id, [("code", {"run_id": run_id, "code": req.code})])
        elif req.mode == "batch":
            opts = parse(req.options or {}, requests.BatchOptions)
            run = await link.start_run(
                run_id,
                [
                    (op, {"run_id": run_id, "command": command})
                    for op, command in (
                        ("clean", opts.clean),
                        ("build", opts.build),
                        ("exec", opts.exec),
                    )
                ],
            )
        else:
            # A run already collected to its end answers its exit code again: the
            # manager that collected it may have died before it read the answer.
            known = link.run(run_id) or link.finished_run(run_id)
            if known is None:
                raise RunError(f"no run {run_id!r} in progress in this kernel")
            run = known
            if req.mode == "input":
                if not run.waiting_input:
                    raise RunError(f"run {run_id!r} is not waiting for input")
                run.step = None
                await link.send("input", {"run_id": run_id, "text": req.code})
            elif run.waiting_input:
                # Nothing can happen until the input arrives: say so again at once.
                return {
                    "runId": run_id,
                    "status": "waiting-input",
                    "exitCode": None,
                    "console": [],
                    "options": run.input_options,
                }
            else:
                await link.send("continue", {"run_id": run_id})
        result = await link.collect(run, flush)
        if result["status"] == "finished":
            self._explain_oom(kernel, result)
        return result

    def _explain_oom(self, kernel: AgentKernel, result: dict[str, Any]) -> None:
        """Tell a finished run about OOM kills in its kernel no earlier run was told about.

        Every run is checked, not only those whose own process was killed: the
        OOM killer takes user code first (see :mod:`bai.kernel.runtimes`), often
        a child process while the run itself carries on and ends well.
        """
        if kernel.oom_counter is None:
            kernel.oom_counter = OomKillCounter(kernel.record.cgroup)
        kills = kernel.oom_counter.read()
        if kills is None or kills <= kernel.oom_kills:
            return
        new = kills - kernel.oom_kills
        kernel.oom_kills = kills
        ended = "a process" if new == 1 else f"{new} processes"
        limit = f" of {kernel.memory_limit} bytes" if kernel.memory_limit else ""
        note = (
            f"[bai: out of memory: the kernel reached its memory limit{limit};"
            f" the OOM killer ended {ended}]\n"
        )
        console = result["console"]
        if console and console[-1][0] == "stderr":
            console[-1][1] += note
        else:
            console.append(["stderr", note])

    async def rpc_interrupt_kernel(self, args: Any) -> None:
        req = parse(args, requests.KernelArgs)
        link = self._running(req.kernel_id).link
        assert link is not None
        await link.send("interrupt", {"run_id": None})

    async def rpc_get_completions(self, args: Any) -> list[str]:
        req = parse(args, requests.GetCompletions)
        link = self._running(req.kernel_id).link
        assert link is not None
        options = {
            k: v
            for k, v in {
                "line": req.options.line if req.options else None,
                "post": req.options.post if req.options else None,
                "row": req.options.row if req.options else None,
                "col": req.options.col if req.options else None,
            }.items()
            if v is not None
        }
        reply = await link.request("complete", {"code": req.code, "options": options}, 10.0)
        matches = reply.get("matches", [])
        return [m for m in matches if isinstance(m, str)]

    async def rpc_get_logs(self, args: Any) -> dict[str, str]:
        req = parse(args, requests.KernelArgs)
        kernel = self._kernel(req.kernel_id)
        text = ""
        if kernel.record.log_path:
            text = await trio.to_thread.run_sync(_tail, kernel.record.log_path, LOG_TAIL_BYTES)
        if kernel.link is not None and kernel.link.log_tail:
            text += kernel.link.log_tail
        return {"logs": text}

    # -------------------------------------------------------------------- files

    async def _file_op(self, kernel: AgentKernel, operation: Callable[[], T]) -> T:
        """Run the blocking file *operation* on *kernel*'s scratch, within FILE_OP_TIMEOUT.

        It runs on the kernel's own limiter, not the thread pool every other
        kernel and the agent itself share.  A thread still busy at the deadline
        is abandoned; it keeps its limiter slot until it ends.
        """
        with trio.move_on_after(FILE_OP_TIMEOUT):
            return await trio.to_thread.run_sync(
                operation, limiter=kernel.file_ops, abandon_on_cancel=True
            )
        raise files.FileOperationTimeout(
            f"the file operation did not finish within {FILE_OP_TIMEOUT:g} s"
        )

    async def _upload(
        self, kernel_id: uuid.UUID, items: list[tuple[str, bytes]]
    ) -> list[dict[str, Any]]:
        kernel = self._kernel(kernel_id)
        scratch = self.backend.scratch_dir(kernel.record)
        owner = self.backend.kernel_owner
        # Bad paths are refused without taking one of the kernel's threads.
        files.split_upload_paths([path for path, _ in items])
        return await self._file_op(
            kernel,
            lambda: files.write_files(
                scratch,
                items,
                max_size=self.max_upload_size,
                owner=owner,
                # An upload abandoned at its deadline must not land after the error went out.
                before_commit=trio.from_thread.check_cancelled,
            ),
        )

    async def rpc_upload_file(self, args: Any) -> dict[str, Any]:
        req = parse(args, requests.UploadFile)
        (written,) = await self._upload(req.kernel_id, [(req.path, req.data)])
        return written

    async def rpc_upload_files(self, args: Any) -> list[dict[str, Any]]:
        req = parse(args, requests.UploadFiles)
        return await self._upload(req.kernel_id, [(item.path, item.data) for item in req.files])

    async def rpc_download_file(self, args: Any) -> bytes:
        req = parse(args, requests.FilePath)
        kernel = self._kernel(req.kernel_id)
        scratch = self.backend.scratch_dir(kernel.record)
        files.split_path(req.path)
        return await self._file_op(
            kernel, lambda: files.download(scratch, req.path, max_size=self.max_download_size)
        )

    async def rpc_list_files(self, args: Any) -> dict[str, Any]:
        req = parse(args, requests.ListFiles)
        kernel = self._kernel(req.kernel_id)
        scratch = self.backend.scratch_dir(kernel.record)
        files.split_path(req.path, allow_root=True)
        return await self._file_op(kernel, lambda: files.list_files(scratch, req.path))

    # ----------------------------------------------------------------- services

    async def rpc_start_service(self, args: Any) -> dict[str, Any]:
        req = parse(args, requests.StartService)
        link = self._running(req.kernel_id).link
        assert link is not None
        timeout = req.options.timeout or 30.0
        reply = await link.request(
            "start-service",
            {"name": req.service, "envs": req.options.envs, "timeout": timeout},
            timeout + 10.0,
        )
        return {
            "status": reply.get("status"),
            "error": reply.get("error"),
            "ports": reply.get("ports", []),
        }

    async def rpc_shutdown_service(self, args: Any) -> dict[str, Any]:
        req = parse(args, requests.ShutdownService)
        link = self._running(req.kernel_id).link
        assert link is not None
        reply = await link.request("shutdown-service", {"name": req.service}, 30.0)
        return {"status": reply.get("status")}

    async def rpc_get_apps(self, args: Any) -> list[dict[str, Any]]:
        req = parse(args, requests.KernelArgs)
        link = self._running(req.kernel_id).link
        assert link is not None
        reply = await link.request("get-apps", {}, 10.0)
        apps = reply.get("apps", [])
        return [app for app in apps if isinstance(app, dict)]

    # -------------------------------------------------------------------- misc

    async def rpc_ping(self, args: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return args

    async def rpc_gather_hwinfo(self, args: Any) -> dict[str, Any]:
        parse(args, requests.NoArgs)
        await trio.lowlevel.checkpoint()
        return {
            key: {
                "status": "healthy" if plugin.devices() else "unavailable",
                "status_info": "" if plugin.devices() else "no devices found",
                "metadata": plugin.info(),
            }
            for key, plugin in self.plugins.items()
        }

    async def rpc_get_stats(self, args: Any) -> dict[str, Any]:
        req = parse(args, requests.GetStats)
        await trio.lowlevel.checkpoint()
        wanted = (
            [str(k) for k in req.kernel_ids] if req.kernel_ids is not None else list(self.kernels)
        )
        return {kid: self.kernels[kid].last_stat for kid in wanted if kid in self.kernels}

    async def rpc_describe_kernels(self, args: Any) -> list[dict[str, Any]]:
        req = parse(args, requests.DescribeKernels)
        await trio.lowlevel.checkpoint()
        found = (self.kernels.get(str(kid)) for kid in req.kernel_ids)
        return [
            self._describe(kernel)
            for kernel in found
            if kernel is not None and kernel.status is KernelStatus.RUNNING
        ]


def _occupied(allocation: Mapping[str, Mapping[str, Mapping[str, Decimal]]]) -> ResourceSlot:
    return sum((allocation_total(part) for part in allocation.values()), ResourceSlot())


def _cpu_and_memory(slots: ResourceSlot) -> tuple[Decimal | None, int | None]:
    """The cores and bytes *slots* hold, each None when it holds none (no limit)."""
    cpu = slots.get("cpu", Decimal(0))
    mem = slots.get("mem", Decimal(0))
    return (cpu if cpu > 0 else None, int(mem) if mem > 0 else None)


def _allocations(data: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Decimal]]]:
    return {key: allocation_from_json(part) for key, part in data.items()}


def _tail(path: str, size: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            f.seek(max(end - size, 0))
            data = f.read(size)
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


def _trim_logs(paths: Sequence[str]) -> None:
    """Cut kernel logs larger than LOG_MAX_BYTES back to their tail (runners append to them)."""
    for path in paths:
        try:
            if not path or os.path.getsize(path) <= LOG_MAX_BYTES:
                continue
            tail = _tail(path, LOG_TAIL_BYTES).encode()
            with open(path, "r+b") as f:
                f.truncate(0)
                f.write(tail)
        except OSError:
            continue
