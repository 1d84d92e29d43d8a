"""Host processes of local kernels: finding, signalling and measuring them through ``/proc``.

A local kernel is a process tree whose top process leads its own session.
:class:`ChildProcess` is such a process this agent started (its exit code is
known); :class:`AdoptedProcess` one found again after an agent restart, by pid
and start time (:func:`start_time`), so that a recycled pid is never taken
for the kernel.  The other functions read ``/proc`` for a process's children,
the members of a session and a process's resource use, for hosts where
kernels get no cgroups.  None of them raises for a process that is gone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection
from pathlib import Path

import trio

from bai.agent.backends.base import KernelProcess


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks after boot (``/proc/PID/stat`` field 22)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    try:
        return int(fields[19]) if fields[0] != b"Z" else None
    except (ValueError, IndexError):
        return None


def children(pid: int) -> list[int]:
    """The pids of *pid*'s children (none when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def signal_group(pgid: int, signum: int) -> None:
    """Send *signum* to process group *pgid*, if it still exists and may be signalled."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def session_members(sids: Collection[int]) -> dict[int, list[int]]:
    """Live processes of each session in *sids* (a scan of /proc)."""
    found: dict[int, list[int]] = {sid: [] for sid in sids}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 3 and fields[0] != b"Z":
            sid = int(fields[3])
            if sid in found:
                found[sid].append(int(entry.name))
    return found


class ChildProcess(KernelProcess):
    """A kernel process this agent started (its exit code is known)."""

    def __init__(self, process: trio.Process) -> None:
        self._process = process
        self.pid = process.pid

    async def wait(self) -> int | None:
        code = await self._process.wait()
        return 128 - code if code < 0 else code

    def alive(self) -> bool:
        return self._process.poll() is None


class AdoptedProcess(KernelProcess):
    """A kernel process found again after an agent restart, watched through a pidfd.

    Any number of tasks may wait at once (the supervisor and a destroy, say):
    each waits on a duplicate of the pidfd, since Trio lets one task wait on
    one descriptor.
    """

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self._pidfd: int | None = pidfd

    async def wait(self) -> int | None:
        if self._pidfd is not None:
            fd = os.dup(self._pidfd)
            try:
                await trio.lowlevel.wait_readable(fd)
            finally:
                os.close(fd)
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
        return None

    def alive(self) -> bool:
        return self._pidfd is not None and start_time(self.pid) is not None


def proc_usage(pid: int) -> tuple[int, int, int, int]:
    """CPU ticks, resident pages, bytes read and written of one process (zeros if gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        cpu = int(fields[11]) + int(fields[12])
        rss = int(fields[21])
    except (OSError, IndexError, ValueError):
        return 0, 0, 0, 0
    reads = writes = 0
    try:
        with open(f"/proc/{pid}/io", "rb") as f:
            for line in f:
                key, _, value = line.partition(b":")
                if key == b"read_bytes":
                    reads = int(value)
                elif key == b"write_bytes":
                    writes = int(value)
    except (OSError, ValueError):
        pass
    return cpu, rss, reads, writes
