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

import httpx
import sqlalchemy as sa
import trio
import yaml
from hypothesis import strategies as st

from bai.manager.db import create_database
from bai.manager.models.image import images

from support.api import running_api
from support.fuzz import Request, assert_not_a_500, bodies, json_values, queries, run_examples

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


def requests(template_id: str) -> st.SearchStrategy[Request]:
    values = json_values(_PAYLOADS)

    @st.composite
    def draw_request(draw: st.DrawFn) -> Request:
        method, path, fields = draw(st.sampled_from(_routes(template_id)))
        caller = draw(st.sampled_from(["admin", "user", "anonymous"]))
        if method in ("GET", "DELETE"):
            return method, path, caller, draw(queries(fields)), None
        return method, path, caller, {}, draw(bodies(fields, values))

    return draw_request()


async def _fuzz(db_url: str) -> None:
    async with create_database(db_url) as db, running_api(db, public_rate_limit=10**6) as api:
        for key in (api.admin, api.user):
            await api.update_keypair(key, rate_limit=10**6)
        # Agents register images; there is none here, so the template's image is put by hand.
        async with db.begin() as conn:
            await conn.execute(
                sa.insert(images).values(name="python", registry="local", image="python", tag="x")
            )
        stored = await api.call(
            "POST", "/template/session", key=api.user, json_body={"payload": _PAYLOADS[0]}
        )
        assert stored.status_code == 200, stored.text

        async def send(request: Request) -> httpx.Response:
            method, path, caller, params, body = request
            key = {"admin": api.admin, "user": api.user}.get(caller)
            return await api.call(method, path, key=key, params=params or None, content=body)

        def check(request: Request, response: httpx.Response) -> None:
            content_type = response.headers.get("content-type", "")
            assert_not_a_500(request, response.status_code, content_type, response.content)

        await run_examples(EXAMPLES, requests(stored.json()[0]["id"]), send, check)


def test_random_template_requests_never_get_a_500(db_url: str) -> None:
    trio.run(_fuzz, db_url)
