"""The private networks of a local agent's sessions: one namespace per session with kernels here.

A session's network is made when its first kernel on this agent is prepared
(or re-adopted) and removed when its last one is cleaned up, so its kernels
share a loopback (a multi-kernel session reaches its peers by host name) and
no two sessions share anything.  In ``outbound`` mode each network also gets
a ``slirp4netns`` user-mode stack: the kernels reach the outside through the
agent's own connections, never the host's loopback.  That process is tied to
the agent by an exit pipe: it ends when the network is removed or the agent
dies, and a restarted agent starts a new one for each re-adopted session.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import trio

from bai.agent import netns

log = logging.getLogger(__name__)

KernelNetwork = Literal["private", "outbound"]
#: The DNS forwarder slirp4netns answers on inside the namespace.
SLIRP_DNS: Final = "10.0.2.3"
_SLIRP_READY_TIMEOUT: Final = 10.0
_SLIRP_STOP_TIMEOUT: Final = 5.0


@dataclass
class _Outbound:
    process: trio.Process
    #: Closing it tells slirp4netns to exit.
    exit_fd: int


class SessionNetworks:
    """The pinned namespaces under *root*, by session id (see the module docstring)."""

    def __init__(self, root: Path, mode: KernelNetwork, slirp4netns: str | None) -> None:
        self.root = root
        self.mode = mode
        self._slirp4netns = slirp4netns
        self._members: dict[str, set[str]] = {}
        self._outbound: dict[str, _Outbound] = {}
        #: One lock per session, so sessions get their networks in parallel.
        self._locks: dict[str, trio.Lock] = {}

    def path(self, session_id: str) -> Path:
        """Where the session's namespace is pinned."""
        return self.root / session_id

    async def join(self, session_id: str, kernel_id: str) -> None:
        """Count *kernel_id* in its session, making the session's network if it has none."""
        self._members.setdefault(session_id, set()).add(kernel_id)
        async with self._locks.setdefault(session_id, trio.Lock()):
            pinned = self.path(session_id)
            await trio.to_thread.run_sync(netns.ensure, pinned)
            if self.mode == "outbound" and session_id not in self._outbound:
                self._outbound[session_id] = await self._start_slirp(pinned)

    async def leave(self, session_id: str, kernel_id: str) -> None:
        """Stop counting *kernel_id*; the session's last kernel takes its network with it."""
        members = self._members.get(session_id)
        if members is None:
            return
        members.discard(kernel_id)
        if members:
            return
        del self._members[session_id]
        lock = self._locks.setdefault(session_id, trio.Lock())
        async with lock:
            outbound = self._outbound.pop(session_id, None)
            if outbound is not None:
                await _stop_slirp(outbound)
            await trio.to_thread.run_sync(netns.remove, self.path(session_id))
        if session_id not in self._members and not lock.statistics().tasks_waiting:
            self._locks.pop(session_id, None)

    async def connect(self, session_id: str, port: int) -> trio.SocketStream:
        """A connection to *port* on the session network's loopback."""
        sock = await trio.to_thread.run_sync(netns.socket_in, self.path(session_id))
        stream_socket = trio.socket.from_stdlib_socket(sock)
        try:
            await stream_socket.connect(("127.0.0.1", port))
        except BaseException:
            stream_socket.close()
            raise
        return trio.SocketStream(stream_socket)

    def sweep(self) -> None:
        """Remove the pinned namespaces of sessions with no kernel here (blocking)."""
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.root):
                if entry.name not in self._members:
                    with contextlib.suppress(OSError):
                        netns.remove(Path(entry.path))

    async def _start_slirp(self, pinned: Path) -> _Outbound:
        assert self._slirp4netns is not None
        exit_read, exit_write = os.pipe()
        ready_read, ready_write = os.pipe()
        argv = [
            self._slirp4netns,
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--netns-type=path",
            f"--exit-fd={exit_read}",
            f"--ready-fd={ready_write}",
            str(pinned),
            "tap0",
        ]
        try:
            process = await trio.lowlevel.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(exit_read, ready_write),
            )
        except OSError:
            for fd in (exit_read, exit_write, ready_read, ready_write):
                os.close(fd)
            raise
        os.close(exit_read)
        os.close(ready_write)
        outbound = _Outbound(process, exit_write)
        ready = trio.lowlevel.FdStream(ready_read)
        try:
            with trio.fail_after(_SLIRP_READY_TIMEOUT):
                if not await ready.receive_some(1):
                    raise OSError(f"slirp4netns exited with code {await process.wait()}")
        except BaseException:
            with trio.CancelScope(shield=True):
                await _stop_slirp(outbound)
            raise
        finally:
            await ready.aclose()
        return outbound

    async def aclose(self) -> None:
        """Stop every outbound stack (the namespaces stay for a restarted agent)."""
        while self._outbound:
            _, outbound = self._outbound.popitem()
            await _stop_slirp(outbound)


async def _stop_slirp(outbound: _Outbound) -> None:
    with contextlib.suppress(OSError):
        os.close(outbound.exit_fd)
    with trio.move_on_after(_SLIRP_STOP_TIMEOUT):
        await outbound.process.wait()
        return
    log.warning("slirp4netns (pid %d) ignored its exit pipe; killing it", outbound.process.pid)
    outbound.process.kill()
    await outbound.process.wait()
