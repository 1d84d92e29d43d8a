"""Idle reclaim: unused sessions end with ``idle-timeout``, old ones with
``idle-session-lifetime``; code runs, terminal messages and app traffic count as use."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from bai.client import APIClient, ComputeSession
from bai.client.stream import stream_pty
from bai.manager.idle import IdleChecker

from support.api_session import Backends, Deployment, running_deployment, unique_name


async def _status(deployment: Deployment, name: str) -> tuple[str, str | None]:
    info = await deployment.info(name)
    return info["status"], info.get("statusInfo")


async def _wait_ended(deployment: Deployment, name: str) -> str | None:
    with trio.fail_after(30):
        while True:
            status, reason = await _status(deployment, name)
            if status == "TERMINATED":
                return reason
            await trio.sleep(0.1)


async def test_used_sessions_live_and_end_once_unused(deployment: Deployment) -> None:
    running, typing = unique_name(), unique_name()
    for name in (running, typing):
        await deployment.create(name=name)
    ids = [uuid.UUID((await deployment.info(name))["sessionId"]) for name in (running, typing)]
    checker = deployment.api.ctx.idle
    async with APIClient(deployment.sdk_config(deployment.api.user)) as api:
        async with stream_pty(ComputeSession(api, typing)) as pty:
            await deployment.run(running, "print(1)")
            await pty.ping()
            # The limit applies from now on (to sessions made before it too).
            await deployment.set_policy(idle_timeout=5)
            # Seven seconds of use: code runs in one session, terminal pings in the other.
            for _ in range(7):
                await deployment.run(running, "print(1)")
                await pty.ping()
                await trio.sleep(1)
        await trio.sleep(1.5)  # the activity of the last second is written
        for report in (await checker.reports(ids)).values():
            assert 0 < report["network_timeout"]["remaining"] <= 5
        # GraphQL shows the same, as the official client's `ps -f idle_checks` asks.
        answer = await deployment.api.call(
            "POST",
            "/admin/gql",
            key=deployment.api.user,
            json_body={
                "query": "query($id: UUID!) { compute_session(id: $id) { idle_checks } }",
                "variables": {"id": str(ids[0])},
            },
        )
        checks = json.loads(answer.json()["data"]["compute_session"]["idle_checks"])
        assert checks["network_timeout"]["remaining_time_type"] == "expire_after"
        assert 0 < checks["network_timeout"]["remaining"] <= 5
        await checker.check_once()
        assert (await _status(deployment, running))[0] == "RUNNING"
        assert (await _status(deployment, typing))[0] == "RUNNING"
        # Now nobody types: the terminal's session runs out, the other one lives on.
        for _ in range(7):
            await deployment.run(running, "print(1)")
            await trio.sleep(1)
        await checker.check_once()
    assert await _wait_ended(deployment, typing) == "idle-timeout"
    assert (await _status(deployment, running))[0] == "RUNNING"


async def test_an_old_session_is_ended_once_by_concurrent_checkers(
    deployment: Deployment,
) -> None:
    await deployment.set_policy(max_session_lifetime=2)
    name = unique_name()
    await deployment.create(name=name)
    await deployment.run(name, "print(1)")
    await trio.sleep(2.5)
    registry = deployment.api.ctx.registry
    checkers = [
        IdleChecker(
            deployment.db,
            lambda sid, reason: registry.destroy_session(sid, reason=reason),
        )
        for _ in range(3)
    ]
    ended: list[dict[uuid.UUID, str]] = []

    async def check(checker: IdleChecker) -> None:
        ended.append(await checker.check_once())

    async with trio.open_nursery() as nursery:
        for checker in checkers:
            nursery.start_soon(check, checker)
    # The manager's own checker may have come first; never two of them.
    assert sum(len(one) for one in ended) <= 1
    assert await _wait_ended(deployment, name) == "idle-session-lifetime"


async def test_a_typo_in_the_idle_settings_keeps_the_defaults(deployment: Deployment) -> None:
    await deployment.set_policy(idle_timeout=1)
    response = await deployment.api.call(
        "POST",
        "/config/set",
        key=deployment.api.admin,
        json_body={"key": "config/idle/enabled", "value": "network_timeout,utilisation"},
    )
    assert response.status_code == 200, response.text
    name = unique_name()
    await deployment.create(name=name)
    await trio.sleep(1.5)
    await deployment.api.ctx.idle.check_once()
    assert await _wait_ended(deployment, name) == "idle-timeout"
    # An empty list turns idle reclaim off.
    response = await deployment.api.call(
        "POST",
        "/config/set",
        key=deployment.api.admin,
        json_body={"key": "config/idle/enabled", "value": ""},
    )
    assert response.status_code == 200, response.text
    kept = unique_name()
    await deployment.create(name=kept)
    await trio.sleep(1.5)
    assert await deployment.api.ctx.idle.check_once() == {}
    assert (await _status(deployment, kept))[0] == "RUNNING"


@pytest.fixture
async def proxied(backends: Backends, tmp_path: Path) -> AsyncIterator[Deployment]:
    async with running_deployment(backends, tmp_path, app_proxy=True) as running:
        yield running


async def test_app_traffic_through_the_app_proxy_counts_as_use(proxied: Deployment) -> None:
    await proxied.set_policy(idle_timeout=4)
    name = unique_name()
    created = await proxied.create(name=name)
    session_id = uuid.UUID(created["sessionId"])
    response = await proxied.api.call(
        "POST", f"/session/{name}/start-service", key=proxied.api.user, json_body={"app": "http"}
    )
    assert response.status_code == 200, response.text
    started = response.json()
    reports = functools.partial(proxied.api.ctx.idle.reports, [session_id])
    async with httpx.AsyncClient() as browser:
        added = await browser.get(
            f"{started['wsproxy_addr']}/v2/proxy/{started['token']}/{session_id}/add",
            params={"app": "http"},
        )
        url = added.json()["url"]
        for _ in range(6):
            await browser.get(url)
            await trio.sleep(1)
        # Only the browser used the session, and only through the proxy.
        remaining = (await reports())[session_id]["network_timeout"]["remaining"]
        assert 2 < remaining <= 4
    await proxied.api.ctx.idle.check_once()
    assert (await _status(proxied, name))[0] == "RUNNING"


async def _set_config(deployment: Deployment, key: str, value: object) -> None:
    response = await deployment.api.call(
        "POST", "/config/set", key=deployment.api.admin, json_body={"key": key, "value": value}
    )
    assert response.status_code == 200, response.text


BUSY_THREAD = (
    "import threading\n"
    "def spin():\n"
    "    while True: pass\n"
    "threading.Thread(target=spin, daemon=True).start()\n"
)


async def test_a_session_that_leaves_its_cpu_unused_ends_with_idle_utilization(
    deployment: Deployment,
) -> None:
    await _set_config(deployment, "config/idle/enabled", "utilization")
    await _set_config(
        deployment,
        "config/idle/checkers/utilization",
        {"resource-thresholds": {"cpu_util": {"average": 30}}, "initial-grace-period": 0},
    )
    lazy, busy = unique_name(), unique_name()
    for name in (lazy, busy):
        await deployment.create(name=name)
    await deployment.run(busy, BUSY_THREAD)
    # The window is the policy's idle timeout; a pass samples each session.
    await deployment.set_policy(idle_timeout=3)
    checker = deployment.api.ctx.idle
    busy_id = uuid.UUID((await deployment.info(busy))["sessionId"])
    with trio.fail_after(30):
        while (await _status(deployment, lazy))[0] == "RUNNING":
            await checker.check_once()
            await trio.sleep(0.5)
    assert await _wait_ended(deployment, lazy) == "idle-utilization"
    assert (await _status(deployment, busy))[0] == "RUNNING"
    report = (await checker.reports([busy_id]))[busy_id]["utilization"]
    assert report["remaining_time_type"] == "grace_period"
    average, threshold = report["extra"]["resources"]["cpu_util"]
    assert average > threshold == 30
