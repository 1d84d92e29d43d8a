"""Random requests against the ``/template`` routes never get a 500, and every failure is a problem.

As ``test_api_fuzz``: hypothesis draws a route (the ten ``/template`` routes,
with a stored template's id, another id or garbage), a caller (superadmin,
user or anonymous) and a query or body with the route's own field names and
hostile values (payloads that are almost templates, YAML with aliases,
nesting, non-strings).  The session-creating routes are left out: without
agents a created session would wait for a place forever.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
import trio
import yaml

from bai.manager.db import create_database
from bai.manager.models.image import images

from support.api import running_api
from support.fuzz import fuzz_api, json_values, route_requests

EXAMPLES = 150

TEMPLATE = {
    "api_version": "v1",
    "kind": "taskTemplate",
    "metadata": {"name": "fuzz"},
    "spec": {"kernel": {"image": "python"}, "resources": {"cpu": "1"}},
}
_STORE = ["payload", "group", "domain", "owner_access_key", "groupName", "domain_name"]
_PAYLOADS = [
    yaml.safe_dump(TEMPLATE),
    json.dumps(TEMPLATE),
    json.dumps([{"template": TEMPLATE, "name": "x", "user_uuid": "nobody"}]),
    yaml.safe_dump({**TEMPLATE, "spec": {"kernel": {"image": "nowhere"}}}),
    yaml.safe_dump({**TEMPLATE, "spec": {"kernel": {"image": "python"}, "mounts": {"x": "/"}}}),
    "a: &x [1]\nb: *x\n",
    "[" * 2000,
    "kind: clusterTemplate\nmode: single-node\n",
    "default",
    "",
]


def _routes(template_id: str) -> list[tuple[str, str, list[str]]]:
    routes: list[tuple[str, str, list[str]]] = []
    for kind in ("session", "cluster"):
        for ref in (template_id, "0" * 32, "not-an-id"):
            routes += [
                ("GET", f"/template/{kind}/{ref}", ["format", "owner_access_key"]),
                ("PUT", f"/template/{kind}/{ref}", _STORE),
                ("DELETE", f"/template/{kind}/{ref}", ["owner_access_key"]),
            ]
        routes += [
            ("POST", f"/template/{kind}", _STORE),
            ("GET", f"/template/{kind}", ["all", "group_id", "groupId"]),
        ]
    return routes


async def _fuzz(db_url: str) -> None:
    async with create_database(db_url) as db, running_api(db, public_rate_limit=10**6) as api:
        # Agents register images; there is none here, so the template's image is put by hand.
        async with db.begin() as conn:
            await conn.execute(
                sa.insert(images).values(name="python", registry="local", image="python", tag="x")
            )
        stored = await api.call(
            "POST", "/template/session", key=api.user, json_body={"payload": _PAYLOADS[0]}
        )
        assert stored.status_code == 200, stored.text

        requests = route_requests(_routes(stored.json()[0]["id"]), json_values(_PAYLOADS))
        await fuzz_api(api, requests, EXAMPLES, json_answers=False)


def test_random_template_requests_never_get_a_500(db_url: str) -> None:
    trio.run(_fuzz, db_url)
