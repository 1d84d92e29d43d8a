"""The agent's kernel store on disk: what it needs to find its kernels after a restart.

One JSON file per kernel (``<var-base-path>/kernels/<kernel-id>.json``),
replaced atomically (write to a temporary file, then ``rename``) on every
change, so a ``kill -9`` of the agent at any moment leaves each file either in
its old or its new state, never torn.  A record is written *before* the
kernel's process or cgroup exists and removed only after both are gone, so
every process or cgroup the agent ever made is named by some record.  The
folder is the agent user's only (0700, records 0600): a record holds the
runner's environment, which carries the variables the session was created
with.

:meth:`KernelStore.load` reads every record back; a file that does not
parse (a disk error, a hand edit) is renamed to ``*.corrupt`` and reported,
never fatal.  All methods do blocking file I/O: call them through
``trio.to_thread.run_sync`` from async code.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import msgspec

from bai.common.agent_api import VFolderMount
from bai.common.daemon import private_dir

log = logging.getLogger(__name__)


class KernelRecord(msgspec.Struct, kw_only=True):
    """Everything the agent must remember about one kernel across its own restarts."""

    kernel_id: str
    session_id: str
    #: ``PREPARING``, ``CREATING``, ``RUNNING`` or ``TERMINATING`` (kernel status names).
    status: str
    created_at: float
    image: str
    architecture: str
    runtime_type: str
    cluster_role: str = "main"
    cluster_idx: int = 1
    cluster_hostname: str = "main1"
    local_rank: int = 0
    #: Occupied slots (``ResourceSlot.to_json``) and the allocation by device name.
    occupied_slots: dict[str, str] = msgspec.field(default_factory=dict)
    allocations: dict[str, dict[str, dict[str, str]]] = msgspec.field(default_factory=dict)
    resource_opts: dict[str, Any] = msgspec.field(default_factory=dict)
    #: The runner's command line and environment, kept so a restart can spawn it again.
    argv: list[str] = msgspec.field(default_factory=list)
    environ: dict[str, str] = msgspec.field(default_factory=dict)
    scratch_dir: str = ""
    work_dir: str = ""
    sock_dir: str = ""
    input_addr: str = ""
    output_addr: str = ""
    log_path: str = ""
    #: Controller -> cgroup directory; empty when the host gives kernels no cgroups.
    cgroup: dict[str, str] = msgspec.field(default_factory=dict)
    #: Host pid of the kernel's top process, with its start time (clock ticks after boot)
    #: so that a recycled pid is never taken for the kernel.
    pid: int | None = None
    pid_start: int | None = None
    #: ``[{"name", "protocol", "container_ports", "host_ports"}]``.
    service_ports: list[dict[str, Any]] = msgspec.field(default_factory=list)
    isolation: str = ""
    #: Whether the runner runs a bootstrap script before it serves (at each start).
    bootstrap: bool = False
    #: The virtual folders bound into the kernel; the backend checks them before each start.
    mounts: list[VFolderMount] = msgspec.field(default_factory=list)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(KernelRecord)


class KernelStore:
    """The folder of kernel records (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def prepare(self) -> None:
        """Create the folder (and its parents); it and the records become the agent user's only."""
        private_dir(self.directory)

    def _path(self, kernel_id: str) -> Path:
        return self.directory / f"{kernel_id}.json"

    @staticmethod
    def encode(record: KernelRecord) -> bytes:
        """The file contents for *record* (cheap; do it where the record is owned)."""
        return _encoder.encode(record)

    def save(self, record: KernelRecord) -> None:
        """Write *record* atomically, replacing any earlier version."""
        self.write(record.kernel_id, self.encode(record))

    def write(self, kernel_id: str, data: bytes) -> None:
        """Write the output of :meth:`encode` for *kernel_id* atomically."""
        path = self._path(kernel_id)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def remove(self, kernel_id: str) -> None:
        """Forget a kernel (no error if it was never saved)."""
        with contextlib.suppress(FileNotFoundError):
            self._path(kernel_id).unlink()

    def load(self) -> list[KernelRecord]:
        """Every readable record; unreadable ones are set aside as ``*.corrupt``."""
        records: list[KernelRecord] = []
        try:
            entries = sorted(self.directory.iterdir())
        except FileNotFoundError:
            return records
        for path in entries:
            if path.suffix == ".tmp":
                # A write that never reached its rename: the previous version (if any) stands.
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            if path.suffix != ".json":
                continue
            try:
                record = _decoder.decode(path.read_bytes())
                if record.kernel_id != path.stem:
                    raise msgspec.ValidationError(f"file names kernel {record.kernel_id}")
            except (OSError, msgspec.DecodeError) as exc:
                log.error("kernel store entry %s is unreadable (%s); set aside", path, exc)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".corrupt"))
                continue
            records.append(record)
        return records
