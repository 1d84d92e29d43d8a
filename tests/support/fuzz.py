"""Shared harness of the API fuzz tests: random requests that must never get a 500.

Imported by the ``test_api*_fuzz`` modules (it holds no tests itself).  A
request is ``(method, path, caller, params, body)``; a test draws them from
its own table of routes with :func:`json_values`, :func:`queries` and
:func:`bodies` (objects with the route's own field names and random values,
arbitrary JSON, random bytes), and :func:`run_examples` sends each one
through the test's Trio loop from Hypothesis's worker thread, so an example
costs one request.  :func:`assert_not_a_500` is the property they all check.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.api import PROBLEM_JSON

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
