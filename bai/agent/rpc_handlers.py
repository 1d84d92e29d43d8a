"""The agent's RPC methods: parse the arguments, call the supervisor or the kernel, answer.

:class:`AgentRPC` maps each :class:`~bai.common.agent_api.AgentMethod` to a
handler.  A handler only validates its arguments with
:func:`~bai.common.agent_api.parse` (so malformed ones fail with
``InvalidRequest`` before anything changes), looks the kernel up, and hands
over to :class:`~bai.agent.supervisor.KernelSupervisor` (lifecycle) or
:mod:`bai.agent.kernel_ops` (work inside a running kernel).  What each method
answers, raises and guarantees is the contract in :mod:`bai.common.agent_api`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import trio

from bai.agent import kernel_ops
from bai.agent.kernel import AgentKernel
from bai.agent.supervisor import KernelSupervisor
from bai.common.agent_api import (
    AgentMethod,
    CreateKernels,
    DescribeKernels,
    DestroyKernel,
    DestroyResult,
    Execute,
    ExecutionResult,
    FileListing,
    FilePath,
    GetCompletions,
    GetStats,
    HardwareStatus,
    KernelArgs,
    KernelDescription,
    ListFiles,
    LogsReply,
    NoArgs,
    ShutdownService,
    ShutdownServiceReply,
    StartService,
    StartServiceReply,
    SyncKernelRegistry,
    SyncReply,
    UploadedFile,
    UploadFile,
    UploadFiles,
    parse,
)
from bai.common.rpc import Handler
from bai.common.types import KernelStatus


class AgentRPC:
    """The handlers of one agent's RPC server.

    *describe* answers one kernel as ``create_kernels`` does (the agent's
    address is the agent service's to tell); *max_upload_size* and
    *max_download_size* bound each file of ``upload_file(s)`` and the archive
    of ``download_file``.
    """

    def __init__(
        self,
        supervisor: KernelSupervisor,
        *,
        describe: Callable[[AgentKernel], KernelDescription],
        max_upload_size: int,
        max_download_size: int,
    ) -> None:
        self._kernels = supervisor
        self._describe = describe
        self._max_upload_size = max_upload_size
        self._max_download_size = max_download_size

    def handlers(self) -> dict[str, Handler]:
        """The handler of every method, by its name."""
        return {
            AgentMethod.CREATE_KERNELS: self.create_kernels,
            AgentMethod.DESTROY_KERNEL: self.destroy_kernel,
            AgentMethod.RESTART_KERNEL: self.restart_kernel,
            AgentMethod.EXECUTE: self.execute,
            AgentMethod.INTERRUPT_KERNEL: self.interrupt_kernel,
            AgentMethod.GET_COMPLETIONS: self.get_completions,
            AgentMethod.GET_LOGS: self.get_logs,
            AgentMethod.UPLOAD_FILE: self.upload_file,
            AgentMethod.UPLOAD_FILES: self.upload_files,
            AgentMethod.DOWNLOAD_FILE: self.download_file,
            AgentMethod.LIST_FILES: self.list_files,
            AgentMethod.START_SERVICE: self.start_service,
            AgentMethod.SHUTDOWN_SERVICE: self.shutdown_service,
            AgentMethod.GET_APPS: self.get_apps,
            AgentMethod.PING: self.ping,
            AgentMethod.GATHER_HWINFO: self.gather_hwinfo,
            AgentMethod.SYNC_KERNEL_REGISTRY: self.sync_kernel_registry,
            AgentMethod.GET_STATS: self.get_stats,
            AgentMethod.DESCRIBE_KERNELS: self.describe_kernels,
        }

    # -------------------------------------------------------------- lifecycle

    async def create_kernels(self, args: Any) -> list[KernelDescription]:
        req = parse(args, CreateKernels)
        created = await self._kernels.create_kernels(req)
        return [self._describe(kernel) for kernel in created]

    async def destroy_kernel(self, args: Any) -> DestroyResult:
        req = parse(args, DestroyKernel)
        return await self._kernels.destroy_kernel(req.kernel_id, req.reason)

    async def restart_kernel(self, args: Any) -> KernelDescription:
        req = parse(args, KernelArgs)
        return self._describe(await self._kernels.restart_kernel(req.kernel_id))

    async def sync_kernel_registry(self, args: Any) -> SyncReply:
        req = parse(args, SyncKernelRegistry)
        return await self._kernels.sync_kernels(req)

    async def describe_kernels(self, args: Any) -> list[KernelDescription]:
        req = parse(args, DescribeKernels)
        await trio.lowlevel.checkpoint()
        found = (self._kernels.kernels.get(str(kid)) for kid in req.kernel_ids)
        return [
            self._describe(kernel)
            for kernel in found
            if kernel is not None and kernel.status is KernelStatus.RUNNING
        ]

    # -------------------------------------------------------------- execution

    async def execute(self, args: Any) -> ExecutionResult:
        req = parse(args, Execute)
        return await kernel_ops.execute(self._kernels.running(req.kernel_id), req)

    async def interrupt_kernel(self, args: Any) -> None:
        req = parse(args, KernelArgs)
        await kernel_ops.interrupt(self._kernels.running(req.kernel_id))

    async def get_completions(self, args: Any) -> list[str]:
        req = parse(args, GetCompletions)
        return await kernel_ops.completions(self._kernels.running(req.kernel_id), req)

    async def get_logs(self, args: Any) -> LogsReply:
        req = parse(args, KernelArgs)
        return await kernel_ops.logs(self._kernels.kernel(req.kernel_id))

    # ------------------------------------------------------------------ files

    async def _upload(
        self, kernel_id: uuid.UUID, items: list[tuple[str, bytes]]
    ) -> list[UploadedFile]:
        kernel = self._kernels.kernel(kernel_id)
        backend = self._kernels.backend
        return await kernel_ops.upload(
            kernel,
            backend.scratch_dir(kernel.record),
            items,
            max_size=self._max_upload_size,
            owner=backend.kernel_owner,
        )

    async def upload_file(self, args: Any) -> UploadedFile:
        req = parse(args, UploadFile)
        (written,) = await self._upload(req.kernel_id, [(req.path, req.data)])
        return written

    async def upload_files(self, args: Any) -> list[UploadedFile]:
        req = parse(args, UploadFiles)
        return await self._upload(req.kernel_id, [(item.path, item.data) for item in req.files])

    async def download_file(self, args: Any) -> bytes:
        req = parse(args, FilePath)
        kernel = self._kernels.kernel(req.kernel_id)
        scratch = self._kernels.backend.scratch_dir(kernel.record)
        return await kernel_ops.download(
            kernel, scratch, req.path, max_size=self._max_download_size
        )

    async def list_files(self, args: Any) -> FileListing:
        req = parse(args, ListFiles)
        kernel = self._kernels.kernel(req.kernel_id)
        scratch = self._kernels.backend.scratch_dir(kernel.record)
        return await kernel_ops.list_files(kernel, scratch, req.path)

    # --------------------------------------------------------------- services

    async def start_service(self, args: Any) -> StartServiceReply:
        req = parse(args, StartService)
        return await kernel_ops.start_service(self._kernels.running(req.kernel_id), req)

    async def shutdown_service(self, args: Any) -> ShutdownServiceReply:
        req = parse(args, ShutdownService)
        return await kernel_ops.shutdown_service(self._kernels.running(req.kernel_id), req.service)

    async def get_apps(self, args: Any) -> list[dict[str, object]]:
        req = parse(args, KernelArgs)
        return await kernel_ops.apps(self._kernels.running(req.kernel_id))

    # ------------------------------------------------------------------- misc

    async def ping(self, args: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return args

    async def gather_hwinfo(self, args: Any) -> dict[str, HardwareStatus]:
        parse(args, NoArgs)
        await trio.lowlevel.checkpoint()
        return {
            key: {
                "status": "healthy" if plugin.devices() else "unavailable",
                "status_info": "" if plugin.devices() else "no devices found",
                "metadata": plugin.info(),
            }
            for key, plugin in self._kernels.plugins.items()
        }

    async def get_stats(self, args: Any) -> dict[str, Any]:
        req = parse(args, GetStats)
        await trio.lowlevel.checkpoint()
        kernels = self._kernels.kernels
        wanted = [str(k) for k in req.kernel_ids] if req.kernel_ids is not None else list(kernels)
        return {kid: kernels[kid].last_stat for kid in wanted if kid in kernels}
