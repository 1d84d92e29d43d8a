"""The session routes around a session's relations and reports: dependency-graph,
direct-access-info, abusing-report, sync-agent-registry, and the legacy create path."""

from __future__ import annotations

from typing import Any

from support.api_session import Deployment, problem, unique_name

BATCH = {"type": "batch", "startupCommand": "sleep 600", "enqueueOnly": True}


def names(node: dict[str, Any]) -> list[Any]:
    return [node["session_name"], [names(child) for child in node["depends_on"]]]


async def test_the_dependency_graph_is_a_tree_of_the_sessions_waited_for(
    deployment: Deployment,
) -> None:
    base, middle, top = unique_name("base"), unique_name("mid"), unique_name("top")
    await deployment.create(name=base, **BATCH)
    await deployment.create(name=middle, dependencies=[base], **BATCH)
    await deployment.create(name=top, dependencies=[middle, base], **BATCH)
    response = await deployment.api.call(
        "GET", f"/session/{top}/dependency-graph", key=deployment.api.user
    )
    assert response.status_code == 200, response.text
    graph = response.json()
    # base is reached twice; its own dependencies (none) are listed under the first.
    expected_children = sorted([[middle, [[base, []]]], [base, []]])
    assert graph["session_name"] == top
    assert sorted(names(child) for child in graph["depends_on"]) == expected_children
    assert graph["status"].startswith("KernelStatus.")
    assert graph["status_changed"][:4].isdigit() and " " in graph["status_changed"]
    # Another user's session is not found by name.
    response = await deployment.api.call(
        "GET", f"/session/{top}/dependency-graph", key=deployment.api.admin
    )
    assert response.status_code == 404


async def test_reports_and_direct_access_of_an_interactive_session(
    deployment: Deployment,
) -> None:
    name = unique_name()
    await deployment.create(name=name)
    for route in ("direct-access-info", "abusing-report"):
        response = await deployment.api.call(
            "GET", f"/session/{name}/{route}", key=deployment.api.user
        )
        assert response.status_code == 200, response.text
        assert response.json() == {}


async def test_a_system_session_tells_where_its_sshd_listens(deployment: Deployment) -> None:
    name = unique_name()
    await deployment.create(name=name, type="system")
    response = await deployment.api.call(
        "GET", f"/session/{name}/direct-access-info", key=deployment.api.user
    )
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["kernel_role"] == "SYSTEM"
    assert info["public_host"]
    assert len(info["sshd_ports"]) == 1 and isinstance(info["sshd_ports"][0], int)


async def test_sync_agent_registry(deployment: Deployment) -> None:
    agent = deployment.cluster.agents[0].agent_id
    call = deployment.api.call
    response = await call(
        "POST",
        "/session/_/sync-agent-registry",
        key=deployment.api.user,
        json_body={"agent": agent},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {}
    response = await call(
        "POST",
        "/session/_/sync-agent-registry",
        key=deployment.api.user,
        json_body={"agent": "i-nobody"},
    )
    assert response.status_code == 404
    response = await call(
        "POST", "/session/_/sync-agent-registry", key=deployment.api.user, json_body={}
    )
    problem(response, 400, "invalid-api-params", "agent")


async def test_the_legacy_create_path_creates(deployment: Deployment) -> None:
    name = unique_name()
    response = await deployment.api.call(
        "POST",
        "/session/create",
        key=deployment.api.user,
        json_body={"name": name, "image": "python", "config": {"resources": {"cpu": "1"}}},
    )
    assert response.status_code == 201, response.text
    assert (await deployment.info(name))["status"] == "RUNNING"
