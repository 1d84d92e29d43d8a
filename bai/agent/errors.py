"""The agent's own errors.

Each class's name is the ``type`` of the RPC error envelope the manager gets
(:class:`~bai.common.agent_api.AgentErrorType` lists them), except
:class:`KernelStartFailed`, which never leaves the agent: the kernel
supervisor turns it into the reason a kernel ended.
"""

from __future__ import annotations

from collections.abc import Mapping

from bai.common.errors import BaiError


class KernelNotFound(BaiError):
    """No kernel with that id runs on this agent."""


class KernelAlreadyExists(BaiError):
    """create_kernels named a kernel id this agent already has."""


class KernelNotRunning(BaiError):
    """The kernel exists but is not RUNNING (starting, restarting or terminating)."""


class KernelCreationFailed(BaiError):
    """Some kernel of a create_kernels call did not start; none of them is left running."""

    def __init__(
        self, message: str, failures: Mapping[str, str], reasons: Mapping[str, str]
    ) -> None:
        super().__init__(message)
        self.detail = {"kernels": dict(failures), "reasons": dict(reasons)}


class InsufficientPorts(BaiError):
    """The agent's port range has no room for a kernel's service ports."""


class KernelStartFailed(BaiError):
    """Internal: a kernel could not be started (or restarted or re-adopted)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
