"""The kernel supervisor: every kernel of the agent, from creation to its end.

:class:`KernelSupervisor` creates kernels (placing them first, all of a
request or none), waits for them to become ready, re-adopts the kernels that
outlived a previous run of the agent, restarts and destroys them, and
reports each kernel's end through the callback the agent service gives it.
Each kernel is owned by one task (:meth:`KernelSupervisor._supervise`) from
its creation or re-adoption to its end; that task alone releases it.

A kernel's status moves PREPARING -> CREATING -> RUNNING (<-> RESTARTING)
-> TERMINATING -> TERMINATED, each change through
:meth:`~bai.agent.kernel.AgentKernel.transition` and so through the
transition table the manager checks.

Guarantees
==========

* Every wait on a kernel has a deadline; a kernel that does not start ends
  ``TERMINATED`` with reason ``failed-to-start`` (``bootstrap-failed`` when
  its bootstrap script failed or ran out of time) and the cause in the error.
* A kernel that ends by itself is reported at once (its task waits on its
  process), with ``oom-killed`` when its cgroup's OOM killer fired.
* A kernel's end always frees its slots and ports, even when cleaning up its
  host state fails or runs out of :data:`CLEANUP_TIMEOUT` (the agent's next
  start removes what such a cleanup left).
* Cancelling :meth:`KernelSupervisor.serve` ends every kernel (reason
  ``agent-termination``): its processes are killed and its cgroups and
  directories removed before it returns.
* After a ``kill -9`` of the agent, the next start re-adopts the kernels that
  survived (allocations, ports and runs included), reports the dead ones
  terminated, and removes cgroups and folders no kernel store entry names.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any, Final

import trio

from bai.agent import kernel_logs, portfwd
from bai.agent.alloc import AllocationError, ResourceAllocator, allocation_from_json
from bai.agent.backends.base import BackendError, KernelBackend, KernelLaunch, KernelProcess
from bai.agent.errors import (
    KernelAlreadyExists,
    KernelCreationFailed,
    KernelNotFound,
    KernelNotRunning,
    KernelStartFailed,
)
from bai.agent.images import Image, ImageCatalog
from bai.agent.kernel import AgentKernel
from bai.agent.kernel_store import KernelRecord, KernelStore
from bai.agent.launch import (
    cluster_of,
    container_ports,
    cpu_and_memory,
    kernel_hostname,
    occupied_slots,
    plan_launch,
    plan_record,
    requested_slots,
)
from bai.agent.plugins import ComputePlugin
from bai.agent.ports import PortPool
from bai.agent.runnerlink import RunnerLink, RunnerLinkError
from bai.common.agent_api import (
    CreateKernels,
    DestroyResult,
    InvalidRequest,
    KernelConfig,
    SyncKernelRegistry,
    SyncReply,
)
from bai.common.slots import ResourceSlot
from bai.common.types import KernelStatus
from bai.kernel.protocol import BOOTSTRAP_FAILED_EXIT

log = logging.getLogger(__name__)

#: Bound on the cleanup of one kernel (kill, wait, remove) at its end.
CLEANUP_TIMEOUT: Final = 30.0
#: How long a runner that dropped its link may take to exit before it counts as hung.
EXIT_GRACE: Final = 2.0
#: Ended kernels whose destroy result is remembered.
TERMINATED_KEPT: Final = 1024

#: ``report_end(kernel_id, session_id, reason, exit_code, last_stat)``: tell the manager a
#: kernel is gone, with its final statistics sample when there is one.
ReportEnd = Callable[[str, str, str, int | None, dict[str, Any] | None], Awaitable[None]]


class KernelSupervisor:
    """The agent's kernels; see the module docstring.

    *report_end* must never raise (the agent's outbox keeps what the bus did
    not take).  The timeouts are those of :class:`~bai.agent.server.AgentService`.
    """

    def __init__(
        self,
        *,
        agent_id: str,
        backend: KernelBackend,
        store: KernelStore,
        ports: PortPool,
        bind_host: str,
        report_end: ReportEnd,
        start_timeout: float,
        bootstrap_timeout: float,
        destroy_grace: float,
        pids_max: int,
    ) -> None:
        self.agent_id = agent_id
        self.backend = backend
        self._store = store
        self._ports = ports
        self._bind_host = bind_host
        self._report_end = report_end
        self.start_timeout = start_timeout
        self.bootstrap_timeout = bootstrap_timeout
        self.destroy_grace = destroy_grace
        self.pids_max = pids_max
        self.allocator = ResourceAllocator({})
        self.catalog = ImageCatalog([])
        self.plugins: Mapping[str, ComputePlugin] = {}
        self.kernels: dict[str, AgentKernel] = {}
        self._terminated: OrderedDict[str, AgentKernel] = OrderedDict()
        self._nursery: trio.Nursery | None = None

    async def serve(
        self,
        allocator: ResourceAllocator,
        catalog: ImageCatalog,
        plugins: Mapping[str, ComputePlugin],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Supervise kernels until cancelled; reports started once the previous run's are back.

        *allocator*, *catalog* and *plugins* are the agent's, ready.
        """
        self.allocator = allocator
        self.catalog = catalog
        self.plugins = plugins
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._recover()
            task_status.started()
            await trio.sleep_forever()

    # --------------------------------------------------------------- lookups

    def kernel(self, kernel_id: uuid.UUID | str) -> AgentKernel:
        """The kernel with that id (raises :class:`KernelNotFound`)."""
        kernel = self.kernels.get(str(kernel_id))
        if kernel is None:
            raise KernelNotFound(f"no kernel {kernel_id} on agent {self.agent_id}")
        return kernel

    def running(self, kernel_id: uuid.UUID | str) -> AgentKernel:
        """The RUNNING kernel with that id (raises :class:`KernelNotRunning` if it is not)."""
        kernel = self.kernel(kernel_id)
        if kernel.status is not KernelStatus.RUNNING or kernel.link is None:
            raise KernelNotRunning(f"kernel {kernel_id} is {kernel.status.value}, not RUNNING")
        return kernel

    # --------------------------------------------------------------- recovery

    async def _recover(self) -> None:
        """Find the kernels of a previous run of this agent again (see the module docstring)."""
        records = await trio.to_thread.run_sync(self._store.load)
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
        """Clean up after a kernel store entry whose kernel did not survive the agent."""
        record = kernel.record
        kernel.transition(KernelStatus.TERMINATING)
        with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
            await self.backend.terminate(record, None, grace=0)
            await self.backend.cleanup(record)
            await trio.to_thread.run_sync(self._store.remove, record.kernel_id)
        kernel.transition(KernelStatus.TERMINATED)
        await self._report_end(record.kernel_id, record.session_id, reason, None, None)
        log.info("kernel %s did not survive the agent restart (%s)", record.kernel_id, reason)

    # ------------------------------------------------------------- create

    async def create_kernels(self, req: CreateKernels) -> list[AgentKernel]:
        """Create the kernels of *req*, all RUNNING or none (see ``create_kernels``)."""
        ids = [str(k.kernel_id) for k in req.kernels]
        if len(set(ids)) != len(ids):
            raise InvalidRequest("a kernel id appears twice", value=ids, field="kernels")
        for kid in ids:
            if kid in self.kernels:
                raise KernelAlreadyExists(f"kernel {kid} already exists on this agent")
        slot_types = self.allocator.slot_types()
        plans: list[tuple[KernelConfig, Image, ResourceSlot]] = []
        for index, config in enumerate(req.kernels):
            image = self.catalog.resolve(config.image, config.architecture)
            plans.append((config, image, requested_slots(index, config, slot_types)))
        cluster = cluster_of(req)
        peers = tuple(kernel_hostname(k) for k in req.kernels)
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
                occupied = occupied_slots(allocation)
                wanted = container_ports(image)
                host_ports = (
                    self._ports.allocate(len(wanted), hold=self.backend.isolates_network)
                    if wanted
                    else []
                )
                taken += host_ports
                port_map = dict(zip(wanted, host_ports, strict=True))
                launch = plan_launch(
                    session_id=session_id,
                    config=config,
                    cluster=cluster,
                    image=image,
                    allocation=allocation,
                    occupied=occupied,
                    port_map=port_map,
                    plugins=self.plugins,
                    pids_max=config.resource_opts.pids_max or self.pids_max,
                    peers=peers,
                    bootstrap_timeout=self.bootstrap_timeout,
                    host_cpus=os.cpu_count() or 1,
                )
                record = plan_record(
                    session_id=session_id,
                    config=config,
                    image=image,
                    launch=launch,
                    allocation=allocation,
                    occupied=occupied,
                    port_map=port_map,
                    created_at=time.time(),
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
        return [kernel for kernel, _ in kernels]

    def _set_limits(self, kernel: AgentKernel) -> None:
        slots = ResourceSlot.from_json(kernel.record.occupied_slots)
        kernel.cpu_limit, kernel.memory_limit = cpu_and_memory(slots)

    async def _save(self, record: KernelRecord) -> None:
        data = self._store.encode(record)
        await trio.to_thread.run_sync(self._store.write, record.kernel_id, data)

    def _check_stop(self, kernel: AgentKernel) -> None:
        if kernel.stop_reason is not None:
            raise KernelStartFailed(
                kernel.stop_reason, f"the kernel was stopped ({kernel.stop_reason})"
            )

    # -------------------------------------------------------- one kernel's task

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
                    listeners += await trio.open_tcp_listeners(port, host=self._bind_host)
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
        kernel.transition(KernelStatus.RUNNING)
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
            kernel.transition(KernelStatus.CREATING)
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
            kernel.transition(KernelStatus.RUNNING)
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
        text = await trio.to_thread.run_sync(kernel_logs.tail, path, 2048)
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
            # The caller hears only the reason; the operator reads why here.
            log.warning("kernel %s cannot restart: %s", kernel.kernel_id, exc)
            raise KernelStartFailed("restart-failed", str(exc)) from None
        kernel.process = process
        await self._save(record)
        try:
            await self._await_ready(kernel, process, tasks, self._start_limit(record.bootstrap))
        except KernelStartFailed as exc:
            kernel.stop_reason = "restart-failed"
            raise KernelStartFailed("restart-failed", str(exc)) from None
        # Destroyed while it came back: the destroy is why it ends.
        self._check_stop(kernel)
        kernel.restarting = False
        kernel.transition(KernelStatus.RUNNING)
        kernel.ready.set()
        return process

    # ------------------------------------------------------------------ the end

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
        cleanup leaves, its kernel store entry included, goes at the agent's
        next start).
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
        kernel.transition(KernelStatus.TERMINATING)
        try:
            reason = reason or await self._death_reason(kernel)
        except Exception:
            log.exception("kernel %s: cannot tell why it ended", kernel.kernel_id)
            reason = reason or "unknown"
        kernel.stop_reason = kernel.stop_reason or reason
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
            await trio.to_thread.run_sync(self._store.remove, record.kernel_id)
        except OSError as exc:
            log.error("kernel %s: cannot remove its kernel store entry: %s", kernel.kernel_id, exc)
        return reason

    async def _release(self, kernel: AgentKernel, reason: str) -> None:
        """Free an ended kernel's slots and ports, remember its result, report its end."""
        record = kernel.record
        self.allocator.free(record.kernel_id)
        self._ports.release(_host_ports(record))
        kernel.transition(KernelStatus.TERMINATED)
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
        await self._report_end(
            record.kernel_id, record.session_id, reason, kernel.exit_code, kernel.last_stat
        )
        kernel.gone.set()
        log.info(
            "kernel %s terminated (%s, exit code %s)", record.kernel_id, reason, kernel.exit_code
        )

    # ----------------------------------------------------- destroy, restart, sync

    async def destroy_kernel(self, kernel_id: uuid.UUID, reason: str) -> DestroyResult:
        """Stop the kernel and wait until it is released (see ``destroy_kernel``)."""
        kid = str(kernel_id)
        kernel = self.kernels.get(kid) or self._terminated.get(kid)
        if kernel is None:
            raise KernelNotFound(f"no kernel {kid} on agent {self.agent_id}")
        return await self._destroy(kernel, reason)

    async def _destroy(self, kernel: AgentKernel, reason: str) -> DestroyResult:
        if not kernel.gone.is_set():
            if kernel.stop_reason is None:
                kernel.stop_reason = reason
            kernel.restarting = False
            # A TERMINATED kernel that is not gone yet is only reporting its end.
            if kernel.status is not KernelStatus.TERMINATED:
                if kernel.status is KernelStatus.RUNNING:
                    await self._final_sample(kernel)
                kernel.transition(KernelStatus.TERMINATING)
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
        assert kernel.result is not None
        return kernel.result

    async def _final_sample(self, kernel: AgentKernel) -> None:
        """Measure *kernel* once more before it is stopped: its cgroups go with it, and its
        end report and usage records keep this sample (bounded by a second)."""
        with trio.move_on_after(1.0):
            try:
                usage = await self.backend.usage([kernel.record])
            except Exception:
                log.warning("no final sample of kernel %s", kernel.kernel_id, exc_info=True)
                return
            sample = usage.get(kernel.kernel_id)
            if sample is not None:
                kernel.update_stats(sample)

    async def restart_kernel(self, kernel_id: uuid.UUID) -> AgentKernel:
        """Restart the runner of a RUNNING kernel and wait until it is RUNNING again."""
        kernel = self.running(kernel_id)
        kernel.restarting = True
        kernel.transition(KernelStatus.RESTARTING)
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
            return kernel
        reason = kernel.stop_reason or "restart-timeout"
        raise KernelNotRunning(f"kernel {kernel.kernel_id} did not come back ({reason})")

    async def sync_kernels(self, req: SyncKernelRegistry) -> SyncReply:
        """Compare the manager's list with the agent's kernels (see ``sync_kernel_registry``)."""
        listed = {str(kid): str(sid) for kid, sid in req.kernels}
        missing: list[str] = []
        for kid, sid in listed.items():
            if kid in self.kernels:
                continue
            missing.append(kid)
            ended = self._terminated.get(kid)
            result = ended.result if ended is not None else None
            await self._report_end(
                kid,
                sid,
                result["reason"] if result is not None else "already-terminated",
                ended.exit_code if ended else None,
                ended.last_stat if ended else None,
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


def _host_ports(record: KernelRecord) -> list[int]:
    """Every host port of a kernel's service ports."""
    return [port for service in record.service_ports for port in service["host_ports"]]


def _allocations(data: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Decimal]]]:
    return {key: allocation_from_json(part) for key, part in data.items()}
