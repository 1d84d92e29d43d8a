"""The agent's RPC contract: method names, arguments, replies, errors and deadlines.

This module is the one home of what the manager and an agent agree on over
RPC (:mod:`bai.common.rpc`): :class:`AgentMethod` names the methods, the
frozen structs below are their arguments, the TypedDicts their fixed replies,
:class:`AgentErrorType` the error types they raise, and the constants their
deadlines.  The agent (:mod:`bai.agent.rpc_handlers`) parses with :func:`parse`
and answers in these shapes; a caller may build its arguments from the same
structs (``msgspec.to_builtins``) or as plain maps with the same keys.

Arguments
=========

Every method takes one msgpack map (``args``); :func:`parse` turns it into
the method's frozen struct or raises :class:`InvalidRequest` (an
:class:`~bai.common.errors.InvalidValue`) naming the key and the problem, so
the manager gets a typed error and the agent changes nothing.  Unknown keys
are refused too: a misspelt option should not be silently ignored.  The
structs' fields and defaults are the wire contract.  Kernel and session ids
travel as UUID strings.

Errors
======

Errors travel as the RPC ``err`` envelope whose ``type`` is one of
:class:`AgentErrorType`: ``InvalidRequest`` (malformed arguments; ``detail``
names the field), ``KernelNotFound``, ``KernelAlreadyExists``,
``KernelNotRunning``, ``UnknownImage``, ``InsufficientResource``/
``FragmentedResource``/``InvalidAllocation``/``InsufficientPorts`` (the
request cannot be placed), ``KernelCreationFailed`` (``detail = {"kernels":
{kernel_id: "reason: message"}, "reasons": {kernel_id: reason}}``),
``RunError`` (an execute call that does not fit its run), ``RunnerLinkError``
(the runner did not answer in time), ``ScratchPathError`` (a path leaving
``/home/work``, or naming a symbolic link or special file),
``KernelFileError``, ``FileTooLarge`` and ``FileOperationTimeout``.  A failed
call changes nothing.

Methods
=======

``create_kernels {session_id, kernels: [KernelConfig], cluster?}``
    Creates the kernels of one session, all or nothing (all are started
    concurrently; if one fails the others are destroyed with reason
    ``cluster-peer-failed`` and ``KernelCreationFailed`` is raised).  Returns
    one :class:`KernelDescription` per kernel, in order: ``kernel_id``,
    ``session_id``, ``status`` (``RUNNING``), ``agent_id``, ``agent_addr``,
    ``kernel_host``, ``repl_in``/``repl_out`` (runner addresses),
    ``service_ports`` (``[{name, protocol, container_ports, host_ports}]``),
    ``occupied_slots`` (ResourceSlot JSON), ``attached_devices`` (allocation
    by plugin: ``{plugin: {slot: {device: amount}}}``), ``resource_opts``,
    ``pid``, ``scratch_dir``, ``isolation`` (``bwrap`` or ``process``),
    ``image``.  A kernel with a ``bootstrap_script`` gets it as
    ``bootstrap.sh`` in its ``/home/work`` and is RUNNING only once the script
    exited 0 (its output is in the kernel's log); a script that fails or
    outlives the agent's bootstrap timeout fails the kernel with reason
    ``bootstrap-failed`` and the end of its output in the message.  The
    script runs again when the kernel is restarted.  Deadline: the agent's
    start deadline, plus its bootstrap timeout for a kernel with a script.
    A kernel's ``mounts`` (at most :data:`MAX_MOUNTS` :class:`VFolderMount`)
    are virtual folders bound into it: each folder's root, and nothing else
    of its volume, at its ``kernel_path`` (``/home/work/NAME``, or a path
    below ``/home/work``, ``/data`` or ``/mnt``; see
    :func:`bai.common.storage_api.kernel_mount_path`), read-only for mode
    ``ro`` even to root in the kernel.  No two mounts share a kernel path
    or lie one inside the other.  ``host_path`` must be an existing folder
    on the agent's host, not a symbolic link, and the host must isolate
    kernels with a mount namespace (``isolation`` ``bwrap``); otherwise the
    kernel fails with reason ``failed-to-start`` and a message saying which
    mount and why.  A kernel's ``ssh_keypair`` (:class:`SSHKeypair`, the
    session owner's) becomes ``/home/work/id_container`` (the private key)
    and a line of ``/home/work/.ssh/authorized_keys`` (the public key), each
    0600 in a 0700 ``.ssh``, owned by the kernel's user; a path a mounted
    folder covers (a folder at ``/home/work/.ssh``) is left to the folder
    (:mod:`bai.agent.sshkeys`).  A kernel's ``dotfiles`` (at most
    :data:`MAX_KERNEL_DOTFILES` :class:`Dotfile`: the owner's merged with
    the project's and the domain's by the manager) are written into its
    ``/home/work`` before anything runs there, each with its mode, owned by
    the kernel's user, missing folders made 0755; a dotfile a mounted folder
    covers is left out, and a link or special file in its way fails the
    kernel (:mod:`bai.agent.dotfiles`).  A ``user_bootstrap_script`` (the
    owner's stored script) runs before the ``bootstrap_script``, from the
    same ``bootstrap.sh``; when it fails, the session's script does not run
    and the kernel fails with ``bootstrap-failed``.
``destroy_kernel {kernel_id, reason="user-requested"}``
    Stops the kernel (SIGTERM, SIGKILL after the grace period), releases
    everything, answers a :class:`DestroyResult` ``{kernel_id, session_id,
    reason, exit_code, last_stat}``.  Repeating it for a kernel that just
    ended answers the same.
``restart_kernel {kernel_id}``
    Restarts the runner in the same scratch directory and allocation (the
    Python namespace is lost); answers like one kernel of create_kernels.
``execute {kernel_id, run_id, mode, code="", options=None, flush_timeout=None}``
    One call of the execute long-poll: mode ``query`` (new run of *code*),
    ``batch`` (new run; *options* is the Batch Execution Query Object),
    ``input`` (*code* answers a ``waiting-input``), ``continue``.  Returns
    the :class:`ExecutionResult` ``{runId, status, exitCode, console,
    options}`` after the run finishes a step or after *flush_timeout*
    (:data:`DEFAULT_FLUSH_TIMEOUT` by default) with status ``continued``.
    ``continue`` on a run already collected to its end answers ``finished``
    with its exit code again.
``interrupt_kernel {kernel_id}`` -> nil
``get_completions {kernel_id, code, options}`` -> ``[str]``, within :data:`COMPLETION_TIMEOUT`
``get_logs {kernel_id}`` -> ``{"logs": str}`` (the last :data:`LOG_TAIL_BYTES` of the kernel's log)
``upload_file {kernel_id, path, data: bin}`` -> ``{"path": abspath, "size": int}``
``upload_files {kernel_id, files: [{path, data: bin}]}`` -> ``[{"path": abspath, "size": int}]``
    Writes all the files or, when one is refused, none.
``download_file {kernel_id, path}`` -> tar archive (bin) of the file or folder
``list_files {kernel_id, path="."}`` -> ``{"files": JSON text, "errors": str, "abspath": str}``
    The file methods each finish within :data:`FILE_OP_TIMEOUT` or raise
    ``FileOperationTimeout``.
``start_service {kernel_id, service, options: {envs, timeout}}``
    -> ``{"status": "started"|"running"|"failed", "error": str|None, "ports": [int]}``;
    *timeout* (the runner's default when unset) bounds the service's start,
    and the answer comes within it plus :data:`SERVICE_REPLY_MARGIN`.
``shutdown_service {kernel_id, service}`` -> ``{"status": "stopped"|"not-running"}``,
    within :data:`SERVICE_SHUTDOWN_TIMEOUT`
``get_apps {kernel_id}`` -> ``[{name, protocol, ports, url_template, running}]``,
    within :data:`GET_APPS_TIMEOUT`
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
"""

from __future__ import annotations

import enum
import os
import re
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal, TypedDict, TypeVar

import msgspec

from bai.common.scratch_paths import ScratchPathError, split_path
from bai.common.storage_api import InvalidPath, kernel_mount_path
from bai.common.validation import InvalidField, bracketed, invalid_value


class AgentMethod(enum.StrEnum):
    """The names of the agent's RPC methods (see the module docstring)."""

    CREATE_KERNELS = "create_kernels"
    DESTROY_KERNEL = "destroy_kernel"
    RESTART_KERNEL = "restart_kernel"
    EXECUTE = "execute"
    INTERRUPT_KERNEL = "interrupt_kernel"
    GET_COMPLETIONS = "get_completions"
    GET_LOGS = "get_logs"
    UPLOAD_FILE = "upload_file"
    UPLOAD_FILES = "upload_files"
    DOWNLOAD_FILE = "download_file"
    LIST_FILES = "list_files"
    START_SERVICE = "start_service"
    SHUTDOWN_SERVICE = "shutdown_service"
    GET_APPS = "get_apps"
    PING = "ping"
    GATHER_HWINFO = "gather_hwinfo"
    SYNC_KERNEL_REGISTRY = "sync_kernel_registry"
    GET_STATS = "get_stats"
    DESCRIBE_KERNELS = "describe_kernels"


class AgentErrorType(enum.StrEnum):
    """The ``type`` of an agent's RPC error envelope (the raised exception's class name)."""

    INVALID_REQUEST = "InvalidRequest"
    KERNEL_NOT_FOUND = "KernelNotFound"
    KERNEL_ALREADY_EXISTS = "KernelAlreadyExists"
    KERNEL_NOT_RUNNING = "KernelNotRunning"
    KERNEL_CREATION_FAILED = "KernelCreationFailed"
    UNKNOWN_IMAGE = "UnknownImage"
    INSUFFICIENT_RESOURCE = "InsufficientResource"
    FRAGMENTED_RESOURCE = "FragmentedResource"
    INVALID_ALLOCATION = "InvalidAllocation"
    INSUFFICIENT_PORTS = "InsufficientPorts"
    RUN_ERROR = "RunError"
    RUNNER_LINK_ERROR = "RunnerLinkError"
    SCRATCH_PATH_ERROR = "ScratchPathError"
    KERNEL_FILE_ERROR = "KernelFileError"
    FILE_TOO_LARGE = "FileTooLarge"
    FILE_OPERATION_TIMEOUT = "FileOperationTimeout"


# ----------------------------------------------------------------------- deadlines

#: The execute long-poll's flush timeout when the caller names none (ARCHITECTURE.md).
DEFAULT_FLUSH_TIMEOUT: Final = 2.0
#: How long get_completions waits for the runner's answer.
COMPLETION_TIMEOUT: Final = 10.0
#: How long get_apps waits for the runner's answer.
GET_APPS_TIMEOUT: Final = 10.0
#: How long start_service waits for the runner beyond the service's own start timeout.
SERVICE_REPLY_MARGIN: Final = 10.0
#: How long shutdown_service waits for the runner's answer.
SERVICE_SHUTDOWN_TIMEOUT: Final = 30.0
#: Bound on one file operation (upload, download, list), waiting for a thread included.
FILE_OP_TIMEOUT: Final = 10.0
#: Bytes of the kernel's log that get_logs returns (its end).
LOG_TAIL_BYTES: Final = 64 * 1024

# ----------------------------------------------------------------------- arguments

_NAME: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

Name = Annotated[str, msgspec.Meta(pattern=_NAME)]
RunId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=3600)]
#: Longest bootstrap script accepted (characters).
MAX_BOOTSTRAP_SCRIPT: Final = 1024 * 1024
#: Files one ``upload_files`` call may carry.
MAX_UPLOAD_FILES: Final = 100
#: Virtual folders one kernel may mount.
MAX_MOUNTS: Final = 64
#: Longest host path of a mounted folder (``PATH_MAX``).
MAX_HOST_PATH: Final = 4096
#: Longest SSH public key line accepted (characters): a 16384-bit RSA key, the largest
#: ``ssh-keygen`` makes, takes about 2.8 KiB with its comment.
MAX_SSH_PUBLIC_KEY: Final = 8 * 1024
#: Longest SSH private key text accepted (characters): a 16384-bit RSA key takes about 12.7 KiB.
MAX_SSH_PRIVATE_KEY: Final = 16 * 1024


#: Largest content of one dotfile (characters).
MAX_DOTFILE_SIZE: Final = 64 * 1024
#: Dotfiles one kernel may get (its owner's, project's and domain's together).
MAX_KERNEL_DOTFILES: Final = 300
#: Paths in ``/home/work`` that no dotfile may take: the agent writes them
#: (:mod:`bai.agent.sshkeys`, ``bootstrap.sh``) or the kernel's tools keep folders there.
RESERVED_DOTFILES: Final = frozenset(
    {
        ".terminfo",
        ".jupyter",
        ".ssh",
        ".ssh/authorized_keys",
        ".local",
        ".config",
        "id_container",
        "bootstrap.sh",
    }
)


def dotfile_parts(path: object, *, field: str = "path") -> list[str]:
    """The components below ``/home/work`` of dotfile *path*; raises :class:`ScratchPathError`.

    A dotfile path is relative to ``/home/work``: absolute paths, ``..``, NUL,
    over-long names and the :data:`RESERVED_DOTFILES` are refused.  Applied by
    the manager when a dotfile is stored and by the agent before it writes one.
    """
    if isinstance(path, str) and path.startswith("/"):
        raise ScratchPathError(
            "a dotfile path must be relative to /home/work", value=path, field=field
        )
    parts = split_path(path, field=field)
    if "/".join(parts) in RESERVED_DOTFILES:
        raise ScratchPathError(
            "this path is reserved for the kernel's own files", value=path, field=field
        )
    return parts


def paths_nest(a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether split paths *a* and *b* are the same or one is a folder of the other."""
    short = min(len(a), len(b))
    return list(a[:short]) == list(b[:short])


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
    #: Bytes of the kernel's ``/dev/shm`` (a tmpfs charged to its memory); unbounded when None.
    shmem: Annotated[int, msgspec.Meta(ge=1, le=1024**4)] | None = None


class VFolderMount(_Args, frozen=True):
    """One virtual folder mounted into a kernel (see ``create_kernels`` in the module docs).

    Guarantees once parsed: *host_path* is absolute and normalised (no
    ``.``, ``..``, repeated or trailing ``/``) and is not ``/``; *kernel_path*
    is what :func:`~bai.common.storage_api.kernel_mount_path` makes of it.
    Whether *host_path* exists is the agent's to check when it launches.
    """

    #: The folder's name, for messages.
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    #: The folder's id in its storage proxy (32 lowercase hex digits).
    vfid: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{32}$")]
    #: The folder's root on the agent's host, as the proxy's ``folder/mount`` answered it.
    host_path: Annotated[str, msgspec.Meta(min_length=2, max_length=MAX_HOST_PATH)]
    kernel_path: Annotated[str, msgspec.Meta(min_length=2, max_length=MAX_HOST_PATH)]
    mode: Literal["ro", "rw"]

    def __post_init__(self) -> None:
        host = self.host_path
        # normpath keeps a leading "//" (POSIX leaves its meaning open), so refuse it apart.
        normalised = host.startswith("/") and not host.startswith("//")
        if "\x00" in host or not normalised or os.path.normpath(host) != host:
            raise ValueError(f"host_path: must be an absolute, normalised path: {host!r}")
        try:
            checked = kernel_mount_path(self.name, self.kernel_path, field="kernel_path")
        except InvalidPath as exc:
            raise ValueError(f"kernel_path: {exc.problem}: {self.kernel_path!r}") from None
        if checked != self.kernel_path:
            raise ValueError(f"kernel_path: must be written as {checked!r}")


class SSHKeypair(_Args, frozen=True):
    """The SSH keypair of a session's owner, for the sshd of each of its kernels.

    OpenSSH text: *public_key* is one ``authorized_keys`` line (``TYPE BASE64
    [COMMENT]``, a final newline allowed), *private_key* a PEM-armoured key
    (``-----BEGIN ... PRIVATE KEY-----``).  Guarantees once parsed: both are
    within their bounds and free of NUL, and *public_key* is one line, so
    writing it cannot add a second ``authorized_keys`` entry.  That the two
    match is checked by the manager when it stores them
    (:mod:`bai.manager.sshkeys`); the agent only writes them
    (:mod:`bai.agent.sshkeys`).
    """

    public_key: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SSH_PUBLIC_KEY)]
    private_key: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SSH_PRIVATE_KEY)]

    def __post_init__(self) -> None:
        # The messages never echo the keys: the private one is a secret.
        line = self.public_key.removesuffix("\n")
        if len(line.split()) < 2 or any(c in line for c in "\r\n\x00"):
            raise ValueError("ssh_keypair.public_key: must be one line: TYPE BASE64 [COMMENT]")
        if "\x00" in self.private_key or not self.private_key.startswith("-----BEGIN "):
            raise ValueError("ssh_keypair.private_key: must be a PEM-armoured private key")


def paths_overlap(a: str, b: str) -> bool:
    """Whether absolute paths *a* and *b* are the same or one lies inside the other."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def mount_overlap(paths: Sequence[str]) -> tuple[int, int] | None:
    """Indices ``(i, j)``, ``i < j``, of two kernel paths that overlap, else None.

    Two folders at one path would hide one of them; a folder inside another
    would make the agent create its mount point inside the outer folder.
    """
    for j, later in enumerate(paths):
        for i in range(j):
            if paths_overlap(paths[i], later):
                return i, j
    return None


class Dotfile(_Args, frozen=True):
    """One file the agent writes into a kernel's ``/home/work`` before it starts.

    Guarantees once parsed: *path* is a normalised relative path that passes
    :func:`dotfile_parts` (no ``.`` or empty components), *mode* holds
    permission bits only (no set-id or sticky bits), *data* has no NUL.
    """

    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    mode: Annotated[int, msgspec.Meta(ge=0, le=0o777)]
    data: Annotated[str, msgspec.Meta(max_length=MAX_DOTFILE_SIZE)]

    def __post_init__(self) -> None:
        try:
            parts = dotfile_parts(self.path)
        except ScratchPathError as exc:
            raise ValueError(f"path: {exc.problem}: {self.path!r}") from None
        if "/".join(parts) != self.path:
            raise ValueError(f"path: must be written as {'/'.join(parts)!r}")
        if "\x00" in self.data:
            raise ValueError("data: NUL is not allowed")


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
    #: Virtual folders to mount (no two at one path or one inside another).
    mounts: Annotated[list[VFolderMount], msgspec.Meta(max_length=MAX_MOUNTS)] = msgspec.field(
        default_factory=list
    )
    #: The session owner's SSH keypair: the agent writes ``/home/work/id_container`` and
    #: ``/home/work/.ssh/authorized_keys`` from it (None: the kernel gets neither).
    ssh_keypair: SSHKeypair | None = None
    #: Files written into ``/home/work`` before the kernel starts (no two nest).
    dotfiles: Annotated[list[Dotfile], msgspec.Meta(max_length=MAX_KERNEL_DOTFILES)] = (
        msgspec.field(default_factory=list)
    )
    #: The owner's stored script, run before *bootstrap_script* (None: none).
    user_bootstrap_script: Annotated[str, msgspec.Meta(max_length=MAX_BOOTSTRAP_SCRIPT)] | None = (
        None
    )

    def __post_init__(self) -> None:
        split = [dotfile.path.split("/") for dotfile in self.dotfiles]
        for j, later in enumerate(split):
            for i in range(j):
                if paths_nest(split[i], later):
                    raise ValueError(
                        f"dotfiles[{j}].path: {self.dotfiles[j].path!r} collides with "
                        f"dotfiles[{i}].path {self.dotfiles[i].path!r}"
                    )
        for key, value in self.environ.items():
            if not _ENV_NAME.match(key):
                raise ValueError(f"environ: not an environment variable name: {key!r}")
            if "\x00" in value:
                raise ValueError(f"environ.{key}: NUL is not allowed in a value")
        clash = mount_overlap([m.kernel_path for m in self.mounts])
        if clash is not None:
            i, j = clash
            raise ValueError(
                f"mounts[{j}].kernel_path: {self.mounts[j].kernel_path!r} overlaps "
                f"mounts[{i}].kernel_path {self.mounts[i].kernel_path!r}"
            )


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


# ------------------------------------------------------------------------- replies


class ServicePortInfo(TypedDict):
    """One service port of a kernel, as its description carries it."""

    name: str
    protocol: str
    container_ports: list[int]
    host_ports: list[int]


class KernelDescription(TypedDict):
    """One kernel as ``create_kernels``, ``restart_kernel`` and ``describe_kernels`` answer it."""

    kernel_id: str
    session_id: str
    status: str
    agent_id: str
    agent_addr: str
    kernel_host: str
    image: str
    architecture: str
    repl_in: str
    repl_out: str
    service_ports: list[ServicePortInfo]
    occupied_slots: dict[str, str]
    attached_devices: dict[str, dict[str, dict[str, str]]]
    resource_opts: dict[str, Any]
    pid: int | None
    scratch_dir: str
    isolation: str


class DestroyResult(TypedDict):
    """What ``destroy_kernel`` answers once the kernel is gone."""

    kernel_id: str
    session_id: str
    reason: str
    exit_code: int | None
    last_stat: dict[str, Any] | None


class ExecutionResult(TypedDict):
    """The spec's Execution Result Object, one ``execute`` call's answer."""

    runId: str
    status: str
    exitCode: int | None
    #: ``[[stream, data], ...]``: merged ``stdout``/``stderr`` text and media records.
    console: list[list[Any]]
    options: dict[str, Any] | None


class LogsReply(TypedDict):
    """``get_logs``."""

    logs: str


class UploadedFile(TypedDict):
    """One file ``upload_file`` or ``upload_files`` wrote."""

    path: str
    size: int


class FileListing(TypedDict):
    """``list_files``: ``files`` is JSON text of the entries, ``errors`` empty if all went well."""

    files: str
    errors: str
    abspath: str


class StartServiceReply(TypedDict):
    """``start_service``."""

    status: str | None
    error: str | None
    ports: list[int]


class ShutdownServiceReply(TypedDict):
    """``shutdown_service``."""

    status: str | None


class HardwareStatus(TypedDict):
    """One compute plugin of ``gather_hwinfo``."""

    status: str
    status_info: str
    metadata: dict[str, Any]


class SyncReply(TypedDict):
    """``sync_kernel_registry``: kernel ids by what the agent did about them."""

    missing: list[str]
    unknown: list[str]
    terminated: list[str]
