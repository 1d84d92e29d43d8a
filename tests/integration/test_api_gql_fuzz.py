"""Random GraphQL documents and variables against ``/admin/gql`` never get a 5xx.

Hypothesis draws documents from the schema itself (a query field, random
literal arguments, a random selection of its fields, some of them unknown,
nested a few levels), introspection documents, documents with a variable of the argument's declared
type and a random JSON value, random text, and random bodies; the callers
are a superadmin, a domain admin and a user of the populated cluster
(:mod:`support.api_gql`).  Beyond "no 5xx", no answer may carry the masked
"unexpected error" of a resolver that crashed: every error is one the API
raised on purpose.  The server runs once per database backend.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from graphql import (
    GraphQLField,
    GraphQLObjectType,
    get_named_type,
    get_nullable_type,
)
from hypothesis import strategies as st

from bai.manager.api.gql.schema import SCHEMA
from bai.manager.db import create_database

from support.api import running_api
from support.api_gql import World, build_world
from support.fuzz import Request, assert_not_a_500, bodies, json_values, run_examples

EXAMPLES = 150
PATHS = ("/admin/gql", "/admin/graphql")

_SAMPLES = ["default", "other", "RUNNING", "PENDING,RUNNING", "admin@lablup.com", "i-agent01"]
_json = json_values(_SAMPLES)
_literals = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=20).map(json.dumps),
    st.uuids().map(lambda u: json.dumps(str(u))),
    st.sampled_from(["true", "false", "null", "[1, 2]", '{a: "b"}', "RUNNING", '"x" "y"']),
    st.sampled_from(_SAMPLES).map(json.dumps),
)
_QUERY_FIELDS = SCHEMA.query_type.fields if SCHEMA.query_type else {}


@st.composite
def _selection(draw: st.DrawFn, kind: Any, depth: int) -> str:
    named = get_named_type(kind)
    if not isinstance(named, GraphQLObjectType):
        return ""
    names = sorted(named.fields)
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True))
    if draw(st.booleans()) and draw(st.integers(0, 5)) == 0:
        chosen.append(draw(st.sampled_from(["nope", "__typename", "password"])))
    parts = []
    for name in chosen:
        field = named.fields.get(name)
        sub = ""
        if field is not None and isinstance(get_named_type(field.type), GraphQLObjectType):
            sub = draw(_selection(field.type, depth + 1)) if depth < 3 else "{ __typename }"
        parts.append(f"{name} {sub}")
    return "{ " + " ".join(parts) + " }"


_TEXT = st.text(max_size=20).map(json.dumps) | st.sampled_from(_SAMPLES).map(json.dumps)
#: Literals of each argument scalar: mostly well-typed, so documents reach the resolvers.
_TYPED: dict[str, st.SearchStrategy[str]] = {
    "Int": st.integers(min_value=-5, max_value=2000).map(str),
    "Boolean": st.sampled_from(["true", "false"]),
    "UUID": st.uuids().map(lambda u: json.dumps(str(u))) | _TEXT,
    "String": _TEXT
    | st.sampled_from(['"name == \\"x\\""', '"-created_at"', '"status in [\\"RUNNING\\"]"']),
    "ID": st.uuids().map(lambda u: json.dumps(str(u))) | _TEXT,
}


def _arguments(draw: st.DrawFn, field: GraphQLField) -> list[tuple[str, str]]:
    args = []
    for name, arg in field.args.items():
        required = str(arg.type).endswith("!")
        if not required and draw(st.integers(0, 2)) == 0:
            continue
        typed = _TYPED.get(get_named_type(arg.type).name)
        if typed is not None and draw(st.integers(0, 4)) > 0:
            args.append((name, draw(typed)))
        else:
            args.append((name, draw(_literals)))
    return args


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, dict[str, Any] | None]:
    """A document (and variables) built from the schema, or random text."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=80)), draw(
            st.none() | st.dictionaries(st.text(max_size=5), _json, max_size=3)
        )
    if draw(st.integers(0, 9)) == 0:
        meta = draw(st.sampled_from(["__schema { types { name } }", "__typename"]))
        named = f"__type(name: {draw(_literals)}) {{ name fields {{ name }} }}"
        return f"{{ {draw(st.sampled_from([meta, named]))} }}", None
    name = draw(st.sampled_from(sorted(_QUERY_FIELDS)))
    field = _QUERY_FIELDS[name]
    args = _arguments(draw, field)
    selection = draw(_selection(field.type, 1))
    variables: dict[str, Any] | None = None
    head = "query"
    if field.args and draw(st.booleans()):
        # One argument from a variable of its declared type (or of String) with any JSON.
        var_arg = draw(st.sampled_from(sorted(field.args)))
        declared = draw(
            st.sampled_from(
                [
                    str(field.args[var_arg].type),
                    "String",
                    str(get_nullable_type(field.args[var_arg].type)),
                ]
            )
        )
        head = f"query($v: {declared})"
        args = [(n, v) for n, v in args if n != var_arg] + [(var_arg, "$v")]
        variables = {"v": draw(_json)}
    arguments = f"({', '.join(f'{n}: {v}' for n, v in args)})" if args else ""
    return f"{head} {{ {name}{arguments} {selection} }}", variables


@st.composite
def requests(draw: st.DrawFn) -> Request:
    path = draw(st.sampled_from(PATHS))
    caller = draw(st.sampled_from(["super", "dadmin", "user"]))
    if draw(st.integers(0, 9)) == 0:
        return (
            "POST",
            path,
            caller,
            {},
            draw(bodies(["query", "variables", "operationName"], _json)),
        )
    query, variables = draw(documents())
    body = {"query": query, "variables": variables}
    return "POST", path, caller, {}, json.dumps(body).encode()


async def _fuzz(db_url: str) -> None:
    async with create_database(db_url) as db, running_api(db, public_rate_limit=10**6) as api:
        world: World = await build_world(api)
        keys = {"super": world.superadmin, "dadmin": world.domain_admin, "user": world.user}
        for key in keys.values():
            await api.update_keypair(key, rate_limit=10**6)

        async def send(request: Request) -> httpx.Response:
            method, path, caller, _, body = request
            return await api.call(method, path, key=keys[caller], content=body)

        def check(request: Request, response: httpx.Response) -> None:
            content_type = response.headers.get("content-type", "")
            assert_not_a_500(request, response.status_code, content_type, response.content)
            answer = json.loads(response.content)
            assert "unexpected error" not in response.text, (request, answer)
            if request[1] == "/admin/gql" and response.status_code == 200:
                assert "data" in answer

        await run_examples(EXAMPLES, requests(), send, check)


def test_random_documents_never_get_a_5xx(db_url: str) -> None:
    trio.run(_fuzz, db_url)
