"""The arguments of the agent's RPC methods, validated at the edge.

Each RPC method takes one msgpack map (``args``); :func:`parse` turns it into
the method's frozen struct or raises :class:`InvalidRequest` (an
:class:`~bai.common.errors.InvalidValue`) naming the key and the problem, so
the manager gets a typed error and the agent changes nothing.  Unknown keys
are refused too: a misspelt option should not be silently ignored.  The
structs' fields and defaults are the wire contract (see
:mod:`bai.agent.server` for what each method returns).
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec

from bai.common.validation import InvalidField, bracketed, invalid_value

_NAME: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

Name = Annotated[str, msgspec.Meta(pattern=_NAME)]
RunId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=3600)]
#: Longest bootstrap script accepted (characters).
MAX_BOOTSTRAP_SCRIPT: Final = 1024 * 1024
#: Files one ``upload_files`` call may carry.
MAX_UPLOAD_FILES: Final = 100


class InvalidRequest(InvalidField):
    """Malformed RPC arguments: wrong type, missing or unknown key, value out of range."""


class _Args(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class KernelArgs(_Args, frozen=True):
    """Methods that name one kernel."""

    kernel_id: uuid.UUID


class ClusterInfo(_Args, frozen=True):
    """The whole cluster session, when this agent runs only part of it."""

    size: Annotated[int, msgspec.Meta(ge=1, le=1024)]
    hosts: list[str]
    replicas: dict[str, Annotated[int, msgspec.Meta(ge=1)]]


class ResourceOpts(_Args, frozen=True):
    """Per-kernel options beyond resource slots."""

    #: Tasks (threads included) the kernel may have; the agent's default when None.
    pids_max: Annotated[int, msgspec.Meta(ge=16, le=1_000_000)] | None = None


class KernelConfig(_Args, frozen=True):
    """One kernel to create."""

    kernel_id: uuid.UUID
    image: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    architecture: str | None = None
    #: Slot name -> amount, as ``ResourceSlot.parse`` reads it (``"2"``, ``"512m"``).
    resource_slots: dict[str, str | int | float] = msgspec.field(default_factory=dict)
    resource_opts: ResourceOpts = msgspec.field(default_factory=ResourceOpts)
    environ: dict[str, str] = msgspec.field(default_factory=dict)
    cluster_role: Name = "main"
    cluster_idx: Annotated[int, msgspec.Meta(ge=1)] = 1
    local_rank: Annotated[int, msgspec.Meta(ge=0)] = 0
    cluster_hostname: Name | None = None
    session_type: Literal["interactive", "batch", "inference", "system"] = "interactive"
    #: A shell script the kernel runs once it starts, before it is ready (None: none).
    bootstrap_script: Annotated[str, msgspec.Meta(max_length=MAX_BOOTSTRAP_SCRIPT)] | None = None

    def __post_init__(self) -> None:
        for key, value in self.environ.items():
            if not _ENV_NAME.match(key):
                raise ValueError(f"environ: not an environment variable name: {key!r}")
            if "\x00" in value:
                raise ValueError(f"environ.{key}: NUL is not allowed in a value")


class CreateKernels(_Args, frozen=True):
    """``create_kernels``: the kernels of one session that this agent runs."""

    session_id: uuid.UUID
    kernels: Annotated[list[KernelConfig], msgspec.Meta(min_length=1, max_length=1024)]
    cluster: ClusterInfo | None = None


class DestroyKernel(KernelArgs, frozen=True):
    """``destroy_kernel``."""

    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "user-requested"


class BatchOptions(_Args, frozen=True):
    """The spec's Batch Execution Query Object."""

    clean: str | None = None
    build: str | None = None
    exec: str | None = None
    buildLog: bool = False


class Execute(KernelArgs, frozen=True):
    """``execute``: one call of the execute long-poll."""

    run_id: RunId
    mode: Literal["query", "batch", "input", "continue"]
    code: str = ""
    options: dict[str, Any] | None = None
    flush_timeout: Seconds | None = None


class CompletionOptions(_Args, frozen=True):
    """Cursor context of a completion request (the spec's ``options``)."""

    post: str | None = None
    line: str | None = None
    row: Annotated[int, msgspec.Meta(ge=0)] | None = None
    col: Annotated[int, msgspec.Meta(ge=0)] | None = None


class GetCompletions(KernelArgs, frozen=True):
    """``get_completions``."""

    code: str = ""
    options: CompletionOptions | None = None


class UploadFile(KernelArgs, frozen=True):
    """``upload_file``: *data* goes to *path* (relative to, or inside, ``/home/work``)."""

    path: str
    data: bytes


class FileData(_Args, frozen=True):
    """One file of ``upload_files``."""

    path: str
    data: bytes


class UploadFiles(KernelArgs, frozen=True):
    """``upload_files``: all of *files* are written, or none."""

    files: Annotated[list[FileData], msgspec.Meta(min_length=1, max_length=MAX_UPLOAD_FILES)]


class FilePath(KernelArgs, frozen=True):
    """``download_file``."""

    path: str


class ListFiles(KernelArgs, frozen=True):
    """``list_files``."""

    path: str = "."


class ServiceOptions(_Args, frozen=True):
    """Options of ``start_service``."""

    envs: dict[str, str] = msgspec.field(default_factory=dict)
    timeout: Seconds | None = None


class StartService(KernelArgs, frozen=True):
    """``start_service``."""

    service: Name
    options: ServiceOptions = msgspec.field(default_factory=ServiceOptions)


class ShutdownService(KernelArgs, frozen=True):
    """``shutdown_service``."""

    service: Name


class SyncKernelRegistry(_Args, frozen=True):
    """``sync_kernel_registry``: the kernels the manager believes run on this agent."""

    kernels: list[tuple[uuid.UUID, uuid.UUID]]
    terminate_unknown: bool = False


class GetStats(_Args, frozen=True):
    """``get_stats``: stats of these kernels (all when None)."""

    kernel_ids: list[uuid.UUID] | None = None


class DescribeKernels(_Args, frozen=True):
    """``describe_kernels``: these kernels as ``create_kernels`` described them."""

    kernel_ids: list[uuid.UUID]


class NoArgs(_Args, frozen=True):
    """Methods without arguments (``args`` may also be nil)."""


T = TypeVar("T", bound=_Args)


def parse(args: Any, kind: type[T]) -> T:
    """Validate *args* as *kind*; raises :class:`InvalidRequest` naming the offending key."""
    if args is None and kind is NoArgs:
        args = {}
    try:
        return msgspec.convert(args, kind)
    except msgspec.ValidationError as exc:
        raise invalid_value(
            exc, args, where="args", error=InvalidRequest, notation=bracketed
        ) from None
    except ValueError as exc:  # a __post_init__ check
        raise InvalidRequest(str(exc), value=args) from None
