"""Random requests against the account and administration routes never get a 500.

As ``test_api_fuzz``: Hypothesis draws one of this module's routes, a caller
(superadmin, user or anonymous) and a body or query with the route's own
field names and random values, arbitrary JSON, or random bytes.  Sign-up is
on and passwords expire, so every account route is reachable; the status
route is left out, as freezing would turn later examples into 503s.
"""

from __future__ import annotations

import trio

from bai.manager.db import create_database

from support.api import manager_config, running_api
from support.fuzz import fuzz_api, json_values, route_requests

EXAMPLES = 200

#: (method, path, field names of its body or query)
ROUTES: list[tuple[str, str, list[str]]] = [
    ("POST", "/auth/signup", ["domain", "email", "password", "username", "full_name"]),
    ("POST", "/auth/signout", ["email", "password"]),
    ("POST", "/auth/update-password", ["old_password", "new_password", "new_password2"]),
    (
        "POST",
        "/auth/update-password-no-auth",
        ["domain", "username", "current_password", "new_password"],
    ),
    ("POST", "/auth/update-full-name", ["email", "full_name"]),
    ("GET", "/acl", []),
    ("GET", "/config/resource-slots/details", ["sgroup"]),
    ("GET", "/scaling-groups", ["group"]),
    ("GET", "/scaling-groups/default/wsproxy-version", ["group"]),
    ("GET", "/manager/status", []),
    ("GET", "/manager/announcement", []),
    ("POST", "/manager/announcement", ["enabled", "message"]),
    (
        "POST",
        "/logs/error",
        ["severity", "source", "message", "context_lang", "context_env", "request_status"],
    ),
    ("GET", "/logs/error", ["mark_read", "page_size", "page_no"]),
    ("POST", "/logs/error/00000000-0000-0000-0000-000000000000/clear", []),
]

_json = json_values(["default", "user", "admin@lablup.com", "user@lablup.com", "error", "{}", ""])


async def _fuzz(db_url: str) -> None:
    config = manager_config('allow-signup = true\nmax-password-age = "30d"\n')
    async with (
        create_database(db_url) as db,
        running_api(db, config=config, public_rate_limit=10**6) as api,
    ):
        requests = route_requests(ROUTES, _json, query_methods=("GET",))
        await fuzz_api(api, requests, EXAMPLES, json_answers=False)


def test_random_admin_requests_never_get_a_500(db_url: str) -> None:
    trio.run(_fuzz, db_url)
