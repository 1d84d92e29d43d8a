"""Usage reports under ``/resource``: per project for a month or a period, 15-minute bins
over 30 days, with their role rules and refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from support.api_session import Deployment, problem, unique_name

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\n"


async def _get(deployment: Deployment, path: str, admin: bool = True, **params: Any) -> Any:
    key = deployment.api.admin if admin else deployment.api.user
    response = await deployment.api.call("GET", path, key=key, params=params or None)
    assert response.status_code == 200, response.text
    return response.json()


async def _ended_session(deployment: Deployment) -> str:
    name = unique_name()
    created = await deployment.create(name=name)
    await deployment.run(name, BURN)
    assert (await deployment.destroy(name)).status_code == 200
    return str(created["sessionId"])


def _mine(report: list[dict[str, Any]], session_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    for project in report:
        for kernel in project["c_infos"]:
            if kernel["session_id"] == session_id:
                return project, kernel
    raise AssertionError(f"session {session_id} is not in the report")


async def test_a_month_and_a_period_report_what_a_session_held_and_used(
    deployment: Deployment,
) -> None:
    ended = await _ended_session(deployment)
    running = unique_name()
    running_id = str((await deployment.create(name=running))["sessionId"])
    today = datetime.now(UTC)
    monthly = await _get(deployment, "/resource/usage/month", month=today.strftime("%Y%m"))
    project, kernel = _mine(monthly, ended)
    assert project["g_name"] == "default"
    assert kernel["cpu_allocated"] == 1.0
    assert kernel["mem_allocated"] == 256 * 1024**2
    assert kernel["cpu_used"] >= 500
    assert kernel["status"] == "TERMINATED" and kernel["used_days"] == 1
    assert project["g_cpu_allocated"] >= 2.0  # the ended session and the running one
    _, live = _mine(monthly, running_id)
    assert live["status"] == "RUNNING" and live["used_time"] is None
    day = today.strftime("%Y%m%d")
    period = await _get(
        deployment,
        "/resource/usage/period",
        start_date=day,
        end_date=day,
        group_id=project["g_id"],
    )
    assert _mine(period, ended)[1]["id"] == kernel["id"]
    # Last month holds nothing of today's.
    earlier = (today.replace(day=1) - timedelta(days=1)).strftime("%Y%m")
    assert all(
        k["session_id"] != ended
        for p in await _get(deployment, "/resource/usage/month", month=earlier)
        for k in p["c_infos"]
    )


async def test_the_monthly_bins_count_ended_sessions(deployment: Deployment) -> None:
    await _ended_session(deployment)
    mine = await _get(deployment, "/resource/stats/user/month", admin=False)
    assert len(mine) == 2880
    assert mine[-1]["num_sessions"]["value"] >= 1
    assert mine[-1]["cpu_allocated"] == {"value": 1.0, "unit_hint": "count"}
    assert mine[0]["num_sessions"]["value"] == 0
    everyone = await _get(deployment, "/resource/stats/admin/month")
    assert everyone[-1]["num_sessions"]["value"] >= mine[-1]["num_sessions"]["value"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/resource/usage/month", {}, "month"),
        ("/resource/usage/month", {"month": "2026-12"}, "month"),
        ("/resource/usage/month", {"month": "202613"}, "month"),
        ("/resource/usage/month", {"month": "202612", "group_ids": "nope"}, "group_ids"),
        ("/resource/usage/period", {"start_date": "20261201"}, "end_date"),
        ("/resource/usage/period", {"start_date": "20261210", "end_date": "20261201"}, "end_date"),
        ("/resource/usage/period", {"start_date": "20260101", "end_date": "20261231"}, "end_date"),
        (
            "/resource/usage/period",
            {"start_date": "20260230", "end_date": "20260301"},
            "start_date",
        ),
    ],
)
async def test_bad_periods_are_refused_naming_the_field(
    deployment: Deployment, path: str, params: dict[str, str], field: str
) -> None:
    response = await deployment.api.call("GET", path, key=deployment.api.admin, params=params)
    problem(response, 400, "invalid-api-params", field)


async def test_only_superadmins_read_everyones_usage(deployment: Deployment) -> None:
    user = deployment.api.user
    for method, path in (
        ("GET", "/resource/usage/month?month=202612"),
        ("GET", "/resource/usage/period?start_date=20261201&end_date=20261202"),
        ("GET", "/resource/stats/admin/month"),
        ("POST", "/resource/recalculate-usage"),
    ):
        response = await deployment.api.call(method, path, key=user)
        assert response.status_code == 403, (path, response.text)
    response = await deployment.api.call(
        "POST", "/resource/recalculate-usage", key=deployment.api.admin
    )
    assert response.status_code == 200 and response.json() == {}
