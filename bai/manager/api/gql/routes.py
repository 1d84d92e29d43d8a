"""``POST /admin/gql`` and ``POST /admin/graphql``: the GraphQL admin API's HTTP side.

Both take a JSON body ``{"query": "...", "variables": {...},
"operation_name": "..."}`` (``operationName`` is accepted too) from any
authenticated user; what each caller may see is decided per field
(:mod:`bai.manager.api.gql.context`).  A body that is not such an object is
a 400 RFC 7807 problem like everywhere else in the API, and one over
:data:`MAX_QUERY_BODY` bytes a 413; documents over the limits of
:mod:`bai.manager.api.gql.execution` get a GraphQL error.

* ``/admin/gql`` answers 200 with the standard GraphQL response:
  ``{"data": ...}`` plus ``"errors": [...]`` when there are any (syntax,
  validation, permission or input errors, each with ``message``,
  ``locations`` and ``path``).
* ``/admin/graphql`` is the older form the spec documents: 200 with the
  ``data`` object itself, or, when there are errors, 400
  ``graphql-error`` ("GraphQL-generated error") with the error list as the
  problem's ``data``.

The database being unavailable is 503 on both, as for every route.  While
the manager is frozen (``PUT /manager/status``) a mutation is 503
``server-frozen`` and changes nothing; queries still answer.
"""

from __future__ import annotations

from typing import Any, Final

import graphql
import msgspec
from quart import Blueprint, Response

from bai.manager.api.auth import auth_required, current_auth
from bai.manager.api.errors import ApiError
from bai.manager.api.gql.context import GqlContext
from bai.manager.api.gql.execution import GqlResult, run_graphql
from bai.manager.api.gql.schema import SCHEMA
from bai.manager.api.helpers import InvalidParameter, current_ctx, json_response, read_json
from bai.manager.api.manager_status import ManagerStatus, ServerFrozen, status_cache
from bai.manager.context import ServiceNotReady

__all__ = ["MAX_QUERY_BODY", "GraphQLRequestError", "blueprint"]

#: The largest GraphQL request body read, in bytes.
MAX_QUERY_BODY: Final = 256 * 1024

blueprint = Blueprint("gql", __name__, url_prefix="/admin")


class GraphQLRequestError(ApiError):
    """The legacy endpoint's answer to a query that produced errors (400)."""

    http_status = 400
    error_type = "graphql-error"
    error_title = "GraphQL-generated error"


class _Body(msgspec.Struct, kw_only=True):
    query: str
    variables: dict[str, Any] | None = None
    operation_name: str | None = None
    operationName: str | None = None  # the spelling GraphQL clients send


def _is_mutation(query: str, operation: str | None) -> bool:
    """Whether *query* would run a mutation (a document that does not parse runs nothing:
    execution reports it)."""
    try:
        document = graphql.parse(query)
    except graphql.GraphQLError:
        return False
    chosen = graphql.get_operation_ast(document, operation)
    return chosen is not None and chosen.operation is graphql.OperationType.MUTATION


async def _run() -> GqlResult:
    body = await read_json(_Body, max_size=MAX_QUERY_BODY)
    if "\0" in body.query:
        raise InvalidParameter("must not contain NUL characters", field="query")
    ctx = current_ctx()
    try:
        storage = ctx.storage
    except ServiceNotReady:
        storage = None  # an API served without the storage client (tests of other routes)
    try:
        live_stats = ctx.livestats
    except ServiceNotReady:
        live_stats = None  # not following the agents' samples: ``live_stat`` is null
    try:
        idle = ctx.idle
    except ServiceNotReady:
        idle = None  # no idle checker: ``idle_checks`` is {}
    operation = body.operation_name or body.operationName
    if (
        _is_mutation(body.query, operation)
        and await status_cache().get(ctx.db) is ManagerStatus.FROZEN
    ):
        raise ServerFrozen("the manager is frozen for maintenance; mutations wait until then")
    context = GqlContext(
        auth=current_auth(),
        db=ctx.db,
        hide_agents=ctx.config.manager.hide_agents,
        storage=storage,
        live_stats=live_stats,
        idle=idle,
    )
    return await run_graphql(
        SCHEMA,
        body.query,
        context=context,
        variables=body.variables,
        operation_name=body.operation_name or body.operationName,
    )


@blueprint.route("/gql", methods=["POST"])
@auth_required
async def gql() -> Response:
    """``POST /admin/gql``: the standard GraphQL response."""
    result = await _run()
    return json_response(result.formatted())


@blueprint.route("/graphql", methods=["POST"])
@auth_required
async def graphql_legacy() -> Response:
    """``POST /admin/graphql``: ``data`` alone, or 400 ``graphql-error``."""
    result = await _run()
    if result.errors:
        messages = "; ".join(str(e.get("message")) for e in result.errors)
        raise GraphQLRequestError(messages, data=result.errors)
    return json_response(result.data)
