"""Random requests against the real API never get a 500, and every failure is a problem.

Hypothesis draws a route of this module's table, a caller (superadmin, user
or anonymous) and a body: well-formed objects with the route's own field
names and random values, arbitrary JSON, or random bytes.  The server runs
once per database backend; Hypothesis runs in a worker thread and sends
each example through the Trio loop, so examples cost one request each.
"""

from __future__ import annotations

import json

import httpx
import trio
from hypothesis import strategies as st

from bai.manager.db import create_database

from support.api import running_api
from support.fuzz import Request, assert_not_a_500, bodies, json_values, queries, run_examples

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

_json = json_values(["default", "a/b", "/", "", "cpu", "keypair", "admin@lablup.com", "Infinity"])


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method, path, fields = draw(st.sampled_from(ROUTES))
    caller = draw(st.sampled_from(["admin", "user", "anonymous"]))
    if method == "GET":
        return method, path, caller, draw(queries(fields)), None
    return method, path, caller, {}, draw(bodies(fields, _json))


async def _fuzz(db_url: str) -> None:
    async with create_database(db_url) as db, running_api(db, public_rate_limit=10**6) as api:
        for key in (api.admin, api.user):
            await api.update_keypair(key, rate_limit=10**6)

        async def send(request: Request) -> httpx.Response:
            method, path, caller, params, body = request
            key = {"admin": api.admin, "user": api.user}.get(caller)
            return await api.call(method, path, key=key, params=params or None, content=body)

        def check(request: Request, response: httpx.Response) -> None:
            content_type = response.headers.get("content-type", "")
            assert_not_a_500(request, response.status_code, content_type, response.content)
            if response.status_code < 400:
                assert content_type == "application/json"
                json.loads(response.content)

        await run_examples(EXAMPLES, requests(), send, check)


def test_random_requests_never_get_a_500(db_url: str) -> None:
    trio.run(_fuzz, db_url)
