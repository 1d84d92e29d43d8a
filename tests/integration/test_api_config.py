"""``/config``: the shared configuration over HTTP, as a superadmin sees and changes it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from bai.common.slots import ResourceSlot
from bai.manager.db import Database
from bai.manager.models import AgentStatus, agents, shared_config

from support.api import Api, assert_problem, running_api


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    async with running_api(db) as running:
        yield running


async def config(api: Api, op: str, **body: Any) -> Any:
    response = await api.call("POST", f"/config/{op}", key=api.admin, json_body=body)
    assert response.status_code == 200, response.text
    return response.json()["result"]


async def stored(api: Api) -> dict[str, Any]:
    rows = await api.db.fetch(sa.select(shared_config.c.key, shared_config.c.value))
    return {row.key: row.value for row in rows}


async def test_set_then_get_a_value(api: Api) -> None:
    assert await config(api, "set", key="docker/registry/local", value="http://r:5000") == "ok"
    assert await config(api, "get", key="docker/registry/local") == "http://r:5000"
    assert await config(api, "get", key="docker/registry/missing") is None


async def test_object_values_are_written_per_leaf_and_read_back_as_a_tree(api: Api) -> None:
    value = {"": "root", "a": {"b": 1, "c": [1, 2]}, "d": {"e": None}}
    await config(api, "set", key="tree", value=value)
    assert await stored(api) == {
        "tree": "root",
        "tree/a/b": 1,
        "tree/a/c": [1, 2],
        "tree/d/e": None,
    }
    tree = await config(api, "get", key="tree", prefix=True)
    assert tree == value
    # What get returned can be written back unchanged.
    await config(api, "delete", key="tree", prefix=True)
    await config(api, "set", key="tree", value=tree)
    assert await config(api, "get", key="tree", prefix=True) == value


async def test_prefix_means_path_segments_not_string_prefixes(api: Api) -> None:
    await config(api, "set", key="some", value={"key1": {"f": 1}, "key12": {"f": 2}})
    assert await config(api, "get", key="some/key1", prefix=True) == {"f": 1}
    await config(api, "delete", key="some/key1", prefix=True)
    assert await stored(api) == {"some/key12/f": 2}


async def test_delete_without_prefix_removes_only_the_key(api: Api) -> None:
    await config(api, "set", key="k", value={"": 0, "child": 1})
    await config(api, "delete", key="k")
    assert await stored(api) == {"k/child": 1}


@pytest.mark.parametrize(
    ("op", "body", "field"),
    [
        ("get", {"key": "/leading"}, "key"),
        ("get", {"key": "a b"}, "key"),
        ("set", {"key": "a//b", "value": 1}, "key"),
        ("set", {"key": "ok", "value": {"bad key": 1}}, "value.bad key"),
        ("delete", {"key": "x/", "prefix": True}, "key"),
        ("set", {"value": 1}, "key"),
        ("set", {"key": "k"}, "value"),
    ],
)
async def test_bad_requests_name_the_field_and_change_nothing(
    api: Api, op: str, body: dict[str, Any], field: str
) -> None:
    await config(api, "set", key="keep", value="me")
    response = await api.call("POST", f"/config/{op}", key=api.admin, json_body=body)
    problem = assert_problem(response, 400, "invalid-api-params")
    assert problem["field"] == field
    assert await stored(api) == {"keep": "me"}


async def test_an_update_with_one_bad_member_writes_nothing(api: Api) -> None:
    value = {f"n{i}": i for i in range(10)} | {"x": {"bad key": 1}}
    response = await api.call(
        "POST", "/config/set", key=api.admin, json_body={"key": "k", "value": value}
    )
    assert_problem(response, 400, "invalid-api-params")
    assert await stored(api) == {}


async def test_too_many_keys_in_one_update_are_refused(api: Api) -> None:
    value = {f"n{i}": i for i in range(300)}
    response = await api.call(
        "POST", "/config/set", key=api.admin, json_body={"key": "k", "value": value}
    )
    problem = assert_problem(response, 400, "invalid-api-params")
    assert "256" in problem["detail"]


async def test_nul_characters_are_refused_before_the_database(api: Api) -> None:
    response = await api.call(
        "POST", "/config/set", key=api.admin, content=b'{"key": "k", "value": "a\\u0000"}'
    )
    assert_problem(response, 400, "invalid-api-params")


async def test_resource_slots_list_the_slots_of_live_agents(api: Api) -> None:
    response = await api.call("GET", "/config/resource-slots", key=api.user)
    assert response.json() == {"cpu": "count", "mem": "bytes"}
    async with api.db.begin() as conn:
        for agent_id, status, slots in [
            ("gpu-1", AgentStatus.ALIVE, {"cpu": 8, "mem": 2**30, "cuda.device": 2}),
            ("gone", AgentStatus.LOST, {"cpu": 8, "tpu.device": 1}),
            ("odd", AgentStatus.ALIVE, {"cpu": 8, "mock.accel": 1}),
        ]:
            await conn.execute(
                sa.insert(agents).values(
                    id=agent_id,
                    status=status,
                    scaling_group="default",
                    addr=f"inproc://{agent_id}",
                    available_slots=ResourceSlot(slots),
                )
            )
    response = await api.call("GET", "/config/resource-slots", key=api.user)
    assert response.json() == {
        "cpu": "count",
        "mem": "bytes",
        "cuda.device": "count",
        "mock.accel": "count",
    }
