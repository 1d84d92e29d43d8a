"""Bad input to the session routes: the right 4xx, an RFC 7807 body naming the problem,
and a database left as it was."""

from __future__ import annotations

import json
from typing import Any

from support.api_session import (
    RESOURCES,
    Deployment,
    problem,
    unique_name,
)

# (body, status, problem type, field) of creation requests that must be refused.
BAD_CREATIONS: list[tuple[Any, int, str, str | None]] = [
    ({"name": "no-image-x"}, 400, "invalid-api-params", "image"),
    ({"image": 1}, 400, "invalid-api-params", "image"),
    ({"image": "python", "enqueueOnly": "yes"}, 400, "invalid-api-params", "enqueueOnly"),
    ({"image": "python", "cluster_size": "2"}, 400, "invalid-api-params", "cluster_size"),
    ({"image": "python", "cluster_size": 0}, 400, "invalid-api-params", "cluster_size"),
    ({"image": "python", "cluster_size": 1, "clusterSize": 2}, 400, "invalid-api-params", None),
    ({"image": "python", "config": []}, 400, "invalid-api-params", "config"),
    (
        {"image": "python", "config": {"resources": {"cpu": [1]}}},
        400,
        "invalid-api-params",
        "config.resources.cpu",
    ),
    (
        {"image": "python", "config": {"resources": {"cpu": "lots"}}},
        400,
        "invalid-api-params",
        "config.resources.cpu",
    ),
    (
        {"image": "python", "config": {"resources": {"cpu": "0.5", "mem": "256m"}}},
        400,
        "invalid-api-params",
        "config.resources.cpu",
    ),
    (
        {"image": "python", "config": {"environ": {"1BAD": "x"}}},
        400,
        "invalid-api-params",
        "config.environ",
    ),
    ({"image": "no-such-image"}, 404, "image-not-found", "image"),
    ({"image": "python", "architecture": "s390x"}, 404, "image-not-found", "architecture"),
    ({"image": "python", "name": "a b"}, 400, "invalid-api-params", "name"),
    ({"image": "python", "name": "abc"}, 400, "invalid-api-params", "name"),
    ({"image": "python", "type": "weird"}, 400, "invalid-api-params", "type"),
    ({"image": "python", "type": "batch"}, 400, "invalid-api-params", "startupCommand"),
    ({"image": "python", "maxWaitSeconds": -1}, 400, "invalid-api-params", "maxWaitSeconds"),
    ({"image": "python", "starts_at": "tomorrow"}, 400, "invalid-api-params", "starts_at"),
    ({"image": "python", "dependencies": ["nope"]}, 400, "invalid-api-params", "dependencies.0"),
    ({"image": "python", "group": "no-such-group"}, 400, "invalid-api-params", "group"),
    (
        {"image": "python", "config": {"mounts": ["data"]}},
        404,
        "vfolder-not-found",
        "config.mounts.0",
    ),
    (
        {"image": "python", "config": {"mounts": ["a/b"]}},
        400,
        "invalid-api-params",
        "config.mounts.0",
    ),
    (
        {"image": "python", "config": {"mounts": ["data"], "mount_map": {"data": "/etc/x"}}},
        400,
        "invalid-api-params",
        "config.mount_map.data",
    ),
    (
        {"image": "python", "config": {"mounts": ["data"], "mount_map": {"other": "x"}}},
        400,
        "invalid-api-params",
        "config.mount_map.other",
    ),
    (
        {"image": "python", "config": {"resource_opts": {"shm": "64m"}}},
        400,
        "invalid-api-params",
        "config.resource_opts.shm",
    ),
    (
        {"image": "python", "config": {"preopen_ports": [8080]}},
        400,
        "invalid-api-params",
        "config.preopen_ports",
    ),
    # Over any agent's capacity (over a policy: the test below).
    (
        {"image": "python", "config": {"resources": {"cpu": "1", "mem": "10000g"}}},
        406,
        "resource-limit-exceeded",
        "config.resources.kernels",
    ),
    ({"image": "python", "priority": 10}, 403, "forbidden", None),
    (
        {"image": "python", "config": {"agentList": ["any-agent"]}},
        403,
        "forbidden",
        None,
    ),
    ({"image": "python", "owner_access_key": "AKIANOTMINE"}, 403, "forbidden", None),
]


async def test_refused_creations_change_nothing(deployment: Deployment) -> None:
    before = await deployment.table_counts()
    for body, status, kind, field in BAD_CREATIONS:
        response = await deployment.api.call(
            "POST", "/session", key=deployment.api.user, json_body=body
        )
        detail = problem(response, status, kind, field)
        assert detail, body
    for raw in (b"{", b"[1, 2]", b"\xff\xfe", b'{"image": "python\\u0000"}'):
        response = await deployment.api.call(
            "POST", "/session", key=deployment.api.user, content=raw
        )
        problem(response, 400, "invalid-api-params")
    assert await deployment.table_counts() == before

    name = unique_name()
    await deployment.create(name=name)
    after_one = await deployment.table_counts()
    taken = await deployment.api.call(
        "POST",
        "/session",
        key=deployment.api.user,
        json_body={"image": "python", "name": name, "reuseIfExists": False},
    )
    problem(taken, 409, "session-already-exists")
    assert await deployment.table_counts() == after_one


async def test_refused_calls_on_sessions(deployment: Deployment) -> None:
    name = unique_name()
    await deployment.create(name=name)
    user = deployment.api.user

    async def call(method: str, path: str, **kwargs: Any) -> Any:
        return await deployment.api.call(method, path, key=user, **kwargs)

    problem(await call("GET", "/session/no-such-session"), 404, "session-not-found")
    # PostgreSQL refuses a NUL in a query: the API must say so before asking.
    problem(await call("GET", "/session/%00"), 404, "session-not-found")
    problem(
        await call("POST", f"/session/{name}", json_body={"mode": "sideways"}),
        400,
        "invalid-api-params",
        "mode",
    )
    problem(
        await call("POST", f"/session/{name}", json_body={"code": "print(1)"}),
        400,
        "invalid-api-params",
        "mode",
    )
    problem(
        await call("POST", f"/session/{name}", json_body={"mode": "continue"}),
        400,
        "invalid-api-params",
        "runId",
    )
    problem(
        await call("POST", f"/session/{name}", json_body={"mode": "continue", "runId": "nope"}),
        400,
        "invalid-api-params",
    )
    problem(
        await call("POST", f"/session/{name}", json_body={"mode": "batch", "options": {"exec": 1}}),
        400,
        "invalid-api-params",
        "options",
    )
    problem(
        await call("POST", f"/session/{name}/rename", params={"name": "x"}),
        400,
        "invalid-api-params",
        "name",
    )
    problem(await call("GET", "/session/_/match", params={"id": ""}), 400, "invalid-api-params")
    problem(await call("GET", "/session/_/match"), 400, "invalid-api-params", "id")
    problem(
        await call("GET", "/session/_/match", params={"id": "a\x00b"}),
        400,
        "invalid-api-params",
        "id",
    )

    # Files: too many, too large, not multipart, outside /home/work.
    too_many = [(f"f{i}.txt", b"x") for i in range(21)]
    problem(await deployment.upload(name, too_many), 400, "invalid-api-params", "files")
    big = [("ok.txt", b"fine"), ("big.bin", b"\0" * (2 * 1024 * 1024))]
    problem(await deployment.upload(name, big), 400, "invalid-api-params", "big.bin")
    problem(await deployment.upload(name, [("../escape.txt", b"x")]), 400, "invalid-api-params")
    problem(
        await call("POST", f"/session/{name}/upload", json_body={"files": []}),
        400,
        "invalid-api-params",
        "Content-Type",
    )
    listing = await call("GET", f"/session/{name}/files", params={"path": "."})
    # Nothing was written: only the session's SSH files are there.
    assert {f["filename"] for f in json.loads(listing.json()["files"])} == {".ssh", "id_container"}
    for path in ("../../etc/passwd", "/etc/passwd"):
        problem(
            await call("GET", f"/session/{name}/download_single", params={"file": path}),
            400,
            "invalid-api-params",
        )
    problem(
        await call("GET", f"/session/{name}/download", json_body={"files": ["a"] * 6}),
        400,
        "invalid-api-params",
        "files",
    )
    problem(
        await call("GET", f"/session/{name}/download_single", params={"file": "missing.txt"}),
        404,
        "kernel-file-error",
    )

    other = unique_name()
    await deployment.create(name=other)
    problem(
        await call("POST", f"/session/{other}/rename", params={"name": name}),
        409,
        "session-already-exists",
    )
    await deployment.destroy(name)
    problem(
        await call("POST", f"/session/{name}", json_body={"mode": "query", "code": "1"}),
        409,
        "session-not-running",
    )
    problem(await call("PATCH", f"/session/{name}"), 409, "session-not-running")
    problem(await call("POST", f"/session/{name}/interrupt"), 409, "session-not-running")


async def test_refused_event_streams_and_scheduler_calls(deployment: Deployment) -> None:
    user, admin = deployment.api.user, deployment.api.admin
    for params, status, field in (
        ({"sessionId": "not-a-uuid"}, 400, "sessionId"),
        ({"scope": "everything"}, 400, "scope"),
        ({"group": "no-such-project"}, 404, None),
        ({"ownerAccessKey": admin.access_key}, 403, None),
    ):
        response = await deployment.api.call("GET", "/events/session", key=user, params=params)
        kind = {400: "invalid-api-params", 403: "forbidden", 404: "object-not-found"}[status]
        problem(response, status, kind, field)
    response = await deployment.api.call(
        "GET", "/events/background-task", key=user, params={"task_id": "x"}
    )
    problem(response, 400, "invalid-api-params", "task_id")

    problem(
        await deployment.api.call("GET", "/manager/scheduler/status", key=user), 403, "forbidden"
    )
    for body, status, kind in (
        ({"op": "explode", "args": []}, 400, "invalid-api-params"),
        ({"op": "exclude-agents", "args": "agent"}, 400, "invalid-api-params"),
        ({"op": "exclude-agents", "args": ["no-such-agent"]}, 404, "agent-not-found"),
    ):
        response = await deployment.api.call(
            "POST", "/manager/scheduler/operation", key=admin, json_body=body
        )
        problem(response, status, kind)
    response = await deployment.api.call(
        "POST", "/manager/scheduler/trigger", key=admin, json_body={"event": "now"}
    )
    problem(response, 400, "invalid-api-params", "event")


async def test_a_session_request_over_capacity_names_the_slot(deployment: Deployment) -> None:
    await deployment.set_policy(total_resource_slots={"cpu": "1"})
    response = await deployment.api.call(
        "POST",
        "/session",
        key=deployment.api.user,
        json_body={"image": "python", "config": {"resources": {**RESOURCES, "cpu": "2"}}},
    )
    detail = problem(response, 412, "quota-exceeded", "config.resources")
    assert "cpu (requesting 2, limit 1)" in detail
