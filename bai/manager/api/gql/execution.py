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
* a document of more than :data:`MAX_TOKENS` tokens or
  :data:`MAX_DOCUMENT_FIELDS` field selections is refused before validation
  (whose overlap check is quadratic in the fields); documents nesting
  selections deeper than :data:`MAX_DEPTH` (fragments followed), or whose
  estimated cost exceeds :data:`MAX_COMPLEXITY` (each field costs 1, times
  the items of the lists above it: a field's ``limit`` argument, else
  :data:`ASSUMED_LIST_SIZE`; introspection is free), are refused before
  anything runs; and a request that still resolves more than
  :data:`MAX_RESOLVED_FIELDS` fields is stopped there and answered with
  that error alone; a cancelled request also stops between fields;
* a variable typed ``String``, ``ID`` or ``UUID`` may be passed where any
  of the three is expected (the official clients declare ids either way);
  resolvers receive the argument's own type (a ``UUID`` argument given a
  malformed string is an error naming it);
* an error a resolver raises on purpose (an HTTP 4xx
  :class:`~bai.common.errors.BaiError`, or any
  :class:`~bai.common.errors.InvalidValue`) keeps its message, and its
  problem type as ``extensions.code`` (``"forbidden"`` for a field the
  caller may not query, whose value is then ``null``); any other
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
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLType,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    ValidationRule,
    VariableNode,
    execute,
    get_named_type,
    get_nullable_type,
    is_list_type,
    parse,
    specified_rules,
    type_from_ast,
    validate,
)
from graphql.validation.rules.variables_in_allowed_position import (
    VariablesInAllowedPositionRule,
    allowed_variable_usage,
)

from bai.common.errors import InvalidValue
from bai.manager.api.gql.context import GqlContext
from bai.manager.api.gql.scalars import UUIDType
from bai.manager.db import DatabaseError

__all__ = [
    "ASSUMED_LIST_SIZE",
    "MAX_COMPLEXITY",
    "MAX_DEPTH",
    "MAX_DOCUMENT_FIELDS",
    "MAX_RESOLVED_FIELDS",
    "MAX_TOKENS",
    "GqlResult",
    "run_graphql",
]

log = logging.getLogger(__name__)

#: The deepest nesting of selections a document may have (introspection needs 15).
MAX_DEPTH: Final = 16
#: The most fields one request may resolve (about a second of work; a page of 1000
#: sessions with 20 fields and two kernels of 15 fields each is 50k).
MAX_RESOLVED_FIELDS: Final = 200_000
#: The most lexical tokens a document may have (the introspection query has about 300).
MAX_TOKENS: Final = 20_000
#: The most field selections a document may spell out (aliases included): validation
#: compares same-named fields pairwise; the introspection query has about 100.
MAX_DOCUMENT_FIELDS: Final = 1_000
#: The highest estimated cost a request may have (module docs): a page of 1000 sessions
#: with 40 fields and their containers with 20 fields each is 240k.
MAX_COMPLEXITY: Final = 250_000
#: How many items the cost estimate assumes for a list without a ``limit`` argument.
ASSUMED_LIST_SIZE: Final = 10
#: The scalars of ids, interchangeable for variables (module docs).
_ID_SCALARS: Final = frozenset({"String", "ID", "UUID"})
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


def _count_fields(document: DocumentNode) -> int:
    count = 0
    stack: list[SelectionSetNode] = [
        d.selection_set
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode | FragmentDefinitionNode)
    ]
    while stack:
        for selection in stack.pop().selections:
            count += isinstance(selection, FieldNode)
            child = getattr(selection, "selection_set", None)
            if child is not None:
                stack.append(child)
    return count


class _CostGauge:
    """Estimates what a document costs to resolve (module docs), before it runs.

    Fields are merged by response key as execution merges them, each fragment
    is collected once per selection (so spreading a fragment twice costs
    nothing more), and the walk stops as soon as the total passes
    :data:`MAX_COMPLEXITY`; the depth check has bounded the recursion.
    """

    def __init__(
        self, schema: GraphQLSchema, document: DocumentNode, variables: Mapping[str, Any]
    ) -> None:
        self.schema = schema
        self.variables = variables
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }

    def limit_of(self, node: FieldNode) -> int | None:
        for argument in node.arguments or ():
            if argument.name.value != "limit":
                continue
            value: Any = argument.value
            if isinstance(value, IntValueNode):
                value = int(value.value)
            elif isinstance(value, VariableNode):
                value = self.variables.get(value.name.value)
            if isinstance(value, int) and not isinstance(value, bool):
                return max(value, 0)
        return None

    def collect(self, selection_sets: list[SelectionSetNode]) -> dict[str, list[FieldNode]]:
        """The fields of *selection_sets* by response key, fragments expanded once."""
        fields: dict[str, list[FieldNode]] = {}
        visited: set[str] = set()
        stack = list(selection_sets)
        while stack:
            for selection in stack.pop().selections:
                if isinstance(selection, FieldNode):
                    key = (selection.alias or selection.name).value
                    fields.setdefault(key, []).append(selection)
                elif isinstance(selection, InlineFragmentNode):
                    stack.append(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    fragment = self.fragments.get(name)
                    if name not in visited and fragment is not None:
                        visited.add(name)
                        stack.append(fragment.selection_set)
        return fields

    def cost(
        self, selection_sets: list[SelectionSetNode], parent: GraphQLType, items: int | None
    ) -> int:
        """The cost of *selection_sets* on *parent*, whose list fields hold *items* items."""
        total = 0
        for nodes in self.collect(selection_sets).values():
            total += self.field_cost(nodes, parent, items)
            if total > MAX_COMPLEXITY:
                break
        return total

    def field_cost(self, nodes: list[FieldNode], parent: GraphQLType, items: int | None) -> int:
        name = nodes[0].name.value
        if name.startswith("__") or not isinstance(
            parent, GraphQLObjectType | GraphQLInterfaceType
        ):
            return 1  # introspection: bounded by the schema's size
        field = parent.fields.get(name)
        children = [node.selection_set for node in nodes if node.selection_set is not None]
        if field is None or not children:
            return 1
        returns = get_nullable_type(field.type)
        factor = (items if items is not None else ASSUMED_LIST_SIZE) if is_list_type(returns) else 1
        named: GraphQLNamedType = get_named_type(field.type)
        return 1 + factor * self.cost(children, named, self.limit_of(nodes[0]))


def _too_costly(
    schema: GraphQLSchema, document: DocumentNode, variables: Mapping[str, Any]
) -> GraphQLError | None:
    gauge = _CostGauge(schema, document, variables)
    roots = {
        OperationType.QUERY: schema.query_type,
        OperationType.MUTATION: schema.mutation_type,
        OperationType.SUBSCRIPTION: schema.subscription_type,
    }
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            root = roots[definition.operation]
            if root is None:
                continue  # validation has refused it already
            cost = gauge.cost([definition.selection_set], root, None)
            if cost > MAX_COMPLEXITY:
                return GraphQLError(
                    f"the query's estimated cost exceeds {MAX_COMPLEXITY} (each field costs 1,"
                    " times the items of the lists it is in: their `limit`, or"
                    f" {ASSUMED_LIST_SIZE} for lists without one); ask for fewer fields or"
                    " smaller pages",
                    definition,
                )
    return None


def _with_named(kind: GraphQLType, named: GraphQLNamedType) -> GraphQLType:
    """*kind* with its named type replaced by *named* (wrappers kept)."""
    if isinstance(kind, GraphQLNonNull):
        return GraphQLNonNull(_with_named(kind.of_type, named))  # type: ignore[type-var]
    if isinstance(kind, GraphQLList):
        return GraphQLList(_with_named(kind.of_type, named))
    return named


class _IdVariablesInAllowedPosition(ValidationRule):
    """The spec's "variables in allowed position" rule, except that ``String``, ``ID``
    and ``UUID`` variables are interchangeable (module docs)."""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self.definitions: dict[str, Any] = {}

    def enter_operation_definition(self, operation: OperationDefinitionNode, *_: Any) -> None:
        self.definitions = {d.variable.name.value: d for d in operation.variable_definitions or ()}

    def leave_operation_definition(self, operation: OperationDefinitionNode, *_: Any) -> None:
        schema = self.context.schema
        for usage in self.context.get_recursive_variable_usages(operation):
            name = usage.node.name.value
            definition = self.definitions.get(name)
            if definition is None or usage.type is None:
                continue
            declared = type_from_ast(schema, definition.type)
            if declared is None:
                continue
            expected: GraphQLType = usage.type
            if allowed_variable_usage(
                schema, declared, definition.default_value, expected, usage.default_value
            ):
                continue
            wanted = get_named_type(expected)
            if (
                get_named_type(declared).name in _ID_SCALARS
                and wanted.name in _ID_SCALARS
                and allowed_variable_usage(
                    schema,
                    _with_named(declared, wanted),
                    definition.default_value,
                    expected,
                    usage.default_value,
                )
            ):
                continue
            self.report_error(
                GraphQLError(
                    f"Variable '${name}' of type '{declared}' used in position expecting"
                    f" type '{expected}'.",
                    [definition, usage.node],
                )
            )


_RULES: Final = tuple(
    _IdVariablesInAllowedPosition if rule is VariablesInAllowedPositionRule else rule
    for rule in specified_rules
)


class _IdArguments:
    """graphql-core middleware: gives resolvers id arguments in their declared scalar,
    whichever of ``String``, ``ID`` and ``UUID`` the variable was declared as."""

    def resolve(self, next_: Any, root: Any, info: Any, **args: Any) -> Any:
        field = info.parent_type.fields.get(info.field_name) if args else None
        if field is not None:  # None: no arguments, or an introspection field
            declared = field.args
            for name, value in args.items():
                kind = get_nullable_type(declared[name].type)
                if kind is UUIDType and isinstance(value, str):
                    args[name] = UUIDType.parse_value(value)
                elif isinstance(value, uuid.UUID) and getattr(kind, "name", "") in {"String", "ID"}:
                    args[name] = str(value)
        return next_(root, info, **args)


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
    if original is None or isinstance(original, GraphQLError):
        return formatted
    if _is_client_error(original):
        kind = getattr(original, "error_type", None)
        if isinstance(kind, str):
            extensions: dict[str, Any] = dict(error.extensions or {})
            formatted["extensions"] = {**extensions, "code": kind}
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
        document = parse(query, max_tokens=MAX_TOKENS)
    except GraphQLError as exc:
        return GqlResult(None, [dict(exc.formatted)])
    fields = _count_fields(document)
    if fields > MAX_DOCUMENT_FIELDS:
        message = f"the document selects {fields} fields; at most {MAX_DOCUMENT_FIELDS} are allowed"
        return GqlResult(None, [{"message": message}])
    problems = validate(schema, document, _RULES, max_errors=_MAX_VALIDATION_ERRORS)
    if not problems:
        refused = _too_deep(document) or _too_costly(schema, document, variables or {})
        problems = [refused] if refused is not None else []
    if problems:
        return GqlResult(None, [dict(p.formatted) for p in problems])
    try:
        result = execute(
            schema,
            document,
            context_value=context,
            variable_values=dict(variables) if variables is not None else None,
            operation_name=operation_name,
            middleware=[_FieldBudget(MAX_RESOLVED_FIELDS), _IdArguments()],
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
