"""``bootstrap_script`` over the session API, in the embedded and the distributed deployment."""

from __future__ import annotations

from pathlib import Path

from support.agent import read
from support.api_session import (
    Deployment,
    problem,
    unique_name,
)


async def test_the_script_prepares_the_work_dir_before_the_session_runs(
    deployment: Deployment,
) -> None:
    name = unique_name()
    script = (
        'echo "prepared for $BACKENDAI_SESSION_ID" > prepared.txt\n'
        "echo bootstrap-was-here\n"
        "echo bootstrap-warns >&2\n"
    )
    created = await deployment.create(name=name, bootstrap_script=script)
    assert created["status"] == "RUNNING"
    out, err = await deployment.run(name, "print(open('prepared.txt').read(), end='')")
    assert (out, err) == (f"prepared for {created['sessionId']}\n", "")
    logs = await deployment.api.call("GET", f"/session/{name}/logs", key=deployment.api.user)
    assert logs.status_code == 200
    text = logs.json()["result"]["logs"]
    assert "bootstrap-was-here" in text and "bootstrap-warns" in text
    assert (await deployment.destroy(name)).status_code == 200


async def test_every_kernel_of_a_cluster_runs_the_script(deployment: Deployment) -> None:
    name = unique_name()
    script = 'echo "$BACKENDAI_CLUSTER_HOST" > host.txt\n'
    created = await deployment.create(
        name=name, bootstrap_script=script, cluster_size=2, cluster_mode="single-node"
    )
    assert created["status"] == "RUNNING"
    kernels = [k for agent in deployment.cluster.agents for k in agent.kernels.values()]
    hosts = sorted(read(Path(k.record.scratch_dir, "host.txt")) for k in kernels)
    assert hosts == ["main1\n", "sub1\n"]
    assert (await deployment.destroy(name)).status_code == 200


async def test_a_failing_script_ends_the_session_in_error(deployment: Deployment) -> None:
    name = unique_name()
    script = "echo 'cannot fetch the dataset' >&2\nexit 1\n"
    created = await deployment.create(name=name, bootstrap_script=script)
    assert (created["status"], created["statusInfo"]) == ("ERROR", "bootstrap-failed")
    info = await deployment.info(name)
    assert (info["status"], info["statusInfo"]) == ("ERROR", "bootstrap-failed")
    error = info["statusData"]["error"]
    assert error["name"] == "KernelCreationFailed"
    assert "the bootstrap script failed" in error["repr"]
    assert "cannot fetch the dataset" in error["repr"]
    assert "exited with code 1" in error["repr"]
    assert [k["statusInfo"] for k in info["kernels"]] == ["bootstrap-failed"]
    assert all(not agent.kernels for agent in deployment.cluster.agents)
    assert (await deployment.destroy(name)).status_code == 200
    assert (await deployment.info(name))["status"] == "TERMINATED"


async def test_a_script_that_is_no_string_is_refused(deployment: Deployment) -> None:
    before = await deployment.table_counts()
    response = await deployment.api.call(
        "POST",
        "/session",
        key=deployment.api.user,
        json_body={"image": "python", "name": unique_name(), "bootstrap_script": 42},
    )
    assert "bootstrap_script" in problem(response, 400, "invalid-api-params")
    assert await deployment.table_counts() == before
