"""Properties of the GraphQL admin API's document checks (:mod:`bai.manager.api.gql.execution`).

* The variable rule accepts exactly what the spec's rule accepts, plus
  ``String``/``ID``/``UUID`` variables standing in for one another (with the
  spec's nullability rules unchanged).
* The cost estimate is an upper bound of the fields execution resolves,
  whenever each list holds no more items than its ``limit`` (or the assumed
  size for lists without one).
"""

from __future__ import annotations

from typing import Any

from graphql import (
    GraphQLArgument,
    GraphQLField,
    GraphQLID,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLString,
    execute,
    parse,
    specified_rules,
    validate,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from bai.manager.api.gql.execution import _RULES, ASSUMED_LIST_SIZE, _CostGauge
from bai.manager.api.gql.scalars import BigInt, JSONString, UUIDType

SCALARS = {"String": GraphQLString, "Int": GraphQLInt, "UUID": UUIDType, "BigInt": BigInt}
SCALARS |= {"JSONString": JSONString}
IDS = {"String", "ID", "UUID"}


def _arg_schema() -> GraphQLSchema:
    """Fields ``a_T(v: T)`` and ``r_T(v: T!)`` for each scalar ``T``."""
    fields = {}
    for name, kind in {**SCALARS, "ID": GraphQLID}.items():
        optional, required = GraphQLArgument(kind), GraphQLArgument(GraphQLNonNull(kind))
        fields[f"a_{name}"] = GraphQLField(GraphQLString, args={"v": optional})
        fields[f"r_{name}"] = GraphQLField(GraphQLString, args={"v": required})
    return GraphQLSchema(GraphQLObjectType("Query", fields))


ARG_SCHEMA = _arg_schema()
TYPE_NAMES = [*SCALARS, "ID"]


@settings(max_examples=300, deadline=None)
@given(
    declared=st.sampled_from(TYPE_NAMES),
    declared_required=st.booleans(),
    location=st.sampled_from(TYPE_NAMES),
    location_required=st.booleans(),
)
def test_id_variables_stand_in_for_each_other_and_nothing_else(
    declared: str, declared_required: bool, location: str, location_required: bool
) -> None:
    bang = "!" if declared_required else ""
    arg = f"{'r' if location_required else 'a'}_{location}"
    document = parse(f"query($v: {declared}{bang}) {{ {arg}(v: $v) }}")
    ours = not validate(ARG_SCHEMA, document, _RULES)
    spec = not validate(ARG_SCHEMA, document, specified_rules)
    nullability_ok = declared_required or not location_required
    expected = spec or (declared in IDS and location in IDS and nullability_ok)
    assert ours == expected
    assert not spec or ours  # never stricter than the spec


# ------------------------------------------------------------------------ cost

Node: GraphQLObjectType = GraphQLObjectType(
    "Node",
    lambda: {
        "v": GraphQLField(GraphQLInt),
        "one": GraphQLField(Node, resolve=lambda node, _info: node),
        "items": GraphQLField(
            GraphQLList(Node),
            args={"limit": GraphQLArgument(GraphQLInt)},
            resolve=_items,
        ),
    },
)


def _items(node: dict[str, Any], _info: Any, limit: int | None = None) -> list[dict[str, Any]]:
    # As many items as the list may hold: the worst case for the estimate.
    return [{"v": i} for i in range(limit if limit is not None else ASSUMED_LIST_SIZE)]


COST_SCHEMA = GraphQLSchema(
    GraphQLObjectType("Query", {"root": GraphQLField(Node, resolve=lambda *_: {"v": 0})})
)


@st.composite
def selections(draw: st.DrawFn, depth: int, prefix: str = "x") -> str:
    parts = ["v"] if draw(st.booleans()) else []
    for alias in range(draw(st.integers(0, 2 if depth < 4 else 0))):
        kind = draw(st.sampled_from(["one", "items"]))
        limit = draw(st.none() | st.integers(0, 4))
        args = f"(limit: {limit})" if kind == "items" and limit is not None else ""
        sub = draw(selections(depth + 1, prefix))
        parts.append(f"{prefix}{depth}_{alias}: {kind}{args} {sub}")
    if draw(st.booleans()):
        parts.append("...F")
    return "{ " + (" ".join(parts) or "v") + " }"


class _Count:
    def __init__(self) -> None:
        self.fields = 0

    def resolve(self, next_: Any, root: Any, info: Any, **args: Any) -> Any:
        self.fields += 1
        return next_(root, info, **args)


@settings(max_examples=150, deadline=None)
@given(body=selections(0), fragment=selections(3, "y"))
def test_the_cost_estimate_bounds_the_resolved_fields(body: str, fragment: str) -> None:
    fragment = fragment.replace("...F", "")
    document = parse(f"{{ root {body} spread: root {{ ...F }} }}\nfragment F on Node {fragment}")
    assert not validate(COST_SCHEMA, document), (body, fragment)
    estimate = _CostGauge(COST_SCHEMA, document, {}).cost(
        [document.definitions[0].selection_set],  # type: ignore[attr-defined]
        COST_SCHEMA.query_type,  # type: ignore[arg-type]
        None,
    )
    counter = _Count()
    result = execute(COST_SCHEMA, document, middleware=[counter])
    assert not result.errors
    assert counter.fields <= estimate
