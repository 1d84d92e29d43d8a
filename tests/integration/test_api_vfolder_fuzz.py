"""Random requests to the ``/folders`` routes never get a 500, and every failure is a problem.

Hypothesis draws a route (with an existing folder, a missing one, or an id
in the path), a caller (superadmin, user, anonymous) and parameters: objects
with the route's own keys and random values, arbitrary JSON, random bytes,
or a query string.  Runs against both deployments with a storage proxy;
examples go through the Trio loop from Hypothesis's worker thread.
"""

from __future__ import annotations

import json

import httpx
import trio
from hypothesis import strategies as st

from support.api_session import Deployment
from support.fuzz import Request, assert_not_a_500, bodies, json_values, queries, run_examples
from support.vfolders import HOST, deployment, new_folder

__all__ = ["deployment"]

EXAMPLES = 300

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

_json = json_values(
    ["fz", "..", "a/b", HOST, "ro", "wd", "default", "user@lablup.com", "10g", "-1", ""]
)


@st.composite
def requests(draw: st.DrawFn, refs: list[str]) -> Request:
    method, template, keys = draw(st.sampled_from(ROUTES))
    ref = draw(st.sampled_from([*refs, "nope", "..", "%2e%2e", "_", "a%2Fb"]))
    path = template.replace("{name}", ref)
    caller = draw(st.sampled_from(["admin", "user", "anonymous"]))
    if draw(st.booleans()):
        return method, path, caller, draw(queries(keys)), None
    return method, path, caller, {}, draw(bodies(keys, _json))


async def test_random_folder_requests_never_get_a_500(deployment: Deployment) -> None:
    d = deployment
    await d.allow_many_requests()
    made = await new_folder(d, name="fz", cloneable=True)
    refs = ["fz", made["id"]]

    async def send(request: Request) -> httpx.Response:
        method, path, caller, params, body = request
        key = {"admin": d.api.admin, "user": d.api.user}.get(caller)
        with trio.fail_after(30):
            response: httpx.Response = await d.api.call(
                method, path, key=key, params=params or None, content=body
            )
        return response

    def check(request: Request, response: httpx.Response) -> None:
        content_type = response.headers.get("content-type", "")
        assert_not_a_500(request, response.status_code, content_type, response.content)
        if response.status_code < 400 and response.status_code != 204:
            assert content_type == "application/json", request
            json.loads(response.content)

    await run_examples(EXAMPLES, requests(refs), send, check)
