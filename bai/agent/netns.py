"""Network namespaces for local kernels: made, pinned to a file, entered to connect.

Each session gets one network namespace on each agent it runs on, shared by
its kernels there, holding only a loopback interface: nothing on the host's
loopback (the manager, Redis, PostgreSQL, the agent's RPC) or its other
interfaces is reachable from inside.  The namespace is pinned by a bind mount
of its ``nsfs`` handle on a file, so it outlives any one kernel process (a
kernel restart finds it again, and so does an agent that restarted) and ends
only when :func:`remove` unpins it and its last process is gone.

Kernels join it through ``nsenter --net=FILE``; the agent reaches a service
inside by creating a socket in the namespace (:func:`socket_in`), since a
socket keeps the namespace it was made in.  Every namespace switch happens in
a thread of its own that ends right after, so no thread ever returns to a
pool in a kernel's namespace.

All of it needs root (``CAP_SYS_ADMIN``): :func:`probe` says whether this
host allows it.  The functions block; call them through ``trio.to_thread``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from bai.agent.syscalls import CLONE_NEWNET, MS_BIND, mount, setns, unmount, unshare

_T = TypeVar("_T")

_SIOCGIFFLAGS: Final = 0x8913
_SIOCSIFFLAGS: Final = 0x8914
_IFF_UP: Final = 0x1
#: ``struct ifreq``: a 16-byte interface name, then a union whose first member is the flags.
_IFREQ: Final = struct.Struct("16sh22x")


def _in_own_thread(fn: Callable[[], _T]) -> _T:
    """Run *fn* in a new thread and return its result (or raise its exception)."""
    outcome: list[_T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            outcome.append(fn())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=body, name="bai-netns", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = _IFREQ.pack(b"lo", 0)
        flags = _IFREQ.unpack(fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))


def create(path: Path) -> None:
    """Make a namespace with loopback up and pin it at *path* (nothing is left on failure)."""
    path.touch(mode=0o600, exist_ok=False)

    def make() -> None:
        unshare(CLONE_NEWNET)
        _loopback_up()
        mount(f"/proc/self/task/{threading.get_native_id()}/ns/net", path, None, MS_BIND)

    try:
        _in_own_thread(make)
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise


def ensure(path: Path) -> None:
    """Pin a new namespace at *path* unless one is pinned there already."""
    if not os.path.ismount(path):
        remove(path)
        create(path)


def remove(path: Path) -> None:
    """Unpin the namespace at *path*; it ends when its last process does.  Idempotent."""
    unmount(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def socket_in(path: Path) -> socket.socket:
    """A new non-blocking TCP/IPv4 socket that lives in the namespace pinned at *path*."""

    def make() -> socket.socket:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(fd, CLONE_NEWNET)
        finally:
            os.close(fd)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        return sock

    return _in_own_thread(make)


def probe(folder: Path) -> str:
    """Why this host cannot give kernels namespaces of their own ('' when it can)."""
    if os.geteuid() != 0:
        return "the agent does not run as root"
    trial = folder / f".probe-{os.getpid()}"
    try:
        create(trial)
        socket_in(trial).close()
        remove(trial)
    except OSError as exc:
        with contextlib.suppress(OSError):
            remove(trial)
        return str(exc)
    return ""
