"""A running session's app services: listing them, starting one, finding where it listens.

A service port is declared by the kernel's image (plus the intrinsic ``sshd``
and ``ttyd`` every kernel has) and recorded on the kernel row as
``[{name, protocol, container_ports, host_ports}]``.  Its service is started
on first use: :meth:`Services.start` asks the main kernel's agent to start it
(the runner starts the process and waits for its port), and answers where it
can be reached, the agent's ``kernel_host`` and the service's host port.

Guarantees:

* an app that is not among the session's service ports raises
  :class:`AppNotFound` (404) before any agent is called;
* a service that does not open its port within its start timeout raises
  :class:`ServiceStartFailed` (503) with the runner's reason; the kernel goes on;
* starting a service that already runs answers at once with its address.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from bai.common.agent_api import SERVICE_REPLY_MARGIN, SERVICE_SHUTDOWN_TIMEOUT, AgentMethod
from bai.common.errors import BaiError, InvalidValue
from bai.manager.sessions.errors import SessionNotRunning
from bai.manager.sessions.model import KernelInfo, SessionInfo
from bai.manager.sessions.relay import Relay

__all__ = [
    "MAX_SERVICE_ENVS",
    "SERVICE_START_TIMEOUT",
    "AppNotFound",
    "ServiceAddress",
    "ServiceStartFailed",
    "Services",
    "app_list",
]

#: Environment variables one start request may set.
MAX_SERVICE_ENVS: Final = 64
#: Seconds a service has to open its port after the kernel was asked to start it.
SERVICE_START_TIMEOUT: Final = 30.0


class AppNotFound(InvalidValue):
    """The session offers no app of that name (or no such port of it)."""

    http_status = 404
    error_type = "app-not-found"


class ServiceStartFailed(BaiError):
    """The kernel could not start the service; the message says why."""

    http_status = 503
    error_type = "service-start-failed"


@dataclass(frozen=True, slots=True)
class ServiceAddress:
    """Where a started service listens, seen from the manager."""

    app: str
    protocol: str
    host: str
    port: int
    kernel: KernelInfo


def app_list(info: SessionInfo) -> list[dict[str, Any]]:
    """The session's apps as ``GET /stream/session/:id/apps`` lists them."""
    found = []
    for service in info.service_ports:
        entry: dict[str, Any] = {
            "name": service.get("name"),
            "protocol": service.get("protocol"),
            "ports": list(service.get("container_ports") or ()),
        }
        for key in ("url_template", "allowed_arguments", "allowed_envs"):
            if key in service:
                entry[key] = service[key]
        found.append(entry)
    return found


def _find_port(info: SessionInfo, app: str, port: int | None) -> tuple[Mapping[str, Any], int]:
    """The service port *app* and the index of *port* among its container ports."""
    for service in info.service_ports:
        if service.get("name") != app:
            continue
        ports = list(service.get("container_ports") or ())
        if not ports:
            break
        if port is None:
            return service, 0
        if port in ports:
            return service, ports.index(port)
        raise AppNotFound(f"app {app!r} has no port {port} (its ports: {ports})", field="port")
    names = ", ".join(str(s.get("name")) for s in info.service_ports) or "none"
    raise AppNotFound(
        f"session {info.name} offers no app {app!r} (its apps: {names})", field="app", value=app
    )


class Services:
    """Starts and stops the app services of sessions' main kernels."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    async def start(
        self,
        info: SessionInfo,
        app: str,
        *,
        port: int | None = None,
        envs: Mapping[str, str] | None = None,
    ) -> ServiceAddress:
        """Start *app* in the session's main kernel unless it runs; where it listens."""
        service, index = _find_port(info, app, port)
        kernel = self._relay.running_main(info)
        if not kernel.kernel_host:
            raise SessionNotRunning(f"session {info.name} has no known kernel host")
        reply = await self._relay.kernel_call(
            kernel,
            AgentMethod.START_SERVICE,
            {
                "kernel_id": str(kernel.id),
                "service": app,
                "options": {"envs": dict(envs or {}), "timeout": SERVICE_START_TIMEOUT},
            },
            timeout=SERVICE_START_TIMEOUT + 2 * SERVICE_REPLY_MARGIN,
        )
        status = reply.get("status") if isinstance(reply, Mapping) else None
        if status not in ("started", "running"):
            error = reply.get("error") if isinstance(reply, Mapping) else None
            raise ServiceStartFailed(
                f"the app {app!r} of session {info.name} did not start: {error or status}"
            )
        return ServiceAddress(
            app=app,
            protocol=str(service.get("protocol")),
            host=kernel.kernel_host,
            port=int(service["host_ports"][index]),
            kernel=kernel,
        )

    async def shutdown(self, info: SessionInfo, app: str) -> str:
        """Stop *app* in the session's main kernel: ``stopped`` or ``not-running``."""
        _find_port(info, app, None)
        kernel = self._relay.running_main(info)
        reply = await self._relay.kernel_call(
            kernel,
            AgentMethod.SHUTDOWN_SERVICE,
            {"kernel_id": str(kernel.id), "service": app},
            timeout=SERVICE_SHUTDOWN_TIMEOUT + SERVICE_REPLY_MARGIN,
        )
        return str(reply.get("status")) if isinstance(reply, Mapping) else "stopped"
