"""GraphQL queries (``POST /admin/gql``) and the session list built on them.

The REST API has no route that lists sessions; the official client (and so
``backend.ai ps``) asks the GraphQL field ``compute_session_list`` instead,
and :func:`list_sessions` does the same.

Guarantees: a GraphQL answer carrying ``errors`` raises
:class:`~bai.client.exceptions.BackendAPIError` with the problem type
``.../graphql-error``, the joined messages as ``detail`` and the error list as
``data["data"]`` (as the official client does); field names are checked
before they are put into a query, so no caller-supplied text is ever
interpolated into GraphQL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bai.client.exceptions import BackendAPIError, MalformedResponse
from bai.client.request import APIClient
from bai.common.errors import InvalidValue

__all__ = ["GRAPHQL_ERROR_TYPE", "SessionPage", "graphql", "list_sessions"]

GRAPHQL_ERROR_TYPE: Final = "https://api.backend.ai/probs/graphql-error"
_FIELD_RE: Final = re.compile(r"[a-z_][a-z0-9_]*")


async def graphql(
    api: APIClient, query: str, variables: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Run one GraphQL query and return its ``data`` object."""
    answer = await api.fetch_json(
        "POST", "/admin/gql", json_body={"query": query, "variables": dict(variables or {})}
    )
    if not isinstance(answer, dict):
        raise MalformedResponse("is not a JSON object", value=answer, field="GraphQL answer")
    errors = answer.get("errors") or []
    if errors:
        messages = [str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors]
        raise BackendAPIError(
            400,
            "Bad Request",
            {
                "type": GRAPHQL_ERROR_TYPE,
                "title": "GraphQL-generated error",
                "detail": "; ".join(messages),
                "data": errors,
            },
        )
    data = answer.get("data")
    if not isinstance(data, dict):
        raise MalformedResponse("has no data object", value=answer, field="GraphQL answer")
    return data


@dataclass(frozen=True, slots=True)
class SessionPage:
    """One page of the session list and the number of sessions matching in total."""

    total_count: int
    items: list[dict[str, Any]]


async def list_sessions(
    api: APIClient,
    *,
    fields: Sequence[str],
    statuses: Sequence[str] = (),
    access_key: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> SessionPage:
    """``compute_session_list``: the caller's sessions in *statuses* (all if empty).

    *fields* are GraphQL field names of ``ComputeSession`` (``id``, ``name``,
    ``status``...); a name that is not a plain identifier raises
    :class:`~bai.common.errors.InvalidValue`.  Administrators may pass
    *access_key* to list another keypair's sessions.
    """
    for name in fields:
        if _FIELD_RE.fullmatch(name) is None:
            raise InvalidValue("is not a session field name", value=name, field="fields")
    if not fields:
        raise InvalidValue("must name at least one field", value=list(fields), field="fields")
    if limit < 1 or offset < 0:
        raise InvalidValue(
            "limit must be >= 1 and offset >= 0", value=(limit, offset), field="limit"
        )
    query = (
        "query($limit: Int!, $offset: Int!, $status: String, $access_key: String) {"
        " compute_session_list(limit: $limit, offset: $offset, status: $status,"
        " access_key: $access_key) {"
        f" items {{ {' '.join(fields)} }} total_count }} }}"
    )
    variables: dict[str, Any] = {
        "limit": limit,
        "offset": offset,
        "status": ",".join(statuses) if statuses else None,
        "access_key": access_key,
    }
    data = await graphql(api, query, variables)
    page = data.get("compute_session_list")
    if not isinstance(page, dict) or not isinstance(page.get("items"), list):
        raise MalformedResponse("has no items list", value=page, field="compute_session_list")
    items = [item for item in page["items"] if isinstance(item, dict)]
    total = page.get("total_count")
    return SessionPage(total_count=total if isinstance(total, int) else len(items), items=items)
