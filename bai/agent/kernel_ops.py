"""What the manager does inside one running kernel: runs, completions, logs, files, services.

Each function takes the :class:`~bai.agent.kernel.AgentKernel` the RPC layer
looked up and answers in the reply shape :mod:`bai.common.agent_api` names
for its method.  Calls to the runner are bounded by that module's deadlines.

File operations touch only regular files and folders and never block on what
a kernel made (see :mod:`bai.agent.files`); they run on threads of the
kernel's own limiter, each within
:data:`~bai.common.agent_api.FILE_OP_TIMEOUT`, so no kernel's files can hold
up the agent or other kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from bai.agent import files, kernel_logs
from bai.agent.cgroups import OomKillCounter
from bai.agent.kernel import AgentKernel
from bai.agent.runnerlink import RunError, RunnerLink
from bai.common.agent_api import (
    COMPLETION_TIMEOUT,
    DEFAULT_FLUSH_TIMEOUT,
    FILE_OP_TIMEOUT,
    GET_APPS_TIMEOUT,
    LOG_TAIL_BYTES,
    SERVICE_REPLY_MARGIN,
    SERVICE_SHUTDOWN_TIMEOUT,
    BatchOptions,
    Execute,
    ExecutionResult,
    FileListing,
    GetCompletions,
    LogsReply,
    ShutdownServiceReply,
    StartService,
    StartServiceReply,
    UploadedFile,
    parse,
)
from bai.common.scratch_paths import split_path, split_upload_paths
from bai.kernel.protocol import DEFAULT_SERVICE_TIMEOUT

T = TypeVar("T")


def _link(kernel: AgentKernel) -> RunnerLink:
    link = kernel.link
    assert link is not None
    return link


async def execute(kernel: AgentKernel, req: Execute) -> ExecutionResult:
    """One call of the execute long-poll (see ``execute``)."""
    link = _link(kernel)
    flush = req.flush_timeout or DEFAULT_FLUSH_TIMEOUT
    run_id = req.run_id
    if req.mode == "query":
        run = await link.start_run(run_id, [("code", {"run_id": run_id, "code": req.code})])
    elif req.mode == "batch":
        opts = parse(req.options or {}, BatchOptions)
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
        _explain_oom(kernel, result)
    return result


def _explain_oom(kernel: AgentKernel, result: ExecutionResult) -> None:
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


async def interrupt(kernel: AgentKernel) -> None:
    """Interrupt the kernel's current run."""
    await _link(kernel).send("interrupt", {"run_id": None})


async def completions(kernel: AgentKernel, req: GetCompletions) -> list[str]:
    """The runner's completions of *req*'s code."""
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
    reply = await _link(kernel).request(
        "complete", {"code": req.code, "options": options}, COMPLETION_TIMEOUT
    )
    matches = reply.get("matches", [])
    return [m for m in matches if isinstance(m, str)]


async def logs(kernel: AgentKernel) -> LogsReply:
    """The end of the kernel's log, then what the runner printed outside any run."""
    text = ""
    if kernel.record.log_path:
        text = await trio.to_thread.run_sync(
            kernel_logs.tail, kernel.record.log_path, LOG_TAIL_BYTES
        )
    if kernel.link is not None and kernel.link.log_tail:
        text += kernel.link.log_tail
    return {"logs": text}


# ------------------------------------------------------------------------- files


async def _file_op(kernel: AgentKernel, operation: Callable[[], T]) -> T:
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


async def upload(
    kernel: AgentKernel,
    scratch: Path,
    items: list[tuple[str, bytes]],
    *,
    max_size: int,
    owner: tuple[int, int] | None,
) -> list[UploadedFile]:
    """Write *items* (path, data) into the kernel's *scratch*: all of them, or none."""
    # Bad paths are refused without taking one of the kernel's threads.
    split_upload_paths([path for path, _ in items])
    return await _file_op(
        kernel,
        lambda: files.write_files(
            scratch,
            items,
            max_size=max_size,
            owner=owner,
            # An upload abandoned at its deadline must not land after the error went out.
            before_commit=trio.from_thread.check_cancelled,
        ),
    )


async def download(kernel: AgentKernel, scratch: Path, path: str, *, max_size: int) -> bytes:
    """A tar archive of the file or folder *path* in the kernel's *scratch*."""
    split_path(path)
    return await _file_op(kernel, lambda: files.download(scratch, path, max_size=max_size))


async def list_files(kernel: AgentKernel, scratch: Path, path: str) -> FileListing:
    """The listing of folder *path* in the kernel's *scratch*."""
    split_path(path, allow_root=True)
    return await _file_op(kernel, lambda: files.list_files(scratch, path))


# ---------------------------------------------------------------------- services


async def start_service(kernel: AgentKernel, req: StartService) -> StartServiceReply:
    """Start one of the kernel's app services (see ``start_service``)."""
    timeout = req.options.timeout or DEFAULT_SERVICE_TIMEOUT
    reply = await _link(kernel).request(
        "start-service",
        {"name": req.service, "envs": req.options.envs, "timeout": timeout},
        timeout + SERVICE_REPLY_MARGIN,
    )
    return {
        "status": reply.get("status"),
        "error": reply.get("error"),
        "ports": reply.get("ports", []),
    }


async def shutdown_service(kernel: AgentKernel, service: str) -> ShutdownServiceReply:
    """Stop one of the kernel's app services."""
    reply = await _link(kernel).request(
        "shutdown-service", {"name": service}, SERVICE_SHUTDOWN_TIMEOUT
    )
    return {"status": reply.get("status")}


async def apps(kernel: AgentKernel) -> list[dict[str, object]]:
    """The kernel's app services, as its runner describes them."""
    reply = await _link(kernel).request("get-apps", {}, GET_APPS_TIMEOUT)
    found = reply.get("apps", [])
    return [app for app in found if isinstance(app, dict)]
