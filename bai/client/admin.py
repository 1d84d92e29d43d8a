"""GraphQL over ``POST /admin/gql``: raw queries, the paginated lists, mutations.

This module is the one place that speaks GraphQL; the typed wrappers
(:mod:`bai.client.identity`: users, projects, domains, keypairs, resource
policies; :mod:`bai.client.cluster`: resource groups, presets, agents) and
:func:`list_sessions` build their queries with its helpers:

* :meth:`Admin.query` (and :func:`graphql`): any query, answering ``data``;
* :func:`fetch_object` / :func:`fetch_list`: one root field, an object or a list;
* :func:`paginated_list`: a ``*_list`` root field (``limit``/``offset`` with
  ``items`` and ``total_count``, as the official client's paginated queries);
* :func:`mutate`: one mutation answering ``ok``/``msg`` (and an object).

Arguments always travel as GraphQL variables, typed as the official client
types them (so the same manager serves both clients), and field names are
checked before they are put into a query (:func:`check_fields`), so no
caller-supplied text is ever interpolated into GraphQL.

Guarantees: an answer carrying ``errors`` raises
:class:`~bai.client.exceptions.GraphQLError` (problem type
``.../graphql-error``, the joined messages as ``detail``); a mutation that
answers ``ok: false`` raises :class:`~bai.client.exceptions.MutationFailed`
with the manager's ``msg``; an answer without the promised shape raises
:class:`~bai.client.exceptions.MalformedResponse`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bai.client.exceptions import (
    GRAPHQL_ERROR_TYPE,
    GraphQLError,
    MalformedResponse,
    MutationFailed,
)
from bai.client.request import APIClient
from bai.common.errors import InvalidValue

__all__ = [
    "GRAPHQL_ERROR_TYPE",
    "MAX_PAGE_SIZE",
    "Admin",
    "Page",
    "SessionPage",
    "Variables",
    "check_fields",
    "fetch_list",
    "fetch_object",
    "graphql",
    "list_sessions",
    "mutate",
    "paginated_list",
]

#: The largest page the manager serves (the official client stops at 100).
MAX_PAGE_SIZE: Final = 1000

#: ``name -> (value, GraphQL type)``: one variable, declared and passed as an argument
#: of the same name (``$name: Type`` and ``name: $name``).
Variables = Mapping[str, tuple[Any, str]]

_NAME: Final = r"[a-z_][a-z0-9_]*"
#: A field, optionally with one level of subfields (``groups { id name }``).
_FIELD_RE: Final = re.compile(rf"{_NAME}(?:\s*\{{\s*{_NAME}(?:\s+{_NAME})*\s*\}})?")
_TYPE_RE: Final = re.compile(r"\[?[A-Z][A-Za-z]*!?\]?!?")


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
        raise GraphQLError(errors if isinstance(errors, list) else [errors])
    data = answer.get("data")
    if not isinstance(data, dict):
        raise MalformedResponse("has no data object", value=answer, field="GraphQL answer")
    return data


class Admin:
    """Raw GraphQL, as the official ``Admin`` function class offers it."""

    @staticmethod
    async def query(
        api: APIClient, query: str, variables: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Send *query* with *variables*; answer the ``data`` object.

        What a caller may read or change depends on its keypair's role; a
        denied field is a :class:`~bai.client.exceptions.GraphQLError`.
        """
        return await graphql(api, query, variables)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list and the number of items matching in total."""

    total_count: int
    items: list[dict[str, Any]]


#: The session list's page (the name it had before the other lists came).
SessionPage = Page


def check_fields(fields: Sequence[str]) -> str:
    """*fields* joined for a selection set; :class:`InvalidValue` for a name that
    is not a plain field (or a field with one level of plain subfields)."""
    if isinstance(fields, str) or not fields:
        raise InvalidValue("must name at least one field", value=fields, field="fields")
    for name in fields:
        if not isinstance(name, str) or _FIELD_RE.fullmatch(name) is None:
            raise InvalidValue("is not a GraphQL field name", value=name, field="fields")
    return " ".join(fields)


def _declare(variables: Variables) -> tuple[str, str, dict[str, Any]]:
    """``($a: T, ...)``, ``(a: $a, ...)`` and the values, for *variables*."""
    for name, (_, kind) in variables.items():
        if re.fullmatch(_NAME, name) is None or _TYPE_RE.fullmatch(kind) is None:
            raise InvalidValue("is not a GraphQL variable", value=(name, kind), field="variables")
    if not variables:
        return "", "", {}
    decls = ", ".join(f"${name}: {kind}" for name, (_, kind) in variables.items())
    args = ", ".join(f"{name}: ${name}" for name in variables)
    return f"({decls})", f"({args})", {name: value for name, (value, _) in variables.items()}


async def fetch_object(
    api: APIClient, root: str, *, fields: Sequence[str], variables: Variables | None = None
) -> dict[str, Any] | None:
    """``root(args) { fields }`` answering one object, or ``None`` when there is none."""
    decls, args, values = _declare(variables or {})
    data = await graphql(
        api, f"query{decls} {{ {root}{args} {{ {check_fields(fields)} }} }}", values
    )
    item = data.get(root)
    if item is not None and not isinstance(item, dict):
        raise MalformedResponse("is not an object", value=item, field=root)
    return item


async def fetch_list(
    api: APIClient, root: str, *, fields: Sequence[str], variables: Variables | None = None
) -> list[dict[str, Any]]:
    """``root(args) { fields }`` answering a list of objects."""
    decls, args, values = _declare(variables or {})
    data = await graphql(
        api, f"query{decls} {{ {root}{args} {{ {check_fields(fields)} }} }}", values
    )
    items = data.get(root)
    if not isinstance(items, list):
        raise MalformedResponse("is not a list", value=items, field=root)
    return [item for item in items if isinstance(item, dict)]


async def paginated_list(
    api: APIClient,
    root: str,
    *,
    fields: Sequence[str],
    variables: Variables | None = None,
    limit: int = 20,
    offset: int = 0,
) -> Page:
    """One page of a paginated root field (``user_list``, ``keypair_list``...).

    *limit* is 1 to :data:`MAX_PAGE_SIZE` and *offset* at least 0
    (:class:`InvalidValue` otherwise, and nothing is sent).
    """
    if not 1 <= limit <= MAX_PAGE_SIZE or offset < 0:
        raise InvalidValue(
            f"limit must be 1 to {MAX_PAGE_SIZE} and offset >= 0",
            value=(limit, offset),
            field="limit",
        )
    paged = {"limit": (limit, "Int!"), "offset": (offset, "Int!"), **(variables or {})}
    decls, args, values = _declare(paged)
    query = f"query{decls} {{ {root}{args} {{ items {{ {check_fields(fields)} }} total_count }} }}"
    data = await graphql(api, query, values)
    page = data.get(root)
    if not isinstance(page, dict) or not isinstance(page.get("items"), list):
        raise MalformedResponse("has no items list", value=page, field=root)
    items = [item for item in page["items"] if isinstance(item, dict)]
    total = page.get("total_count")
    return Page(total_count=total if isinstance(total, int) else len(items), items=items)


async def mutate(
    api: APIClient,
    name: str,
    variables: Variables,
    *,
    result: str | None = None,
    fields: Sequence[str] = (),
) -> dict[str, Any]:
    """Run mutation *name* with *variables*; answer its payload (``ok``, ``msg``
    and, when *result* and *fields* are given, the object ``result { fields }``).

    Raises :class:`MutationFailed` when the payload says ``ok: false``.
    """
    decls, args, values = _declare(variables)
    selection = "ok msg"
    if result is not None and fields:
        if re.fullmatch(_NAME, result) is None:
            raise InvalidValue("is not a GraphQL field name", value=result, field="result")
        selection += f" {result} {{ {check_fields(fields)} }}"
    data = await graphql(api, f"mutation{decls} {{ {name}{args} {{ {selection} }} }}", values)
    payload = data.get(name)
    if not isinstance(payload, dict):
        raise MalformedResponse("has no payload", value=data, field=name)
    if payload.get("ok") is not True:
        raise MutationFailed(name, str(payload.get("msg") or ""))
    return payload


async def list_sessions(
    api: APIClient,
    *,
    fields: Sequence[str],
    statuses: Sequence[str] = (),
    access_key: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> Page:
    """``compute_session_list``: the caller's sessions in *statuses* (all if empty).

    The REST API has no route that lists sessions; the official client (and
    so ``backend.ai ps``) asks this GraphQL field too.  *fields* are field
    names of ``ComputeSession`` (``id``, ``name``, ``status``...).
    Administrators may pass *access_key* to list another keypair's sessions.
    """
    return await paginated_list(
        api,
        "compute_session_list",
        fields=fields,
        variables={
            "status": (",".join(statuses) if statuses else None, "String"),
            "access_key": (access_key, "String"),
        },
        limit=limit,
        offset=offset,
    )
