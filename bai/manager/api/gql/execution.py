"""Running a GraphQL request under Trio.

graphql-core runs the ``async`` resolvers of sibling fields concurrently with
``asyncio.gather``, which cannot run inside Trio.  bai's resolvers are
therefore plain functions, and :func:`run_graphql` runs parsing, validation
and execution in a worker thread (:func:`trio.to_thread.run_sync`), where
graphql-core takes its synchronous path: fields resolve one after another.
A resolver that needs the database hands a coroutine back to the Trio
thread (:meth:`GqlContext.read <bai.manager.api.gql.context.GqlContext.read>`),
so all I/O stays in Trio with its deadlines, and the event loop never
blocks on parsing or resolving a large query.  Cancelling the request
cancels the statement in flight; the resolver then raises
:class:`trio.Cancelled`, which graphql-core does not catch, so execution
stops there and the cancellation reaches the caller.

Guarantees of :func:`run_graphql`:

* syntax, validation and variable errors come back as GraphQL errors with no
  data, never as exceptions;
* documents nesting selections deeper than :data:`MAX_DEPTH` (fragments
  followed) are refused before anything runs, and a request that resolves
  more than :data:`MAX_RESOLVED_FIELDS` fields (lists multiply, so a shallow
  query can still explode) is stopped there and answered with that error
  alone; a cancelled request also stops between fields;
* an error a resolver raises on purpose (an HTTP 4xx
  :class:`~bai.common.errors.BaiError`, or any
  :class:`~bai.common.errors.InvalidValue`) keeps its message; any other
  exception is logged with a reference id and its message replaced, so no
  internals leak;
* an unavailable or slow database is not hidden in ``errors``: the exception
  propagates, and the API answers 503 as for every other route.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import sqlalchemy as sa
import trio
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    execute,
    parse,
    validate,
)

from bai.common.errors import InvalidValue
from bai.manager.api.gql.context import GqlContext
from bai.manager.db import DatabaseError

__all__ = ["MAX_DEPTH", "MAX_RESOLVED_FIELDS", "GqlResult", "run_graphql"]

log = logging.getLogger(__name__)

#: The deepest nesting of selections a document may have (introspection needs 15).
MAX_DEPTH: Final = 16
#: The most fields one request may resolve (about a second of work; a page of 1000
#: sessions with 20 fields and two kernels of 15 fields each is 50k).
MAX_RESOLVED_FIELDS: Final = 200_000
_CANCEL_CHECK_EVERY: Final = 1000
_MAX_SPREAD_CHAIN: Final = 32
#: Validation stops after this many errors.
_MAX_VALIDATION_ERRORS: Final = 20


@dataclass(frozen=True, slots=True)
class GqlResult:
    """The outcome of one request: ``data`` (``None`` when nothing ran) and ``errors``."""

    data: dict[str, Any] | None
    errors: list[dict[str, Any]]

    def formatted(self) -> dict[str, Any]:
        """The standard GraphQL response object (``errors`` only when there are some)."""
        out: dict[str, Any] = {"data": self.data}
        if self.errors:
            out["errors"] = self.errors
        return out


class _TooManyFields(BaseException):
    """Stops execution outright: graphql-core catches ``Exception`` per field."""


class _FieldBudget:
    """graphql-core middleware: counts resolved fields, and checks for cancellation."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def resolve(self, next_: Any, root: Any, info: Any, **args: Any) -> Any:
        self.left -= 1
        if self.left < 0:
            raise _TooManyFields
        if self.left % _CANCEL_CHECK_EVERY == 0:
            trio.from_thread.check_cancelled()
        return next_(root, info, **args)


class _DepthGauge:
    """Measures how deep a document's selections nest, following fragment spreads.

    Each fragment is measured once (a fragment spread many times costs nothing
    more), and a chain of spreads longer than :data:`_MAX_SPREAD_CHAIN` counts
    as too deep, so neither time nor recursion can run away.
    """

    def __init__(self, document: DocumentNode) -> None:
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.measured: dict[str, int] = {}

    def depth(self, selection_set: SelectionSetNode | None, chain: int = 0) -> int:
        if selection_set is None:
            return 0
        if chain > _MAX_SPREAD_CHAIN:
            return MAX_DEPTH + 1
        deepest = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                depth = 1 + self.depth(selection.selection_set, chain)
            elif isinstance(selection, InlineFragmentNode):
                depth = self.depth(selection.selection_set, chain)
            elif isinstance(selection, FragmentSpreadNode):
                depth = self.fragment_depth(selection.name.value, chain + 1)
            else:
                continue
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                break
        return deepest

    def fragment_depth(self, name: str, chain: int) -> int:
        if name not in self.measured:
            # Validation has ruled out cycles; this guards the recursion regardless.
            self.measured[name] = MAX_DEPTH + 1
            fragment = self.fragments.get(name)
            found = 0 if fragment is None else self.depth(fragment.selection_set, chain)
            self.measured[name] = found
        return self.measured[name]


def _too_deep(document: DocumentNode) -> GraphQLError | None:
    gauge = _DepthGauge(document)
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            depth = gauge.depth(definition.selection_set)
            if depth > MAX_DEPTH:
                return GraphQLError(
                    f"the query nests selections (or fragment spreads) more than {MAX_DEPTH}"
                    " levels deep",
                    definition,
                )
    return None


def _is_service_failure(exc: BaseException) -> bool:
    return isinstance(exc, DatabaseError | sa.exc.OperationalError | sa.exc.InterfaceError) or (
        getattr(exc, "http_status", None) == 503
    )


def _is_client_error(exc: BaseException) -> bool:
    status = getattr(exc, "http_status", None)
    if isinstance(status, int):
        return 400 <= status < 500
    return isinstance(exc, InvalidValue)


def _format(error: GraphQLError) -> dict[str, Any]:
    original = error.original_error
    formatted = dict(error.formatted)
    if original is None or isinstance(original, GraphQLError) or _is_client_error(original):
        return formatted
    reference = uuid.uuid4().hex[:12]
    log.error("GraphQL resolver failed (reference %s)", reference, exc_info=original)
    formatted["message"] = (
        f"an unexpected error occurred; the server logged it under reference {reference}"
    )
    return formatted


def _run_sync(
    schema: GraphQLSchema,
    query: str,
    variables: Mapping[str, Any] | None,
    operation_name: str | None,
    context: GqlContext,
) -> GqlResult:
    try:
        document = parse(query)
    except GraphQLError as exc:
        return GqlResult(None, [dict(exc.formatted)])
    problems = validate(schema, document, max_errors=_MAX_VALIDATION_ERRORS)
    if not problems:
        deep = _too_deep(document)
        problems = [deep] if deep is not None else []
    if problems:
        return GqlResult(None, [dict(p.formatted) for p in problems])
    try:
        result = execute(
            schema,
            document,
            context_value=context,
            variable_values=dict(variables) if variables is not None else None,
            operation_name=operation_name,
            middleware=[_FieldBudget(MAX_RESOLVED_FIELDS)],
        )
    except _TooManyFields:
        message = f"the query resolves more than {MAX_RESOLVED_FIELDS} fields; ask for less"
        return GqlResult(None, [{"message": message}])
    if not isinstance(result, ExecutionResult):
        # Only an awaitable can come back otherwise: a resolver returned a coroutine.
        raise TypeError("GraphQL resolvers must be synchronous under Trio")
    for error in result.errors or ():
        original = error.original_error
        if original is not None and _is_service_failure(original):
            raise original
    return GqlResult(result.data, [_format(e) for e in result.errors or ()])


async def run_graphql(
    schema: GraphQLSchema,
    query: str,
    *,
    context: GqlContext,
    variables: Mapping[str, Any] | None = None,
    operation_name: str | None = None,
) -> GqlResult:
    """Parse, validate and execute *query* against *schema* for *context* (module docs)."""
    return await trio.to_thread.run_sync(
        functools.partial(_run_sync, schema, query, variables, operation_name, context)
    )
