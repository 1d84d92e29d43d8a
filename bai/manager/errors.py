"""The manager's errors that cross services: what any of them may raise about an agent.

Raised by the agent pool's calls and caught by the session services and the
dispatcher, so they live below all of them.  Each carries the HTTP status and
problem type the API answers it with.
"""

from __future__ import annotations

from bai.common.errors import BaiError

__all__ = ["AgentNotFound", "AgentUnavailable"]


class AgentNotFound(BaiError, LookupError):
    """No agent with that id is registered."""

    http_status = 404
    error_type = "agent-not-found"


class AgentUnavailable(BaiError):
    """The agent cannot be reached: not alive, not answering in time, or the connection broke."""

    http_status = 503
    error_type = "agent-unavailable"
