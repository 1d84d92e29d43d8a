"""Running graphql-core under Trio (:func:`bai.manager.api.gql.execution.run_graphql`).

A small schema whose resolvers go back into Trio through the request's
:class:`GqlContext` shows what the admin API relies on: sibling and list
fields resolve, cancellation reaches a resolver waiting in Trio, expected
errors keep their message, unexpected ones are masked, and an unavailable
database escapes (so the API can answer 503).
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
import trio
from graphql import GraphQLField, GraphQLInt, GraphQLList, GraphQLObjectType, GraphQLSchema

from bai.common.types import AccessKey
from bai.manager.api.auth import AuthContext, Principal
from bai.manager.api.errors import Forbidden
from bai.manager.api.gql.context import GqlContext, Info, context_of
from bai.manager.api.gql.execution import MAX_RESOLVED_FIELDS, run_graphql
from bai.manager.db import Connection, Database, DatabaseUnavailable
from bai.manager.models.identity import UserRole


def _count_domains(_root: Any, info: Info) -> int:
    async def read(conn: Connection) -> int:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(sa.table("domains"))))

    return context_of(info).read(read)


def _squares(_root: Any, info: Info) -> list[int]:
    async def square(conn: Connection, n: int) -> int:
        return int(await conn.scalar(sa.select(sa.literal(n) * n)))

    ctx = context_of(info)
    return [ctx.read(functools.partial(square, n=n)) for n in range(1, 6)]


def _stuck(_root: Any, info: Info) -> int:
    ctx = context_of(info)

    async def wait(_conn: Connection) -> int:
        ctx.memo["entered"].set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    return ctx.read(wait)


Cell = GraphQLObjectType("Cell", {"v": GraphQLField(GraphQLInt)})
Row = GraphQLObjectType("Row", {"cells": GraphQLField(GraphQLList(Cell))})
_ROW: dict[str, Any] = {"cells": [{"v": i} for i in range(1000)]}


def _grid(_root: Any, _info: Info) -> list[dict[str, Any]]:
    return [_ROW] * 1000


def _forbidden(_root: Any, _info: Info) -> int:
    raise Forbidden("not for you")


def _broken(_root: Any, _info: Info) -> int:
    raise KeyError("secret internals")


def _db_down(_root: Any, _info: Info) -> int:
    raise DatabaseUnavailable("the database is gone")


SCHEMA = GraphQLSchema(
    GraphQLObjectType(
        "Query",
        {
            "domains": GraphQLField(GraphQLInt, resolve=_count_domains),
            "squares": GraphQLField(GraphQLList(GraphQLInt), resolve=_squares),
            "stuck": GraphQLField(GraphQLInt, resolve=_stuck),
            "forbidden": GraphQLField(GraphQLInt, resolve=_forbidden),
            "broken": GraphQLField(GraphQLInt, resolve=_broken),
            "db_down": GraphQLField(GraphQLInt, resolve=_db_down),
            "grid": GraphQLField(GraphQLList(Row), resolve=_grid),
        },
    )
)


def context(db: Database) -> GqlContext:
    principal = Principal(
        access_key=AccessKey("AKIATEST"),
        user_id=uuid.uuid4(),
        email="t@example.com",
        role=UserRole.USER,
        domain_name="default",
        resource_policy="default",
        rate_limit=100,
    )
    auth = AuthContext(
        **{name: getattr(principal, name) for name in Principal.__dataclass_fields__},
        owner=principal,
    )
    return GqlContext(auth=auth, db=db, hide_agents=True)


async def test_fields_resolve_through_trio_side_by_side(db: Database) -> None:
    query = "{ a: squares b: squares domains }"
    results = []

    async def one() -> None:
        results.append(await run_graphql(SCHEMA, query, context=context(db)))

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(one)
    for result in results:
        assert result.errors == []
        assert result.data == {"a": [1, 4, 9, 16, 25], "b": [1, 4, 9, 16, 25], "domains": 0}


async def test_cancelling_a_request_stops_its_resolver(db: Database) -> None:
    ctx = context(db)
    entered = ctx.memo["entered"] = trio.Event()
    finished = False
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def request() -> None:
                nonlocal finished
                await run_graphql(SCHEMA, "{ stuck }", context=ctx)
                finished = True

            nursery.start_soon(request)
            await entered.wait()
            nursery.cancel_scope.cancel()
    assert not finished


async def test_expected_errors_keep_their_message_and_others_are_masked(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    result = await run_graphql(SCHEMA, "{ forbidden broken domains }", context=context(db))
    assert result.data == {"forbidden": None, "broken": None, "domains": 0}
    by_path = {tuple(error["path"]): error["message"] for error in result.errors}
    assert by_path[("forbidden",)] == "not for you"
    masked = by_path[("broken",)]
    assert "secret internals" not in masked
    reference = masked.rsplit(" ", 1)[-1]
    assert any(reference in record.getMessage() for record in caplog.records)


async def test_a_request_resolving_too_many_fields_is_stopped(db: Database) -> None:
    small = await run_graphql(SCHEMA, "{ grid { __typename } }", context=context(db))
    assert small.errors == [] and small.data is not None and len(small.data["grid"]) == 1000
    # A million cells in a shallow query: stopped by the budget, not by depth.
    big = await run_graphql(SCHEMA, "{ grid { cells { v } } }", context=context(db))
    assert big.data is None
    assert big.errors == [
        {"message": f"the query resolves more than {MAX_RESOLVED_FIELDS} fields; ask for less"}
    ]


async def test_fragments_cannot_make_checking_a_query_explode(db: Database) -> None:
    # Each fragment spreads the next one twice: 2**30 paths, measured in linear time.
    fan_out = [f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(30)]
    query = "{ ...F0 }\n" + "\n".join([*fan_out, "fragment F30 on Query { domains }"])
    with trio.fail_after(5):
        result = await run_graphql(SCHEMA, query, context=context(db))
    assert result.errors == [] and result.data == {"domains": 0}
    chain = [f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(100)]
    query = "{ ...F0 }\n" + "\n".join([*chain, "fragment F100 on Query { domains }"])
    result = await run_graphql(SCHEMA, query, context=context(db))
    assert result.data is None and "more than 16 levels deep" in result.errors[0]["message"]


async def test_an_unavailable_database_is_not_hidden_in_errors(db: Database) -> None:
    with pytest.raises(DatabaseUnavailable):
        await run_graphql(SCHEMA, "{ domains db_down }", context=context(db))


async def test_requests_that_cannot_run_are_errors_without_data(db: Database) -> None:
    syntax = await run_graphql(SCHEMA, "{ domains", context=context(db))
    assert syntax.data is None and "Syntax Error" in syntax.errors[0]["message"]
    unknown = await run_graphql(SCHEMA, "{ nope }", context=context(db))
    assert unknown.data is None and "nope" in unknown.errors[0]["message"]
    two = await run_graphql(SCHEMA, "query A { domains } query B { domains }", context=context(db))
    assert two.data is None and "operation name" in two.errors[0]["message"]
    chosen = await run_graphql(
        SCHEMA, "query A { domains } query B { squares }", context=context(db), operation_name="A"
    )
    assert chosen.data == {"domains": 0}
