"""The agent's host ports for kernels' service ports.

:class:`PortPool` hands out ports of ``[container] port-range``, never one
twice, and only ports that can be bound on the host at that moment.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from bai.agent.errors import InsufficientPorts


class PortPool:
    """Host ports for service ports, from ``[container] port-range``; never hands one out twice.

    A port is handed out only when it can be bound on *host*.  With *hold* the
    pool keeps that bound socket until :meth:`take` or :meth:`release`, so
    no other process (another agent on the host, say) gets the port between
    its allocation and the agent's own listener on it.
    """

    def __init__(self, low: int, high: int, host: str = "127.0.0.1") -> None:
        self._low = low
        self._high = high
        self._host = host
        self._used: set[int] = set()
        self._held: dict[int, socket.socket] = {}
        self._next = low

    def claim(self, ports: Sequence[int]) -> None:
        """Mark *ports* taken (kernels found again after a restart)."""
        self._used.update(ports)

    def release(self, ports: Sequence[int]) -> None:
        for port in ports:
            held = self._held.pop(port, None)
            if held is not None:
                held.close()
        self._used.difference_update(ports)

    def take(self, port: int) -> socket.socket | None:
        """The socket bound to *port* since its allocation (None if none is held)."""
        return self._held.pop(port, None)

    def allocate(self, count: int, *, hold: bool = False) -> list[int]:
        """*count* free ports that nothing on the host listens on; raises InsufficientPorts."""
        chosen: dict[int, socket.socket] = {}
        size = self._high - self._low + 1
        for _ in range(size):
            if len(chosen) == count:
                break
            port = self._next
            self._next = self._low + (self._next - self._low + 1) % size
            if port in self._used:
                continue
            bound = self._bind(port)
            if bound is not None:
                chosen[port] = bound
        if len(chosen) < count:
            for bound in chosen.values():
                bound.close()
            raise InsufficientPorts(f"no {count} free ports left in {self._low}-{self._high}")
        for port, bound in chosen.items():
            if hold:
                self._held[port] = bound
            else:
                bound.close()
        self._used.update(chosen)
        return list(chosen)

    def _bind(self, port: int) -> socket.socket | None:
        # No SO_REUSEADDR: with it two unlistened sockets may share a port.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((self._host, port))
        except OSError:
            sock.close()
            return None
        return sock
