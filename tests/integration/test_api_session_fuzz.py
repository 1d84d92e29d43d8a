"""Random requests to the session, event and scheduler routes never get a 500.

Hypothesis draws a route, a caller (superadmin, user or anonymous), the
session the path names (a running one by name or id, a made-up name) and a
body or query: objects with the route's own field names and values that
are often almost right, arbitrary JSON, or random bytes.  A real manager
and agent serve them.  Sessions the fuzzer manages to create are cancelled
after a second in the queue (the resource group's ``pending_timeout``), so
no request waits for capacity forever.  Hypothesis runs in a worker thread
and sends each example through the Trio loop.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
import trio
from hypothesis import strategies as st

from bai.common.auth import sign_request
from bai.manager.models.resource import scaling_groups

from support.api import API_VERSION
from support.api_session import (
    Backends,
    Deployment,
    running_deployment,
    unique_name,
)
from support.fuzz import Request, assert_not_a_500, bodies, json_values, queries, run_examples

EXAMPLES = 150

_CREATE = [
    "image",
    "name",
    "clientSessionToken",
    "type",
    "group",
    "domain",
    "cluster_size",
    "clusterSize",
    "cluster_mode",
    "config",
    "tag",
    "enqueueOnly",
    "maxWaitSeconds",
    "starts_at",
    "reuseIfExists",
    "startupCommand",
    "dependencies",
    "owner_access_key",
    "priority",
    "architecture",
]
#: (method, path with ``{s}`` for the session, field names of its body or query)
ROUTES: list[tuple[str, str, list[str]]] = [
    ("POST", "/session", _CREATE),
    ("POST", "/session/_/create", _CREATE),
    ("GET", "/session/_/match", ["id"]),
    ("GET", "/session/_/logs", ["session_name"]),
    ("GET", "/session/{s}", ["owner_access_key"]),
    ("PATCH", "/session/{s}", []),
    ("DELETE", "/session/{s}", ["forced", "recursive"]),
    ("POST", "/session/{s}", ["mode", "code", "runId", "options"]),
    ("GET", "/session/{s}/logs", []),
    ("GET", "/session/{s}/status-history", []),
    ("POST", "/session/{s}/rename", ["name"]),
    ("POST", "/session/{s}/interrupt", []),
    ("POST", "/session/{s}/complete", ["code", "options"]),
    ("POST", "/session/{s}/upload", []),
    ("GET", "/session/{s}/download", ["files"]),
    ("GET", "/session/{s}/download_single", ["file"]),
    ("GET", "/session/{s}/files", ["path"]),
    ("GET", "/events/session", ["name", "sessionId", "ownerAccessKey", "group", "scope"]),
    ("GET", "/events/background-task", ["task_id"]),
    ("POST", "/manager/scheduler/operation", ["op", "args"]),
    ("POST", "/manager/scheduler/trigger", ["event"]),
    ("GET", "/manager/scheduler/status", []),
]

_json = json_values(
    [
        "python",
        "python:3.11",
        "default",
        "query",
        "continue",
        "input",
        "complete",
        "interactive",
        "single-node",
        "multi-node",
        "cpu",
        "1",
        "256m",
        "*",
        "session",
        "kernel",
        "..",
        "../../etc/passwd",
        "exclude-agents",
        "schedule",
        "10m",
        "2030-01-01T00:00:00",
    ],
    keys=st.sampled_from(["resources", "environ", "mounts", "cpu", "mem", "exec"])
    | st.text(max_size=8),
    text_size=30,
)


@st.composite
def requests(draw: st.DrawFn, session_refs: list[str]) -> Request:
    method, template, fields = draw(st.sampled_from(ROUTES))
    ref = draw(st.sampled_from(session_refs) | st.text(min_size=1, max_size=20))
    path = template.replace("{s}", quote(ref, safe=""))
    caller = draw(st.sampled_from(["admin", "user", "user", "admin", "anonymous"]))
    if method == "GET":
        return method, path, caller, draw(queries(fields)), None
    return method, path, caller, {}, draw(bodies(fields, _json))


async def _send(deployment: Deployment, drawn: Request) -> tuple[int, str, bytes]:
    """Send *drawn*, signed by hand: (status, content type, body)."""
    method, path, caller, params, body = drawn
    api = deployment.api
    key = {"admin": api.admin, "user": api.user}.get(caller)
    request = api.http.build_request(
        method, api.base_url + path, params=params or None, content=body or b""
    )
    target = request.url.raw_path.decode()
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers = sign_request(
            method=method,
            path=target,
            host=api.host,
            api_version=API_VERSION,
            access_key=key.access_key,
            secret_key=key.secret_key,
        )
    request = api.http.build_request(
        method, api.base_url + target, content=body or b"", headers=headers
    )
    with trio.fail_after(30):
        response = await api.http.send(request, stream=True)
        try:
            # An accepted event stream never ends: its head is the answer.
            if response.headers.get("content-type") == "text/event-stream":
                return response.status_code, "text/event-stream", b""
            content = await response.aread()
        finally:
            await response.aclose()
    return response.status_code, response.headers.get("content-type", ""), content


async def _fuzz(backends: Backends, tmp_path: Path) -> None:
    async with running_deployment(backends, tmp_path) as deployment:
        await deployment.allow_many_requests()
        async with deployment.db.begin() as conn:
            await conn.execute(
                sa.update(scaling_groups).values(scheduler_opts={"pending_timeout": 1})
            )
        running = await deployment.create(name=unique_name("target"))
        refs = [running["sessionName"], running["sessionId"], running["sessionId"][:8], "_"]

        async def send(request: Request) -> tuple[int, str, bytes]:
            return await _send(deployment, request)

        def check(request: Request, answer: tuple[int, str, bytes]) -> None:
            assert_not_a_500(request, *answer)

        await run_examples(EXAMPLES, requests(refs), send, check)


def test_random_session_requests_never_get_a_500(backends: Backends, tmp_path: Path) -> None:
    trio.run(_fuzz, backends, tmp_path)
