"""Random requests against the account and administration routes never get a 500.

As ``test_api_fuzz``: Hypothesis draws one of this module's routes, a caller
(superadmin, user or anonymous) and a body or query with the route's own
field names and random values, arbitrary JSON, or random bytes.  Sign-up is
on and passwords expire, so every account route is reachable; the status
route is left out, as freezing would turn later examples into 503s.
"""

from __future__ import annotations

import httpx
import trio
from hypothesis import strategies as st

from bai.manager.db import create_database

from support.api import manager_config, running_api
from support.fuzz import Request, assert_not_a_500, bodies, json_values, queries, run_examples

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


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method, path, fields = draw(st.sampled_from(ROUTES))
    caller = draw(st.sampled_from(["admin", "user", "anonymous"]))
    if method == "GET":
        return method, path, caller, draw(queries(fields)), None
    return method, path, caller, {}, draw(bodies(fields, _json))


async def _fuzz(db_url: str) -> None:
    config = manager_config('allow-signup = true\nmax-password-age = "30d"\n')
    async with (
        create_database(db_url) as db,
        running_api(db, config=config, public_rate_limit=10**6) as api,
    ):
        for key in (api.admin, api.user):
            await api.update_keypair(key, rate_limit=10**6)

        async def send(request: Request) -> httpx.Response:
            method, path, caller, params, body = request
            key = {"admin": api.admin, "user": api.user}.get(caller)
            return await api.call(method, path, key=key, params=params or None, content=body)

        def check(request: Request, response: httpx.Response) -> None:
            content_type = response.headers.get("content-type", "")
            assert_not_a_500(request, response.status_code, content_type, response.content)

        await run_examples(EXAMPLES, requests(), send, check)


def test_random_admin_requests_never_get_a_500(db_url: str) -> None:
    trio.run(_fuzz, db_url)
