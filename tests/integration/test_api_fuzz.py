"""Random requests against the real API never get a 500, and every failure is a problem.

Hypothesis draws a route of this module's table, a caller (superadmin, user
or anonymous) and a body: well-formed objects with the route's own field
names and random values, arbitrary JSON, or random bytes.  The server runs
once per database backend; Hypothesis runs in a worker thread and sends
each example through the Trio loop, so examples cost one request each.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bai.manager.db import create_database

from support.api import PROBLEM_JSON, Api, running_api

EXAMPLES = 200

#: (method, path, field names of its body or query)
ROUTES: list[tuple[str, str, list[str]]] = [
    ("GET", "/", []),
    ("GET", "/auth", ["echo"]),
    ("POST", "/auth/test", ["echo"]),
    ("GET", "/auth/role", ["group", "owner_access_key"]),
    ("POST", "/auth/authorize", ["type", "domain", "username", "password"]),
    ("POST", "/config/get", ["key", "prefix"]),
    ("POST", "/config/set", ["key", "value"]),
    ("POST", "/config/delete", ["key", "prefix"]),
    ("GET", "/config/resource-slots", []),
    ("GET", "/resource/presets", []),
    ("POST", "/resource/check-presets", ["group", "scaling_group", "owner_access_key"]),
]

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(["default", "a/b", "/", "", "cpu", "keypair", "admin@lablup.com", "Infinity"]),
)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, str, Any, bytes | None]:
    method, path, fields = draw(st.sampled_from(ROUTES))
    caller = draw(st.sampled_from(["admin", "user", "anonymous"]))
    names = st.sampled_from(fields) if fields else st.text(max_size=8)
    shaped = st.dictionaries(names | st.text(max_size=8), _json, max_size=len(fields) + 1)
    if method == "GET":
        params = draw(st.dictionaries(names, st.text(max_size=30).filter(lambda t: "\0" not in t)))
        return method, path, caller, params, None
    body = draw(
        st.one_of(
            shaped.map(lambda value: json.dumps(value).encode()),
            _json.map(lambda value: json.dumps(value).encode()),
            st.binary(max_size=64),
        )
    )
    return method, path, caller, {}, body


async def _send(
    api: Api, method: str, path: str, caller: str, params: Any, body: bytes | None
) -> httpx.Response:
    key = {"admin": api.admin, "user": api.user}.get(caller)
    return await api.call(method, path, key=key, params=params or None, content=body)


async def _fuzz(db_url: str) -> None:
    async with create_database(db_url) as db, running_api(db, public_rate_limit=10**6) as api:
        for key in (api.admin, api.user):
            await api.update_keypair(key, rate_limit=10**6)
        token = trio.lowlevel.current_trio_token()

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(requests())
        def never_a_500(request: tuple[str, str, str, Any, bytes | None]) -> None:
            response = trio.from_thread.run(_send, api, *request, trio_token=token)
            assert response.status_code < 500, (request, response.text)
            if response.status_code >= 400:
                assert response.headers["content-type"] == PROBLEM_JSON, request
                assert {"type", "title"} <= response.json().keys()
            else:
                assert response.headers["content-type"] == "application/json"
                response.json()

        await trio.to_thread.run_sync(never_a_500)


def test_random_requests_never_get_a_500(db_url: str) -> None:
    trio.run(_fuzz, db_url)
