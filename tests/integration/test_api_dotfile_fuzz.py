"""Random requests against the dotfile routes never get a 500, and every failure is a problem.

As ``test_api_fuzz``: hypothesis draws a route, a caller (superadmin, user or
anonymous) and a query or body with the route's own field names and hostile
values (paths leaving ``/home/work``, odd permissions, non-strings).
"""

from __future__ import annotations

import trio

from bai.manager.db import create_database

from support.api import running_api
from support.fuzz import fuzz_api, json_values, route_requests

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


async def _fuzz(db_url: str) -> None:
    async with create_database(db_url) as db, running_api(db, public_rate_limit=10**6) as api:
        await fuzz_api(api, route_requests(ROUTES, _json), EXAMPLES)


def test_random_dotfile_requests_never_get_a_500(db_url: str) -> None:
    trio.run(_fuzz, db_url)
