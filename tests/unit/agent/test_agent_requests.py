"""RPC arguments of the agent are checked at the edge, naming the bad key; the agent
answers every method and raises only the errors of its contract (bai.common.agent_api)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bai.agent import errors
from bai.agent.alloc import FragmentedResource, InsufficientResource, InvalidAllocation
from bai.agent.backends.local import LocalBackend
from bai.agent.files import FileOperationTimeout, FileTooLarge, KernelFileError
from bai.agent.images import UnknownImage
from bai.agent.kernel_store import KernelStore
from bai.agent.ports import PortPool
from bai.agent.rpc_handlers import AgentRPC
from bai.agent.runnerlink import RunError, RunnerLinkError
from bai.agent.supervisor import KernelSupervisor
from bai.common.agent_api import (
    AgentErrorType,
    AgentMethod,
    CreateKernels,
    Execute,
    InvalidRequest,
    NoArgs,
    SyncKernelRegistry,
    UploadFile,
    parse,
)
from bai.common.scratch_paths import ScratchPathError

KID = str(uuid.uuid4())


def test_a_full_create_request() -> None:
    req = parse(
        {
            "session_id": str(uuid.uuid4()),
            "kernels": [
                {
                    "kernel_id": KID,
                    "image": "python",
                    "resource_slots": {"cpu": "1", "mem": 1024},
                    "resource_opts": {"pids_max": 100},
                    "environ": {"A_B": "c"},
                    "cluster_role": "sub",
                    "cluster_idx": 2,
                    "local_rank": 3,
                }
            ],
            "cluster": {
                "size": 4,
                "hosts": ["main1", "sub1", "sub2", "sub3"],
                "replicas": {"main": 1, "sub": 3},
            },
        },
        CreateKernels,
    )
    (kernel,) = req.kernels
    assert str(kernel.kernel_id) == KID
    assert kernel.resource_opts.pids_max == 100
    assert kernel.cluster_hostname is None and kernel.session_type == "interactive"


@pytest.mark.parametrize(
    ("args", "where"),
    [
        ({"session_id": "x", "kernels": []}, "session_id"),
        ({"session_id": KID, "kernels": []}, "kernels"),
        ({"session_id": KID, "kernels": [{"kernel_id": KID}]}, "image"),
        (
            {
                "session_id": KID,
                "kernels": [{"kernel_id": KID, "image": "p", "environ": {"1X": "v"}}],
            },
            "environ",
        ),
        (
            {
                "session_id": KID,
                "kernels": [{"kernel_id": KID, "image": "p", "cluster_role": "a b"}],
            },
            "cluster_role",
        ),
        ({"session_id": KID, "kernels": [{"kernel_id": KID, "image": "p"}], "extra": 1}, "extra"),
        (
            {
                "session_id": KID,
                "kernels": [{"kernel_id": KID, "image": "p", "resource_opts": {"pids_max": 1}}],
            },
            "pids_max",
        ),
        ([1, 2], "object"),
    ],
)
def test_bad_create_requests(args: object, where: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse(args, CreateKernels)
    assert where in str(info.value)


def test_other_methods() -> None:
    execute = parse(
        {"kernel_id": KID, "run_id": "r", "mode": "batch", "options": {"exec": "ls"}}, Execute
    )
    assert execute.options == {"exec": "ls"} and execute.flush_timeout is None
    with pytest.raises(InvalidRequest, match="flush_timeout"):
        parse({"kernel_id": KID, "run_id": "r", "mode": "query", "flush_timeout": 0}, Execute)
    with pytest.raises(InvalidRequest, match="run_id"):
        parse({"kernel_id": KID, "run_id": "", "mode": "query"}, Execute)
    upload = parse({"kernel_id": KID, "path": "a", "data": b"\x00\x01"}, UploadFile)
    assert upload.data == b"\x00\x01"
    assert parse(None, NoArgs) == NoArgs()
    sync = parse({"kernels": [[KID, KID]]}, SyncKernelRegistry)
    assert str(sync.kernels[0][0]) == KID and sync.terminate_unknown is False
    with pytest.raises(InvalidRequest):
        parse({"kernels": [[KID]]}, SyncKernelRegistry)


def test_the_agent_answers_every_method_of_the_contract(tmp_path: Path) -> None:
    backend = LocalBackend(
        agent_id="i-test",
        scratch_root=tmp_path / "scratch",
        ipc_base=tmp_path / "ipc",
        log_dir=tmp_path / "logs",
    )

    async def report_end(
        kernel_id: str, session_id: str, reason: str, code: int | None, stat: object
    ) -> None:
        raise AssertionError("no kernel ends here")

    supervisor = KernelSupervisor(
        agent_id="i-test",
        backend=backend,
        store=KernelStore(tmp_path / "kernels"),
        ports=PortPool(30000, 30010),
        bind_host="127.0.0.1",
        report_end=report_end,
        start_timeout=1.0,
        bootstrap_timeout=1.0,
        destroy_grace=1.0,
        pids_max=64,
    )
    rpc = AgentRPC(
        supervisor,
        describe=lambda kernel: pytest.fail("nothing to describe"),
        max_upload_size=1,
        max_download_size=1,
    )
    assert set(rpc.handlers()) == {method.value for method in AgentMethod}


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequest,
        errors.KernelNotFound,
        errors.KernelAlreadyExists,
        errors.KernelNotRunning,
        errors.KernelCreationFailed,
        errors.InsufficientPorts,
        UnknownImage,
        InsufficientResource,
        FragmentedResource,
        InvalidAllocation,
        RunError,
        RunnerLinkError,
        ScratchPathError,
        KernelFileError,
        FileTooLarge,
        FileOperationTimeout,
    ],
)
def test_the_errors_the_agent_raises_are_the_contracts(error: type[Exception]) -> None:
    assert AgentErrorType(error.__name__).value == error.__name__
