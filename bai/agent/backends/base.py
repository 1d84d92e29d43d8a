"""The kernel backend interface: how an agent makes, finds and removes kernels.

A backend owns the machinery under a kernel (a process tree in cgroups for
:mod:`bai.agent.backends.local`, a container for a Docker backend) and nothing
else: the agent's kernel supervisor (:mod:`bai.agent.supervisor`) keeps the
kernel store, allocations, runner links, runs and events, and calls the
backend for the steps below.  Every method
that can wait does so under the caller's deadline and may be cancelled;
:meth:`KernelBackend.terminate` and :meth:`KernelBackend.cleanup` are called
in shielded scopes with their own bounds.

Life of a kernel, as the supervisor drives it::

    await backend.prepare(record, launch)   # dirs, cgroups, argv/env -> record
    process = await backend.spawn(record)   # record.pid set
    ...                                      # (the supervisor dials the runner)
    code = await process.wait()              # the kernel ended, by itself or by:
    await backend.terminate(record, process, grace=...)
    await backend.cleanup(record)            # nothing of the kernel remains

After an agent restart, :meth:`KernelBackend.adopt` turns a kernel store record
back into a :class:`KernelProcess` when the kernel survived, and
:meth:`KernelBackend.sweep` removes what no record names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

from bai.agent.cgroups import CgroupLimits, CgroupUsage
from bai.agent.images import Image
from bai.agent.kernel_store import KernelRecord
from bai.common.agent_api import Dotfile, SSHKeypair, VFolderMount
from bai.common.errors import BaiError
from bai.kernel.protocol import DEFAULT_BOOTSTRAP_TIMEOUT

#: The bootstrap script's file name in the kernel's ``/home/work``.
BOOTSTRAP_NAME: Final = "bootstrap.sh"


class BackendError(BaiError):
    """The backend could not prepare, start or remove a kernel; the message says why."""


@dataclass(frozen=True)
class KernelLaunch:
    """What the agent planned for a kernel before the backend makes it (:mod:`bai.agent.launch`)."""

    image: Image
    #: The kernel's environment, complete except for what the backend itself adds.
    environ: Mapping[str, str]
    limits: CgroupLimits
    #: The ``ai.backend.service-ports`` label with each port mapped to its host port.
    service_ports_label: str = ""
    #: The kernel's host name inside its sandbox (its cluster hostname).
    hostname: str = ""
    #: Host names of the session's kernels started with this one on this agent.
    peers: tuple[str, ...] = ()
    #: The shell script the runner runs before it serves (``bootstrap.sh`` in the
    #: kernel's ``/home/work``), and its time limit in seconds.
    bootstrap_script: str | None = None
    bootstrap_timeout: float = DEFAULT_BOOTSTRAP_TIMEOUT
    #: Virtual folders bound into the kernel (checked by ``KernelConfig``: no two overlap).
    mounts: tuple[VFolderMount, ...] = ()
    #: The session owner's SSH keypair, written into the scratch folder (:mod:`bai.agent.sshkeys`).
    ssh_keypair: SSHKeypair | None = None
    #: Files written into the scratch folder before the kernel starts (:mod:`bai.agent.dotfiles`).
    dotfiles: tuple[Dotfile, ...] = ()
    #: Bytes of the kernel's ``/dev/shm``, where the sandbox can bound it; None: no bound.
    shmem: int | None = None


class KernelProcess(ABC):
    """The top process of a kernel, started by this agent or found again after a restart."""

    pid: int

    @abstractmethod
    async def wait(self) -> int | None:
        """Wait for the kernel's top process to end; its exit code when known.

        An exit by signal N gives ``128 + N``; a process this agent did not
        start (found again after a restart) gives None.
        """

    @abstractmethod
    def alive(self) -> bool:
        """Whether the process has not ended yet."""


class KernelBackend(ABC):
    """See the module docstring."""

    #: ``"local"`` or ``"docker"``.
    name: str
    #: The uid and gid kernels run as (None: the agent's own); set by :meth:`init`.
    kernel_owner: tuple[int, int] | None = None

    @property
    def isolates_network(self) -> bool:
        """Whether kernels have a network of their own, reached through :meth:`connect_port`.

        When true the agent forwards each service port's host port into the
        kernel; when false the service listens on the host port itself.
        """
        return False

    async def connect_port(self, record: KernelRecord, port: int) -> trio.SocketStream:
        """A connection to *port* inside the kernel's network (see :attr:`isolates_network`)."""
        raise NotImplementedError(f"the {self.name} backend shares the host's network")

    @abstractmethod
    async def init(self) -> None:
        """Probe the host (cgroups, sandboxing); log once what isolation kernels get."""

    @abstractmethod
    def describe(self) -> dict[str, object]:
        """What kernels get on this host (for hwinfo and the start-up log)."""

    @abstractmethod
    async def prepare(self, record: KernelRecord, launch: KernelLaunch) -> None:
        """Create the kernel's directories and cgroups and fill in *record*'s paths and argv.

        Raises :class:`BackendError`; what was made before the failure is
        named in *record*, so :meth:`cleanup` removes it.
        """

    @abstractmethod
    async def spawn(self, record: KernelRecord) -> KernelProcess:
        """Start the kernel runner as *record* describes; sets ``record.pid``."""

    @abstractmethod
    async def adopt(self, record: KernelRecord) -> KernelProcess | None:
        """The kernel's process if it still runs (after an agent restart), else None."""

    @abstractmethod
    async def terminate(
        self, record: KernelRecord, process: KernelProcess | None, *, grace: float
    ) -> None:
        """Stop every process of the kernel: SIGTERM, then SIGKILL after *grace* seconds."""

    @abstractmethod
    async def cleanup(self, record: KernelRecord) -> None:
        """Remove the kernel's cgroups, sockets and scratch directory (idempotent)."""

    @abstractmethod
    async def usage(self, records: Collection[KernelRecord]) -> dict[str, CgroupUsage]:
        """Resource usage by kernel id (kernels the host cannot measure are left out)."""

    @abstractmethod
    async def sweep(self, known: Collection[str]) -> list[str]:
        """Kill and remove kernel cgroups/containers no record names; returns their names."""

    @abstractmethod
    def scratch_dir(self, record: KernelRecord) -> Path:
        """The host directory that is the kernel's ``/home/work``."""

    @abstractmethod
    async def shutdown(self) -> None:
        """Release the backend's own host state (its parent cgroup) once no kernel is left."""
