"""``bai agent``: the agent service -- wiring, events, heartbeats, start-up and shutdown.

:class:`AgentService` is one Trio service (``await nursery.start(agent.serve)``
reports the RPC URLs it listens on).  It loads the compute plugins and the
image catalog, prepares the backend (the local backend by default) and the
kernel store on disk, then runs, in one nursery: the
:class:`~bai.agent.supervisor.KernelSupervisor` that owns every kernel, the
RPC server answering the manager through :class:`~bai.agent.rpc_handlers.AgentRPC`
(the methods and their contract are in :mod:`bai.common.agent_api`), the
heartbeats, the stats sampling and the outbox of kernel-end reports.

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

* Events are reports: publishing one is bounded
  (:data:`~bai.common.events.publish.PUBLISH_TIMEOUT`) and never raises, so the
  cleanup that follows it always happens.
* Cancelling :meth:`AgentService.serve` kills every kernel's processes and
  removes their cgroups and directories before it returns, even when the
  event bus fails while it says goodbye.
* The kernels themselves get the supervisor's guarantees (deadlines, prompt
  end reports, slots always freed, re-adoption after a ``kill -9``; see
  :mod:`bai.agent.supervisor`), their files those of :mod:`bai.agent.kernel_ops`.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any, Final, cast

import hypercorn.trio
import trio

import bai
from bai.agent import kernel_logs
from bai.agent.alloc import ResourceAllocator
from bai.agent.backends.base import BackendError, KernelBackend
from bai.agent.backends.local import LocalBackend
from bai.agent.images import ImageCatalog, host_architecture, load_catalog
from bai.agent.kernel import AgentKernel
from bai.agent.kernel_store import KernelStore
from bai.agent.metrics import agent_families
from bai.agent.plugins import ComputePlugin, create_allocator, load_plugins
from bai.agent.ports import PortPool
from bai.agent.rpc_handlers import AgentRPC
from bai.agent.supervisor import CLEANUP_TIMEOUT, KernelSupervisor
from bai.common.agent_api import KernelDescription, ServicePortInfo
from bai.common.config import AgentConfig
from bai.common.daemon import private_dir
from bai.common.events import (
    AgentHeartbeat,
    AgentKernelTerminated,
    AgentStarted,
    AgentStatsReported,
    AgentTerminated,
    Event,
    EventBus,
    publish_event,
)
from bai.common.hypercorn_setup import base_url, hypercorn_config
from bai.common.metrics import MetricsApp, exposition, snapshot
from bai.common.rpc import RPCServer
from bai.common.types import AgentId, KernelId, KernelStatus, SessionId
from bai.kernel.protocol import DEFAULT_BOOTSTRAP_TIMEOUT

log = logging.getLogger(__name__)

#: Kernel-end reports kept for another try while the bus fails; past this the
#: oldest goes (the manager's heartbeat check still ends its kernel).
OUTBOX_LIMIT: Final = 10_000
#: Longest wait between two tries of delivering the outbox.
OUTBOX_RETRY_MAX: Final = 2.0


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
        self._store = KernelStore(self._var / "kernels")
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
        self.max_upload_size = max_upload_size
        self.max_download_size = max_download_size
        low, high = config.container.port_range
        self.kernel_host = config.container.advertised_host or config.container.bind_host
        self.supervisor = KernelSupervisor(
            agent_id=self.agent_id,
            backend=self.backend,
            store=self._store,
            ports=PortPool(low, high, config.container.bind_host),
            bind_host=config.container.bind_host,
            report_end=self._report_end,
            start_timeout=start_timeout,
            bootstrap_timeout=bootstrap_timeout,
            destroy_grace=destroy_grace,
            pids_max=pids_max,
        )
        self.catalog = catalog or ImageCatalog([])
        self._outbox: deque[AgentKernelTerminated] = deque()
        self._outbox_filled = trio.Event()
        self.rpc_urls: list[str] = []
        #: Where `GET /metrics` answers, once served (`[agent] metrics-addr`).
        self.metrics_url: str | None = None
        self.architecture = host_architecture()

    @property
    def kernels(self) -> dict[str, AgentKernel]:
        """The kernels the agent has, by id (those not yet ended)."""
        return self.supervisor.kernels

    @property
    def allocator(self) -> ResourceAllocator:
        """The allocations of the agent's kernels, over every compute plugin."""
        return self.supervisor.allocator

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
            allocator = create_allocator(self.plugins)
            if self._catalog is None:
                self.catalog = await trio.to_thread.run_sync(
                    load_catalog, self.config.agent.image_catalog
                )
            await self.backend.init()
            await trio.to_thread.run_sync(self._prepare_state)
            try:
                async with trio.open_nursery() as nursery:
                    # Before the recovery, which reports the kernels that did not survive.
                    nursery.start_soon(self._deliver_outbox)
                    await nursery.start(
                        self.supervisor.serve, allocator, self.catalog, self.plugins
                    )
                    rpc = AgentRPC(
                        self.supervisor,
                        describe=self.describe,
                        max_upload_size=self.max_upload_size,
                        max_download_size=self.max_download_size,
                    )
                    server = RPCServer(self._listen, rpc.handlers())
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
                    if self.config.agent.metrics_addr is not None:
                        self.metrics_url = await nursery.start(self._serve_metrics)
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

    async def _metrics_page(self) -> bytes:
        allocator = self.allocator
        families = agent_families(
            self.kernels.values(), allocator.capacity(), allocator.allocated()
        )
        return exposition(snapshot(families))

    async def _serve_metrics(self, *, task_status: trio.TaskStatus[str]) -> None:
        """``GET /metrics`` on ``[agent] metrics-addr``; started with its URL."""
        hyper = hypercorn_config(
            self.config.agent.metrics_addr,
            ssl_enabled=False,
            certfile=None,
            keyfile=None,
            logger="bai.agent.metrics",
            graceful_timeout=1.0,
        )
        # hypercorn's own types name every ASGI event; the app speaks plain dicts.
        app: Any = MetricsApp(self._metrics_page)

        async def run(*, task_status: trio.TaskStatus[list[str]]) -> None:
            await hypercorn.trio.serve(app, hyper, task_status=task_status, mode="asgi")

        async with trio.open_nursery() as nursery:
            bound: list[str] = await nursery.start(run)
            url = f"{base_url(bound)}/metrics"
            log.info("agent %s serves metrics at %s", self.agent_id, url)
            task_status.started(url)

    def _prepare_state(self) -> None:
        # Kernel records hold each kernel's environment, kernel logs (the
        # backend's, below) its output: none of it is for other users.
        private_dir(self._var)
        self._store.prepare()

    def describe(self, kernel: AgentKernel) -> KernelDescription:
        """One kernel as ``create_kernels`` answers it."""
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
            # The agent made each of them with every key of a ServicePortInfo.
            "service_ports": cast(list[ServicePortInfo], record.service_ports),
            "occupied_slots": record.occupied_slots,
            "attached_devices": record.allocations,
            "resource_opts": record.resource_opts,
            "pid": record.pid,
            "scratch_dir": record.scratch_dir,
            "isolation": record.isolation,
        }

    # ------------------------------------------------------------------- events

    async def _publish(self, event: Event) -> bool:
        """Publish *event* as :func:`~bai.common.events.publish_event` does; never raises.

        Events are reports: the cleanup that follows one (a kernel's end, the
        agent's shutdown) must happen even when the bus fails in a way the
        shared helper lets through.  Returns whether the bus took the event.
        """
        try:
            return await publish_event(self._bus, event)
        except Exception:
            log.exception("publishing %s failed", event.name)
            return False

    async def _report_end(
        self,
        kernel_id: str,
        session_id: str,
        reason: str,
        exit_code: int | None,
        last_stat: dict[str, Any] | None,
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
            last_stat=last_stat,
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

    # --------------------------------------------------------- heartbeats, stats

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
            await self._publish(
                AgentStatsReported(
                    agent_id=AgentId(self.agent_id),
                    kernels={k.kernel_id: k.last_stat for k in running if k.last_stat is not None},
                )
            )
            await trio.to_thread.run_sync(kernel_logs.trim, [k.record.log_path for k in running])
