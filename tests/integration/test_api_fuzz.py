"""Random requests against the real API never get a 500, and every failure is a problem.

Hypothesis draws a route of this module's table, a caller (superadmin, user
or anonymous) and a body: well-formed objects with the route's own field
names and random values, arbitrary JSON, or random bytes.  The server runs
once per database backend; Hypothesis runs in a worker thread and sends
each example through the Trio loop, so examples cost one request each.
"""

from __future__ import annotations

import trio

from bai.manager.db import create_database

from support.api import running_api
from support.fuzz import fuzz_api, json_values, route_requests

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


async def _fuzz(db_url: str) -> None:
    async with create_database(db_url) as db, running_api(db, public_rate_limit=10**6) as api:
        await fuzz_api(api, route_requests(ROUTES, _json, query_methods=("GET",)), EXAMPLES)


def test_random_requests_never_get_a_500(db_url: str) -> None:
    trio.run(_fuzz, db_url)
