"""Random requests against the dotfile routes never get a 500, and every failure is a problem.

As ``test_api_fuzz``: hypothesis draws a route, a caller (superadmin, user or
anonymous) and a query or body with the route's own field names and hostile
values (paths leaving ``/home/work``, odd permissions, non-strings).
"""

from __future__ import annotations

import json

import httpx
import trio
from hypothesis import strategies as st

from bai.manager.db import create_database

from support.api import running_api
from support.fuzz import Request, assert_not_a_500, bodies, json_values, queries, run_examples

EXAMPLES = 150

_DOTFILE = ["path", "permission", "data"]
#: (method, path, field names of its body or query)
ROUTES: list[tuple[str, str, list[str]]] = [
    ("POST", "/user-config/dotfiles", [*_DOTFILE, "owner_access_key"]),
    ("GET", "/user-config/dotfiles", ["path", "owner_access_key"]),
    ("PATCH", "/user-config/dotfiles", [*_DOTFILE, "owner_access_key"]),
    ("DELETE", "/user-config/dotfiles", ["path", "owner_access_key"]),
    ("GET", "/user-config/bootstrap-script", []),
    ("POST", "/user-config/bootstrap-script", ["script"]),
    ("POST", "/domain-config/dotfiles", ["domain", *_DOTFILE]),
    ("GET", "/domain-config/dotfiles", ["domain", "path"]),
    ("PATCH", "/domain-config/dotfiles", ["domain", *_DOTFILE]),
    ("DELETE", "/domain-config/dotfiles", ["domain", "path"]),
    ("POST", "/group-config/dotfiles", ["group", "groupId", "domain", *_DOTFILE]),
    ("GET", "/group-config/dotfiles", ["group", "group_id", "domain", "path"]),
    ("PATCH", "/group-config/dotfiles", ["group", "domain", *_DOTFILE]),
    ("DELETE", "/group-config/dotfiles", ["group", "domain", "path"]),
]

_json = json_values(
    ["default", ".bashrc", "../x", "/etc/passwd", "a/b", "644", "0777", "", ".", "\u00e9"]
)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method, path, fields = draw(st.sampled_from(ROUTES))
    caller = draw(st.sampled_from(["admin", "user", "anonymous"]))
    if method in ("GET", "DELETE"):
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


def test_random_dotfile_requests_never_get_a_500(db_url: str) -> None:
    trio.run(_fuzz, db_url)
