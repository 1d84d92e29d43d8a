"""``/manager/scheduler``: superadmins take agents out of scheduling and put them back."""

from __future__ import annotations

import uuid

from bai.common.types import SessionStatus

from support.api_session import (
    Deployment,
    unique_name,
)


async def test_excluded_agents_get_no_sessions_until_included(deployment: Deployment) -> None:
    admin = deployment.api.admin
    agent_id = deployment.cluster.agents[0].agent_id

    async def scheduler(method: str, path: str, body: object = None) -> dict[str, object]:
        target = f"/manager/scheduler/{path}"
        if body is None:
            response = await deployment.api.call(method, target, key=admin)
        else:
            response = await deployment.api.call(method, target, key=admin, json_body=body)
        assert response.status_code in (200, 204), response.text
        return response.json() if response.status_code == 200 else {}

    status = await scheduler("GET", "status")
    assert status["running"] is True and status["excluded_agents"] == []

    await scheduler("POST", "operation", {"op": "exclude-agents", "args": [agent_id]})
    assert (await scheduler("GET", "status"))["excluded_agents"] == [agent_id]
    waiting = await deployment.create(name=unique_name("wait"), maxWaitSeconds=1)
    assert waiting["status"] == "TIMEOUT"
    await scheduler("POST", "trigger", {"event": "schedule"})
    assert (await deployment.info(waiting["sessionId"]))["status"] == "PENDING"
    assert (await scheduler("GET", "status"))["pending_sessions"] == 1

    await scheduler("POST", "operation", {"op": "include-agents", "args": [agent_id]})
    await scheduler("POST", "trigger", {"event": "prepare"})
    started = await deployment.cluster.wait_status(
        uuid.UUID(waiting["sessionId"]), SessionStatus.RUNNING
    )
    assert started.main_kernel.agent == agent_id
    last = (await scheduler("GET", "status"))["last_pass"]
    assert isinstance(last, dict) and "duration" in last
