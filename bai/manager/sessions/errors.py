"""The errors the session services raise, each a :class:`~bai.common.errors.BaiError`.

Each has an ``http_status`` and a kebab-case ``error_type`` class attribute,
which the API turns into its problem answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from bai.common.errors import BaiError, InvalidValue
from bai.manager import transitions
from bai.manager.sessions.model import SessionInfo

__all__ = [
    "AgentError",
    "ImageNotFound",
    "InvalidSessionRequest",
    "KernelFileError",
    "QuotaExceeded",
    "ResourceGroupNotAllowed",
    "ResourceLimitExceeded",
    "SessionAlreadyExists",
    "SessionBusy",
    "SessionFileTooLarge",
    "SessionNotFound",
    "SessionNotRunning",
    "TooManySessionsMatched",
]


class SessionNotFound(transitions.SessionNotFound):
    """No session matches the given id or name (for this owner)."""

    http_status = 404
    error_type = "session-not-found"


class TooManySessionsMatched(BaiError):
    """A name or id prefix matches several sessions; ``matches`` lists them."""

    http_status = 400
    error_type = "too-many-sessions-matched"
    error_title = "Too many sessions matched."

    def __init__(self, message: str, matches: Sequence[SessionInfo]) -> None:
        super().__init__(message)
        self.matches = tuple(matches)

    @property
    def extra_data(self) -> dict[str, Any]:
        """What the official client reads from the problem's ``data``."""
        return {"matches": [match.match_json() for match in self.matches]}


class SessionAlreadyExists(BaiError):
    """The owner already has an active session of that name; ``session_id`` is its id."""

    http_status = 409
    error_type = "session-already-exists"
    error_title = "The session already exists."

    def __init__(self, message: str, session_id: uuid.UUID) -> None:
        super().__init__(message)
        self.session_id = session_id

    @property
    def extra_data(self) -> dict[str, Any]:
        """What the official client reads from the problem's ``data``."""
        return {"existingSessionId": str(self.session_id)}


class InvalidSessionRequest(InvalidValue):
    """A request parameter is malformed or not allowed; ``field`` names it."""

    http_status = 400
    error_type = "invalid-api-params"


class ImageNotFound(InvalidValue):
    """No registered image has that name or alias (for that architecture)."""

    http_status = 404
    error_type = "image-not-found"


class QuotaExceeded(InvalidValue):
    """The request exceeds a resource policy (keypair, project or domain)."""

    http_status = 412
    error_type = "quota-exceeded"


class ResourceLimitExceeded(InvalidValue):
    """No agent of the resource group could ever host the request."""

    http_status = 406
    error_type = "resource-limit-exceeded"


class ResourceGroupNotAllowed(InvalidValue):
    """The owner may not use the named resource group (or may use none)."""

    http_status = 403
    error_type = "resource-group-not-allowed"


class SessionNotRunning(BaiError):
    """The operation needs a running session (or kernel) and this one is not."""

    http_status = 409
    error_type = "session-not-running"


class SessionBusy(BaiError):
    """The session is being created, restarted or terminated; retry, or destroy with ``forced``."""

    http_status = 409
    error_type = "session-busy"


class SessionFileTooLarge(InvalidValue):
    """An upload or download exceeds its size limit."""

    http_status = 413
    error_type = "file-too-large"


class KernelFileError(BaiError):
    """A file operation inside the kernel failed (missing file, not a folder, ...)."""

    http_status = 404
    error_type = "kernel-file-error"


class AgentError(BaiError):
    """The agent answered with an error the manager did not expect; the message carries it."""

    http_status = 502
    error_type = "agent-error"
