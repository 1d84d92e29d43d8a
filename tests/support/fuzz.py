"""Shared harness of the API fuzz tests: random requests that must never get a 500.

Imported by the ``test_api*_fuzz`` modules (it holds no tests itself).  A
request is ``(method, path, caller, params, body)``; a test draws them from
its own table of routes with :func:`json_values`, :func:`queries` and
:func:`bodies` (objects with the route's own field names and random values,
arbitrary JSON, random bytes), and :func:`run_examples` sends each one
through the test's Trio loop from Hypothesis's worker thread, so an example
costs one request.  :func:`assert_not_a_500` is the property they all check;
:func:`route_requests` and :func:`fuzz_api` are the whole loop for a table of
routes sent to a :class:`support.api.Api` by random callers.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.api import PROBLEM_JSON, Api

#: (method, path, caller: ``admin``, ``user`` or ``anonymous``, query params, body or None)
Request = tuple[str, str, str, Any, bytes | None]
Answer = TypeVar("Answer")


def json_values(
    samples: Sequence[str],
    *,
    keys: st.SearchStrategy[str] | None = None,
    text_size: int = 40,
) -> st.SearchStrategy[Any]:
    """Any JSON value, its strings often one of *samples* (values that are almost right)."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=text_size),
        st.sampled_from(samples),
    )
    object_keys = keys if keys is not None else st.text(max_size=8)
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(object_keys, children, max_size=4)
        ),
        max_leaves=20,
    )


def _field_names(fields: Sequence[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(fields) if fields else st.text(max_size=8)


def queries(fields: Sequence[str]) -> st.SearchStrategy[dict[str, str]]:
    """A query string of the route's *fields* with random values."""
    return st.dictionaries(
        _field_names(fields), st.text(max_size=30).filter(lambda t: "\0" not in t)
    )


def bodies(fields: Sequence[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """A body: an object of the route's *fields* (and others) with *values*, any JSON of
    *values*, or random bytes."""
    shaped = st.dictionaries(
        _field_names(fields) | st.text(max_size=8), values, max_size=len(fields) + 1
    )
    return st.one_of(
        shaped.map(lambda value: json.dumps(value).encode()),
        values.map(lambda value: json.dumps(value).encode()),
        st.binary(max_size=64),
    )


def assert_not_a_500(request: Request, status: int, content_type: str, content: bytes) -> None:
    """No 5xx, and every failure an RFC 7807 problem."""
    assert status < 500, (request, content)
    if status >= 400:
        assert content_type == PROBLEM_JSON, request
        assert {"type", "title"} <= json.loads(content).keys()


async def run_examples(
    examples: int,
    requests: st.SearchStrategy[Request],
    send: Callable[[Request], Awaitable[Answer]],
    check: Callable[[Request, Answer], None],
) -> None:
    """Send *examples* requests drawn from *requests* through this Trio loop; *check* each
    answer in Hypothesis's worker thread."""
    token = trio.lowlevel.current_trio_token()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(requests)
    def each_example(request: Request) -> None:
        check(request, trio.from_thread.run(send, request, trio_token=token))

    await trio.to_thread.run_sync(each_example)


def route_requests(
    routes: Sequence[tuple[str, str, Sequence[str]]],
    values: st.SearchStrategy[Any],
    *,
    query_methods: Sequence[str] = ("GET", "DELETE"),
) -> st.SearchStrategy[Request]:
    """Requests to one of *routes* ``(method, path, field names)`` by a random caller:
    query parameters for *query_methods*, a body (the fields with *values*) otherwise."""

    @st.composite
    def draw_request(draw: st.DrawFn) -> Request:
        method, path, fields = draw(st.sampled_from(list(routes)))
        caller = draw(st.sampled_from(["admin", "user", "anonymous"]))
        if method in query_methods:
            return method, path, caller, draw(queries(list(fields))), None
        return method, path, caller, {}, draw(bodies(list(fields), values))

    return draw_request()


async def fuzz_api(
    api: Api, requests: st.SearchStrategy[Request], examples: int, *, json_answers: bool = True
) -> None:
    """Send *examples* of *requests* to *api* as their callers (rate limits lifted first):
    none may get a 5xx or a failure that is not a problem; with *json_answers*, every
    success must be JSON."""
    for key in (api.admin, api.user):
        await api.update_keypair(key, rate_limit=10**6)

    async def send(request: Request) -> httpx.Response:
        method, path, caller, params, body = request
        key = {"admin": api.admin, "user": api.user}.get(caller)
        return await api.call(method, path, key=key, params=params or None, content=body)

    def check(request: Request, response: httpx.Response) -> None:
        content_type = response.headers.get("content-type", "")
        assert_not_a_500(request, response.status_code, content_type, response.content)
        if json_answers and response.status_code < 400:
            assert content_type == "application/json", request
            json.loads(response.content)

    await run_examples(examples, requests, send, check)
