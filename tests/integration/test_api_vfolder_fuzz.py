"""Random requests to the ``/folders`` routes never get a 500, and every failure is a problem.

Hypothesis draws a route (with an existing folder, a missing one, or an id
in the path), a caller (superadmin, user, anonymous) and parameters: objects
with the route's own keys and random values, arbitrary JSON, random bytes,
or a query string.  Runs against both deployments with a storage proxy;
examples go through the Trio loop from Hypothesis's worker thread.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.api import PROBLEM_JSON
from support.api_session import Backends, Deployment, running_deployment

EXAMPLES = 300
HOST = "local:local"

#: (method, path with {name} for a folder reference, the route's keys)
ROUTES: list[tuple[str, str, list[str]]] = [
    (
        "POST",
        "/folders",
        ["name", "host", "usage_mode", "permission", "group", "quota", "cloneable"],
    ),
    ("GET", "/folders", ["all", "group_id", "owner_user_email"]),
    ("DELETE", "/folders", ["id"]),
    ("GET", "/folders/{name}", []),
    ("DELETE", "/folders/{name}", []),
    ("POST", "/folders/{name}/rename", ["new_name"]),
    ("POST", "/folders/{name}/update-options", ["permission", "cloneable"]),
    ("POST", "/folders/{name}/clone", ["target_name", "target_host", "permission", "cloneable"]),
    ("POST", "/folders/{name}/invite", ["perm", "emails", "user_ids"]),
    ("POST", "/folders/{name}/leave", ["shared_user_uuid"]),
    ("POST", "/folders/{name}/share", ["permission", "emails"]),
    ("DELETE", "/folders/{name}/unshare", ["emails"]),
    ("GET", "/folders/_/hosts", ["group_id"]),
    ("GET", "/folders/_/all-hosts", []),
    ("GET", "/folders/_/allowed-types", []),
    ("GET", "/folders/_/trash", []),
    ("POST", "/folders/_/restore", ["id", "name"]),
    ("POST", "/folders/_/purge", ["id"]),
    ("GET", "/folders/_/shared", ["vfolder_id"]),
    ("POST", "/folders/_/shared", ["vfolder", "user", "perm"]),
    ("POST", "/folders/_/change-ownership", ["vfolder", "user_email"]),
    ("GET", "/folders/_/quota", ["folder_host", "id"]),
    ("POST", "/folders/_/quota", ["folder_host", "id", "input"]),
    ("GET", "/folders/_/usage", ["folder_host", "id"]),
    ("GET", "/folders/_/used-bytes", ["folder_host", "id"]),
    ("GET", "/folders/invitations/list", []),
    ("GET", "/folders/invitations/list-sent", []),
    ("POST", "/folders/invitations/update/{name}", ["perm"]),
    ("POST", "/folders/invitations/accept", ["inv_id"]),
    ("DELETE", "/folders/invitations/delete", ["inv_id"]),
]

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(
        ["fz", "..", "a/b", HOST, "ro", "wd", "default", "user@lablup.com", "10g", "-1", ""]
    ),
)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def requests(draw: st.DrawFn, refs: list[str]) -> tuple[str, str, str, Any, bytes | None]:
    method, template, keys = draw(st.sampled_from(ROUTES))
    ref = draw(st.sampled_from([*refs, "nope", "..", "%2e%2e", "_", "a%2Fb"]))
    path = template.replace("{name}", ref)
    caller = draw(st.sampled_from(["admin", "user", "anonymous"]))
    names = st.sampled_from(keys) if keys else st.text(max_size=8)
    shaped = st.dictionaries(names | st.text(max_size=8), _json, max_size=len(keys) + 1)
    if draw(st.booleans()):
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


@pytest.fixture
async def deployment(backends: Backends, tmp_path: Path) -> AsyncIterator[Deployment]:
    async with running_deployment(backends, tmp_path, agent_count=0, storage=True) as running:
        await running.allow_many_requests()
        yield running


async def test_random_folder_requests_never_get_a_500(deployment: Deployment) -> None:
    d = deployment
    made = await d.api.call(
        "POST",
        "/folders",
        key=d.api.user,
        json_body={"name": "fz", "host": HOST, "cloneable": True},
    )
    assert made.status_code == 201, made.text
    refs = ["fz", made.json()["id"]]
    token = trio.lowlevel.current_trio_token()

    async def send(
        method: str, path: str, caller: str, params: Any, body: bytes | None
    ) -> httpx.Response:
        key = {"admin": d.api.admin, "user": d.api.user}.get(caller)
        with trio.fail_after(30):
            response: httpx.Response = await d.api.call(
                method, path, key=key, params=params or None, content=body
            )
        return response

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(requests(refs))
    def never_a_500(request: tuple[str, str, str, Any, bytes | None]) -> None:
        response = trio.from_thread.run(send, *request, trio_token=token)
        assert response.status_code < 500, (request, response.text)
        if response.status_code >= 400:
            assert response.headers["content-type"] == PROBLEM_JSON, request
            assert {"type", "title"} <= response.json().keys()
        elif response.status_code != 204:
            assert response.headers["content-type"] == "application/json", request
            response.json()

    await trio.to_thread.run_sync(never_a_500)
