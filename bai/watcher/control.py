"""Starting, stopping and asking after the agent a watcher looks after.

:class:`ProcessControl` (``[watcher] control = "process"``) runs ``bai agent
--config FILE`` as the watcher's own child: started when the watcher starts,
stopped with SIGTERM (SIGKILL after :data:`STOP_GRACE` seconds) and always
stopped when the watcher stops, so no agent outlives its watcher.
:class:`SystemdControl` (``"systemd"``) drives the unit ``[watcher]
target-service`` with ``systemctl``, as the original watcher does; the
watcher then runs as a user allowed to.

Both answer :meth:`AgentControl.status` with systemd's words: ``active``,
``activating``, ``deactivating``, ``inactive`` or ``failed``.  Calls are
serialised: a start during a stop waits for the stop to finish.
"""

from __future__ import annotations

import abc
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

import trio

__all__ = ["STOP_GRACE", "AgentControl", "ControlError", "ProcessControl", "SystemdControl"]

log = logging.getLogger(__name__)

#: Seconds a stopping agent gets between SIGTERM and SIGKILL.
STOP_GRACE: Final = 30.0
#: Seconds one ``systemctl`` call may take.
_SYSTEMCTL_TIMEOUT: Final = 60.0


class ControlError(Exception):
    """The agent could not be started or stopped; the message says why."""


class AgentControl(abc.ABC):
    """What a watcher can do to its agent."""

    def __init__(self) -> None:
        self._lock = trio.Lock()

    @abc.abstractmethod
    async def status(self) -> str:
        """The agent's state in systemd's words (module docs)."""

    async def start(self) -> None:
        """Start the agent unless it runs; raise :class:`ControlError` if it cannot."""
        async with self._lock:
            await self._start()

    async def stop(self) -> None:
        """Stop the agent if it runs."""
        async with self._lock:
            await self._stop()

    async def restart(self) -> None:
        """Stop the agent if it runs, then start it."""
        async with self._lock:
            await self._stop()
            await self._start()

    @abc.abstractmethod
    async def _start(self) -> None: ...

    @abc.abstractmethod
    async def _stop(self) -> None: ...

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold what the control needs until cancelled (the agent process, for one)."""
        task_status.started()
        await trio.sleep_forever()


class ProcessControl(AgentControl):
    """The agent as the watcher's child process (module docs)."""

    def __init__(self, config_path: Path | None, *, command: list[str] | None = None) -> None:
        super().__init__()
        self._command = command or _agent_command(config_path)
        self._process: trio.Process | None = None
        self._nursery: trio.Nursery | None = None
        self._failed = False

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the agent, run until cancelled, then stop it (shielded, bounded)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self.start()
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                await self._stop()

    async def status(self) -> str:
        process = self._process
        if process is not None and process.returncode is None:
            return "deactivating" if self._lock.locked() else "active"
        if self._lock.locked():
            return "activating"
        return "failed" if self._failed else "inactive"

    async def _start(self) -> None:
        if self._process is not None and self._process.returncode is None:
            return
        if self._nursery is None:
            raise ControlError("the watcher is not running")
        try:
            process = await trio.lowlevel.open_process(self._command, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise ControlError(f"cannot start the agent: {exc}") from None
        self._process = process
        self._failed = False
        self._nursery.start_soon(self._reap, process)
        log.info("started the agent (pid %d)", process.pid)

    async def _reap(self, process: trio.Process) -> None:
        code = await process.wait()
        if process is self._process and code not in (0, -signal.SIGTERM):
            self._failed = True
            log.warning("the agent (pid %d) exited with %d", process.pid, code)

    async def _stop(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(STOP_GRACE):
            await process.wait()
        if process.returncode is None:
            log.warning("the agent (pid %d) ignored SIGTERM; killing it", process.pid)
            process.kill()
            await process.wait()
        log.info("stopped the agent (pid %d)", process.pid)


def _agent_command(config_path: Path | None) -> list[str]:
    command = [sys.executable, "-c", "from bai.cli.main import cli; cli()", "agent"]
    if config_path is not None:
        command += ["--config", str(config_path)]
    return command


class SystemdControl(AgentControl):
    """The agent as a systemd unit (module docs)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self._unit = unit

    async def _systemctl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        try:
            with trio.fail_after(_SYSTEMCTL_TIMEOUT):
                return await trio.run_process(
                    ["systemctl", *args, self._unit],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
        except (OSError, trio.TooSlowError) as exc:
            raise ControlError(f"systemctl {args[0]} {self._unit} failed: {exc}") from None

    async def status(self) -> str:
        done = await self._systemctl("is-active")
        return done.stdout.decode().strip() or "unknown"

    async def _start(self) -> None:
        await self._checked("start")

    async def _stop(self) -> None:
        await self._checked("stop")

    async def _checked(self, verb: str) -> None:
        done = await self._systemctl(verb)
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip()
            raise ControlError(f"systemctl {verb} {self._unit} failed: {detail}")
