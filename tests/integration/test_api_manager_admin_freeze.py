"""Freezing a manager with live sessions, in the embedded and the distributed deployment:
new sessions are refused with the reason, running ones keep working unless force-killed."""

from __future__ import annotations

from support.api import assert_problem
from support.api_session import Deployment, unique_name


async def set_status(deployment: Deployment, **body: object) -> None:
    answer = await deployment.api.call(
        "PUT", "/manager/status", key=deployment.api.admin, json_body=body
    )
    assert answer.status_code == 204, answer.text


async def status(deployment: Deployment) -> dict[str, object]:
    answer: dict[str, object] = (await deployment.api.call("GET", "/manager/status")).json()
    return answer


async def test_frozen_manager_keeps_running_sessions_and_refuses_new_ones(
    deployment: Deployment,
) -> None:
    name = unique_name()
    await deployment.create(name=name)
    assert (await status(deployment))["active_sessions"] == 1
    await set_status(deployment, status="frozen")
    before = await deployment.table_counts()
    refused = await deployment.api.call(
        "POST",
        "/session",
        key=deployment.api.user,
        json_body={"image": "python", "name": unique_name()},
    )
    assert "frozen for maintenance" in assert_problem(refused, 503, "server-frozen")["detail"]
    assert await deployment.table_counts() == before
    # The running session is still usable while frozen.
    stdout, _ = await deployment.run(name, "print(6 * 7)")
    assert stdout.strip() == "42"
    await set_status(deployment, status="running")
    await deployment.create(name=unique_name())
    assert (await status(deployment))["active_sessions"] == 2


async def test_force_kill_freeze_ends_every_session(deployment: Deployment) -> None:
    names = [unique_name(), unique_name()]
    for name in names:
        await deployment.create(name=name)
    await set_status(deployment, status="frozen", force_kill=True)
    # The freeze answers once the sessions are destroyed.
    after = await status(deployment)
    assert (after["status"], after["active_sessions"]) == ("frozen", 0)
    for name in names:
        gone = await deployment.api.call("GET", f"/session/{name}", key=deployment.api.user)
        assert gone.status_code == 404 or gone.json()["status"] in ("TERMINATED", "TERMINATING")
    await set_status(deployment, status="running")


async def test_frozen_manager_refuses_graphql_mutations_and_answers_queries(
    deployment: Deployment,
) -> None:
    mutation = {
        "query": "mutation($n: String!, $p: DomainInput!)"
        " { create_domain(name: $n, props: $p) { ok msg } }",
        "variables": {"n": "frozen-domain", "p": {}},
    }
    query = {"query": "query { domains { name } }"}
    await set_status(deployment, status="frozen")
    refused = await deployment.api.call(
        "POST", "/admin/gql", key=deployment.api.admin, json_body=mutation
    )
    assert_problem(refused, 503, "server-frozen")
    answered = await deployment.api.call(
        "POST", "/admin/gql", key=deployment.api.admin, json_body=query
    )
    names = [d["name"] for d in answered.json()["data"]["domains"]]
    assert "frozen-domain" not in names
    await set_status(deployment, status="running")
    created = await deployment.api.call(
        "POST", "/admin/gql", key=deployment.api.admin, json_body=mutation
    )
    assert created.json()["data"]["create_domain"]["ok"] is True, created.text
