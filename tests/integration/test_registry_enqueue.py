"""What enqueue accepts and refuses, on SQLite and PostgreSQL, with a real agent registered.

A refused request must leave the database as it was.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bai.common.agent_api import MAX_BOOTSTRAP_SCRIPT
from bai.common.errors import InvalidValue
from bai.common.slots import ResourceSlot
from bai.common.types import SessionStatus
from bai.manager.models import groups, kernels, keypair_resource_policies, sessions
from bai.manager.sessions.errors import (
    ImageNotFound,
    InvalidSessionRequest,
    QuotaExceeded,
    ResourceGroupNotAllowed,
    ResourceLimitExceeded,
    SessionAlreadyExists,
    SessionNotFound,
)
from bai.manager.sessions.model import SessionRequest

from support.registry import Cluster, running_cluster


@pytest.fixture
async def cluster(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_cluster(db_url, tmp_path) as c:
        # Nothing starts: these tests look at the queue only.
        await c.ctx.dispatcher.operation("exclude-agents", [c.agents[0].agent_id])
        yield c


async def _rows(cluster: Cluster) -> tuple[int, int]:
    counted = []
    for table in (sessions, kernels):
        result = await cluster.db.fetch(sa.select(sa.func.count()).select_from(table))
        counted.append(int(result.scalar()))
    return counted[0], counted[1]


async def _refused(cluster: Cluster, kind: type[Exception], **options: Any) -> Exception:
    before = await _rows(cluster)
    with pytest.raises(kind) as info:
        await cluster.enqueue(**options)
    assert await _rows(cluster) == before
    return info.value


async def test_requests_over_capacity_or_unknown_are_refused(cluster: Cluster) -> None:
    error = await _refused(cluster, ResourceLimitExceeded, resources={"cpu": "1000"})
    assert isinstance(error, InvalidValue) and error.field is not None
    assert error.field.startswith("resources")
    error = await _refused(cluster, InvalidSessionRequest, resources={"tpu.device": "1"})
    assert "tpu.device" in str(error)
    error = await _refused(cluster, InvalidSessionRequest, resources={"cpu": "-1"})
    await _refused(cluster, ImageNotFound, image="no-such-image:1.0")
    await _refused(cluster, ImageNotFound, image="python", architecture="riscv64")
    await _refused(cluster, ResourceGroupNotAllowed, scaling_group="elsewhere")
    await _refused(cluster, InvalidSessionRequest, group="no-such-project")
    # Below the image's minimum (ai.backend.resource.min.cpu = 1).
    error = await _refused(cluster, InvalidSessionRequest, resources={"cpu": "0.5"})
    assert isinstance(error, InvalidValue) and error.field == "resources.cpu"


MALFORMED: list[tuple[dict[str, Any], str]] = [
    ({"cluster_size": 0}, "cluster_size"),
    ({"priority": 101}, "priority"),
    ({"environ": {"1BAD": "x"}}, "environ"),
    ({"environ": {"OK": "nul\x00"}}, "environ.OK"),
    ({"name": "x"}, "name"),
    ({"name": "has space"}, "name"),
    ({"starts_at": datetime(2030, 1, 1)}, "starts_at"),
    ({"batch_timeout": -1}, "batch_timeout"),
    ({"image": ""}, "image"),
    ({"session_type": "weird"}, "type"),
    ({"cluster_mode": "sideways"}, "cluster_mode"),
    ({"bootstrap_script": "nul\x00"}, "bootstrap_script"),
    ({"bootstrap_script": "x" * (MAX_BOOTSTRAP_SCRIPT + 1)}, "bootstrap_script"),
]


async def test_malformed_requests_name_the_field(cluster: Cluster) -> None:
    for options, field in MALFORMED:
        error = await _refused(cluster, InvalidSessionRequest, **options)
        assert isinstance(error, InvalidValue) and error.field == field, options


async def test_policies_are_enforced_at_enqueue(cluster: Cluster) -> None:
    async with cluster.db.begin() as conn:
        await conn.execute(
            sa.update(keypair_resource_policies).values(
                default_for_unspecified="LIMITED",
                total_resource_slots=ResourceSlot({"cpu": 1, "mem": 2 * 1024**3}),
            )
        )
    error = await _refused(cluster, QuotaExceeded, resources={"cpu": "2", "mem": "256m"})
    assert "keypair" in str(error) and "cpu" in str(error)
    error = await _refused(cluster, QuotaExceeded, cluster_size=9)
    assert isinstance(error, InvalidValue) and error.field == "cluster_size"
    async with cluster.db.begin() as conn:
        await conn.execute(
            sa.update(keypair_resource_policies).values(
                default_for_unspecified="UNLIMITED", total_resource_slots=ResourceSlot()
            )
        )
        await conn.execute(sa.update(groups).values(total_resource_slots=ResourceSlot({"cpu": 1})))
    error = await _refused(cluster, QuotaExceeded, resources={"cpu": "2", "mem": "256m"})
    assert "project" in str(error)
    accepted = await cluster.enqueue(resources={"cpu": "1", "mem": "256m"})
    assert accepted.status is SessionStatus.PENDING


async def test_names_lookups_and_reuse(cluster: Cluster) -> None:
    registry = cluster.registry
    first = await cluster.enqueue(name="alpha-1")
    assert first.status is SessionStatus.PENDING
    assert first.status_info == "enqueued"
    assert first.requested_slots == ResourceSlot({"cpu": 1, "mem": 256 * 1024**2})
    await _refused(cluster, SessionAlreadyExists, name="alpha-1")
    reused = await registry.enqueue_session(
        cluster.user_key, SessionRequest(image="python:3.11", name="alpha-1", reuse_if_exists=True)
    )
    assert not reused.created and reused.session.id == first.id
    # The image's minimums fill what the request leaves out.
    defaulted = await cluster.enqueue(name="alpha-2", resources=None)
    assert defaulted.requested_slots == ResourceSlot({"cpu": 1, "mem": 64 * 1024**2})
    assert defaulted.image == "python:3.11"

    # Another owner may use the same name; lookups are per owner.
    other = await registry.enqueue_session(
        cluster.admin_key, SessionRequest(image="python", name="alpha-1")
    )
    assert other.created
    found = await registry.get_session("alpha-1", access_key=cluster.user_key)
    assert found.id == first.id
    assert (await registry.get_session(str(first.id))).id == first.id
    assert (await registry.get_session(first.id.hex[:8], access_key=cluster.user_key)).id == (
        first.id
    )
    with pytest.raises(SessionNotFound):
        await registry.get_session("alpha-1", access_key="AKIANOSUCHKEY0000000")
    with pytest.raises(SessionNotFound):
        await registry.get_session(str(other.session.id), access_key=cluster.user_key)
    matches = await registry.match_sessions(cluster.user_key, "alpha")
    assert {m.name for m in matches} == {"alpha-1", "alpha-2"}


async def test_reserved_start_time_keeps_a_session_pending(cluster: Cluster) -> None:
    await cluster.ctx.dispatcher.operation("include-agents", [cluster.agents[0].agent_id])
    later = datetime.now(UTC) + timedelta(hours=1)
    info = await cluster.enqueue(starts_at=later)
    await cluster.ctx.dispatcher.run_pass()
    held = await cluster.registry.get_session_by_id(info.id)
    assert held.status is SessionStatus.PENDING
    assert held.status_data is not None
    failed = held.status_data["scheduler"]["failed_predicates"]
    assert [f["name"] for f in failed] == ["reserved_time"]
    await cluster.registry.destroy_session(held)
