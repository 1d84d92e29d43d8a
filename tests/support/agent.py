"""Shared harness of the agent integration tests: a real agent, its RPC client, its events.

Imported by the ``test_agent_*`` modules (it holds no tests itself).  Each
agent gets its own folders, a short ``ipc://`` socket folder under ``/tmp``,
the repository's image catalog, only the intrinsic cpu and mem plugins, and
an in-process event bus whose events :class:`Events` records.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from bai.agent.server import AgentService
from bai.common.config import AgentConfig, parse_config
from bai.common.events import Event, InProcEventBus
from bai.common.rpc import RPCClient

from support.net import agent_port_range

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "configs" / "images.toml"


#: Kernel code making, in /home/work, everything but a regular file or a folder
#: (format it with ``outside``, a folder outside the kernel).
HOSTILE_FILES = """
import os, socket
os.mkfifo('fifo')
socket.socket(socket.AF_UNIX).bind('sock')
os.symlink('/etc/shadow', 'shadow')
os.symlink({outside!r}, 'outside')
"""
#: What each file HOSTILE_FILES makes is, as the agent's refusals say.
HOSTILE_KINDS = {
    "fifo": "a FIFO (named pipe)",
    "sock": "a socket",
    "shadow": "a symbolic link",
    "outside": "a symbolic link",
}


#: ``[container]`` lines that run kernels as root: without a sandbox the kernel user
#: runs this venv's Python at its host path, which may be under root's home here,
#: where no other user may enter.
AS_ROOT = "kernel-uid = 0\nkernel-gid = 0"


def agent_config(
    tmp_path: Path, *, catalog: Path = CATALOG, extra: str = "", container: str = ""
) -> AgentConfig:
    """A test agent's config: private folders, its worker's ports (:func:`agent_port_range`),
    1 s heartbeats, all cores and most memory.

    *container* adds lines to its ``[container]`` section, *extra* whole sections.
    """
    tag = uuid.uuid4().hex[:8]
    low, high = agent_port_range()
    return parse_config(
        AgentConfig,
        f"""
[agent]
id = "i-test-{tag}"
var-base-path = "{tmp_path}/var"
ipc-base-path = "/tmp/bai-t-{tag}"
heartbeat-interval = "1s"
image-catalog = "{catalog}"
allow-compute-plugins = []
[container]
scratch-root = "{tmp_path}/scratch"
port-range = [{low}, {high}]
{container}
[resource]
reserved-cpu = 0
reserved-mem = "512m"
{extra}
""",
    )


@dataclass
class Events:
    """Every event published on a bus since the harness started (:meth:`record` fills it)."""

    seen: list[Event] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)
    #: Seconds :meth:`wait_for` waits unless told otherwise.
    patience: float = 10.0

    async def record(self, subscription: AsyncIterator[Event]) -> None:
        """Keep every event of *subscription*, waking :meth:`wait_for`."""
        async for event in subscription:
            self.seen.append(event)
            self.changed.set()

    async def wait_for(
        self, predicate: Callable[[Event], bool], within: float | None = None
    ) -> Event:
        """The first event (already seen or yet to come) matching *predicate*."""
        with trio.fail_after(self.patience if within is None else within):
            while True:
                for event in self.seen:
                    if predicate(event):
                        return event
                self.changed = trio.Event()
                await self.changed.wait()

    def names_of(self, session_id: uuid.UUID) -> list[str]:
        """The names of the events seen about session *session_id*, in order."""
        return [e.name for e in self.seen if getattr(e, "session_id", None) == session_id]

    def of_kernel(self, kernel_id: str) -> list[Event]:
        return [e for e in self.seen if str(getattr(e, "kernel_id", "")) == kernel_id]


@dataclass
class Harness:
    agent: AgentService
    client: RPCClient
    events: Events
    bus: InProcEventBus

    async def create(self, image: str = "python", **config: Any) -> dict[str, Any]:
        """Create one kernel (its own session); returns its create_kernels result."""
        kernel = {"kernel_id": str(uuid.uuid4()), "image": image, **config}
        results = await self.client.call(
            "create_kernels", {"session_id": str(uuid.uuid4()), "kernels": [kernel]}, timeout=60
        )
        result: dict[str, Any] = results[0]
        return result

    async def run(
        self,
        kernel_id: str,
        code: str,
        *,
        mode: str = "query",
        run_id: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """One execute call."""
        result: dict[str, Any] = await self.client.call(
            "execute",
            {
                "kernel_id": kernel_id,
                "run_id": run_id or uuid.uuid4().hex[:12],
                "mode": mode,
                "code": code,
                **extra,
            },
            timeout=60,
        )
        return result

    async def output(self, kernel_id: str, code: str) -> str:
        """Run *code* to the end in query mode; its stdout (stderr when there is none)."""
        run_id = uuid.uuid4().hex[:12]
        result = await self.run(kernel_id, code, run_id=run_id)
        console = list(result["console"])
        while result["status"] == "continued":
            result = await self.run(kernel_id, "", mode="continue", run_id=run_id)
            console += result["console"]
        assert result["status"] == "finished", result
        out = "".join(text for kind, text in console if kind == "stdout")
        return out or "".join(text for kind, text in console if kind == "stderr")


@asynccontextmanager
async def running_agent(
    config: AgentConfig, *, bus: InProcEventBus | None = None, **options: Any
) -> AsyncIterator[Harness]:
    """Run an agent in a nursery of its own for the ``async with`` block, then stop it.

    *bus* replaces the fresh in-process bus the agent gets otherwise.
    """
    bus = bus or InProcEventBus()
    events = Events()
    options.setdefault("stats_interval", 0.5)
    agent = AgentService(
        config, event_bus=bus, rpc_listen_addr=f"inproc://agent-{uuid.uuid4().hex}", **options
    )
    try:
        async with (
            trio.open_nursery() as nursery,
            bus.subscribe(buffer_size=100_000) as subscription,
        ):
            nursery.start_soon(events.record, subscription)
            urls = await nursery.start(agent.serve)
            async with RPCClient(urls[0], timeout=30) as client:
                yield Harness(agent, client, events, bus)
            nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(config.agent.ipc_base_path, ignore_errors=True)


def alive(pid: int) -> bool:
    """Whether *pid* is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def cgroup_pids(paths: dict[str, str]) -> set[int]:
    """Host pids in a kernel's cgroups."""
    pids: set[int] = set()
    for path in set(paths.values()):
        try:
            pids |= {int(p) for p in Path(path, "cgroup.procs").read_text().split()}
        except OSError:
            continue
    return pids


def session_pids(sid: int) -> set[int]:
    """Live processes of session *sid*."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == sid and fields[0] != b"Z":
                found.add(int(entry))
    return found


def exists(*paths: str | Path) -> bool:
    """Whether any of *paths* exists (a blocking check, kept out of the async tests)."""
    return any(Path(p).exists() for p in paths)


def entries(folder: Path) -> list[str]:
    """Names in *folder*."""
    return sorted(p.name for p in folder.iterdir())


def read(path: str | Path) -> str:
    return Path(path).read_text()


def fake_runner(folder: Path, name: str, script: str) -> Path:
    """A stand-in for the runner's Python: *script* as an executable the kernel user can run.

    The sandbox binds its folder read-only where it is; the kernel user needs
    to enter that folder, which pytest makes for root alone.
    """
    folder.chmod(0o755)
    runner = folder / name
    runner.write_text(script)
    runner.chmod(0o755)
    return runner


def is_root() -> bool:
    return os.geteuid() == 0
