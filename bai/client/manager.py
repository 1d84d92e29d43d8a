"""The manager itself: its status (freeze and unfreeze), the announcement,
scheduler operations, and the error log (``/manager/*``, ``/logs/error``).

REST calls with the paths and bodies the official client's ``Manager`` and
``ServerLog`` functions send.  Freezing (``PUT /manager/status``) puts the
manager into maintenance: routes marked "Manager status required: RUNNING"
answer 503 until it is unfrozen; with ``force_kill`` the running sessions are
terminated too.  Changing the status or the announcement needs a superadmin;
reading them needs any keypair.

Failures raise the typed :class:`~bai.client.exceptions.BackendAPIError`;
answers without the promised shape raise
:class:`~bai.client.exceptions.MalformedResponse`.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from bai.client.exceptions import MalformedResponse
from bai.client.request import APIClient
from bai.common.errors import InvalidValue

__all__ = ["SCHEDULER_OPS", "Announcement", "ErrorLog", "ErrorLogPage", "Manager"]

#: The scheduler operations the spec names (``args``: a list of agent ids).
SCHEDULER_OPS: Final = ("include-agents", "exclude-agents")


def _object(data: Any, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise MalformedResponse("is not a JSON object", value=data, field=what)
    return data


@dataclass(frozen=True, slots=True)
class Announcement:
    """The message every client shows while ``enabled``."""

    enabled: bool
    message: str


class Manager:
    """``/manager/status``, ``/manager/announcement``, ``/manager/scheduler/operation``."""

    @classmethod
    async def status(cls, api: APIClient) -> dict[str, Any]:
        """The manager's status: ``status`` (``running`` or ``frozen``), ``nodes``,
        ``active_sessions``."""
        data = _object(await api.fetch_json("GET", "/manager/status"), "/manager/status")
        if not isinstance(data.get("status"), str):
            raise MalformedResponse("has no status", value=data, field="/manager/status")
        return data

    @classmethod
    async def freeze(cls, api: APIClient, *, force_kill: bool = False) -> None:
        """Enter maintenance: no new sessions (and, with *force_kill*, none left running)."""
        await api.fetch_json(
            "PUT", "/manager/status", json_body={"status": "frozen", "force_kill": force_kill}
        )

    @classmethod
    async def unfreeze(cls, api: APIClient) -> None:
        """Leave maintenance: every route works again."""
        await api.fetch_json("PUT", "/manager/status", json_body={"status": "running"})

    @classmethod
    async def get_announcement(cls, api: APIClient) -> Announcement:
        """The current announcement (``enabled`` false when there is none)."""
        data = _object(
            await api.fetch_json("GET", "/manager/announcement"), "/manager/announcement"
        )
        return Announcement(bool(data.get("enabled")), str(data.get("message") or ""))

    @classmethod
    async def update_announcement(
        cls, api: APIClient, *, enabled: bool = True, message: str | None = None
    ) -> None:
        """Post *message* as the announcement; ``enabled=False`` takes it down."""
        if enabled and not message:
            raise InvalidValue(
                "is required to post an announcement", value=message, field="message"
            )
        await api.fetch_json(
            "POST", "/manager/announcement", json_body={"enabled": enabled, "message": message}
        )

    @classmethod
    async def delete_announcement(cls, api: APIClient) -> None:
        """Take the announcement down."""
        await cls.update_announcement(api, enabled=False)

    @classmethod
    async def scheduler_op(cls, api: APIClient, op: str, args: Any) -> None:
        """Run scheduler operation *op* (:data:`SCHEDULER_OPS`) with its *args*."""
        await api.fetch_json(
            "POST", "/manager/scheduler/operation", json_body={"op": op, "args": args}
        )


@dataclass(frozen=True, slots=True)
class ErrorLogPage:
    """One page of the error log (newest first) and how many entries there are."""

    count: int
    logs: builtins.list[dict[str, Any]]


class ErrorLog:
    """``/logs/error``: errors clients and the manager recorded.  A user sees their
    own entries, a domain admin their domain's, a superadmin all of them."""

    @classmethod
    async def list(
        cls, api: APIClient, *, page_size: int = 20, page_no: int = 1, mark_read: bool = False
    ) -> ErrorLogPage:
        """Page *page_no* (from 1) of *page_size* entries; *mark_read* marks them read."""
        if page_size < 1 or page_no < 1:
            raise InvalidValue(
                "page_size and page_no must be >= 1", value=(page_size, page_no), field="page_size"
            )
        data = _object(
            await api.fetch_json(
                "GET",
                "/logs/error",
                params={"mark_read": mark_read, "page_size": page_size, "page_no": page_no},
            ),
            "/logs/error",
        )
        logs = data.get("logs")
        if not isinstance(logs, list):
            raise MalformedResponse("has no logs list", value=data, field="/logs/error")
        count = data.get("count")
        items = [item for item in logs if isinstance(item, dict)]
        return ErrorLogPage(count if isinstance(count, int) else len(items), items)

    @classmethod
    async def create(
        cls,
        api: APIClient,
        *,
        severity: str,
        source: str,
        message: str,
        context_lang: str = "python",
        context_env: Mapping[str, Any] | None = None,
        request_url: str | None = None,
        request_status: int | None = None,
        traceback: str | None = None,
    ) -> None:
        """Record an error (*severity*: ``critical``, ``error``, ``warning``)."""
        body: dict[str, Any] = {
            "severity": severity,
            "source": source,
            "message": message,
            "context_lang": context_lang,
            "context_env": json.dumps(dict(context_env or {})),
        }
        optional: Sequence[tuple[str, Any]] = (
            ("request_url", request_url),
            ("request_status", request_status),
            ("traceback", traceback),
        )
        body.update((key, value) for key, value in optional if value is not None)
        await api.fetch_json("POST", "/logs/error", json_body=body)

    @classmethod
    async def clear(cls, api: APIClient, log_id: str) -> None:
        """Mark the entry *log_id* cleared (it leaves the lists)."""
        await api.fetch_json("POST", f"/logs/error/{quote(log_id, safe='')}/clear")
