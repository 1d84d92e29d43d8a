"""The ``filter`` and ``order`` expressions of the ``*_list`` fields, against real rows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bai.manager.db import Database

from support.api import running_api
from support.api_gql import World, build_world, data_of, gql, messages


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    async with running_api(db) as api:
        yield await build_world(api)


LIST = """
query($filter: String, $order: String) {
  compute_session_list(limit: 20, offset: 0, filter: $filter, order: $order) {
    total_count items { name }
  }
}"""


async def listed(world: World, filter_: str | None = None, order: str | None = None) -> list[str]:
    body = await gql(world.api, world.superadmin, LIST, {"filter": filter_, "order": order})
    page = data_of(body)["compute_session_list"]
    assert page["total_count"] == len(page["items"])
    return [item["name"] for item in page["items"]]


SELECTIONS: list[tuple[str, list[str]]] = [
    ('status == "RUNNING"', ["other-1", "admin-nb", "train-1"]),
    ('status != "RUNNING"', ["batch-1", "train-2"]),
    ('status in ["PENDING", "TERMINATED"]', ["batch-1", "train-2"]),
    ('name ilike "TRAIN%"', ["train-2", "train-1"]),
    ('name like "%-1"', ["other-1", "batch-1", "train-1"]),
    ('name contains "ain-"', ["train-2", "train-1"]),
    ('status == "RUNNING" & domain_name == "default"', ["admin-nb", "train-1"]),
    ('name == "train-2" | cluster_size > 1', ["train-2", "train-1"]),
    ('!(status == "RUNNING") & !(name == "batch-1")', ["train-2"]),
    ('(name == "a" | name == "batch-1") & type == "interactive"', ["batch-1"]),
    ("tag == null", ["other-1", "admin-nb", "batch-1", "train-1"]),
    ("tag isnot null", ["train-2"]),
    ('tag != "old"', ["other-1", "admin-nb", "batch-1", "train-1"]),
    ('user_email == "other-user@lablup.com"', ["other-1"]),
    ('group_name == "research"', ["other-1"]),
    ('created_at < "2024-05-01T12:02:30+00:00"', ["train-2", "train-1"]),
    ('created_at >= "2024-05-01T12:04:00"', ["other-1", "admin-nb"]),
    ('name == "say \\"hi\\""', []),
]


async def test_filters_select_the_rows_they_describe(world: World) -> None:
    for filter_, expected in SELECTIONS:
        assert await listed(world, filter_) == expected, filter_


async def test_filters_by_ids_and_order(world: World) -> None:
    train = world.sessions["train-1"]
    assert await listed(world, f'id == "{train}"') == ["train-1"]
    assert await listed(world, f'session_id in ["{train}", "{world.sessions["other-1"]}"]') == [
        "other-1",
        "train-1",
    ]
    assert await listed(world, order="+name") == sorted(await listed(world))
    assert await listed(world, order="-status, +name") == [
        "train-2",
        "admin-nb",
        "other-1",
        "train-1",
        "batch-1",
    ]


MISTAKES: list[tuple[str | None, str | None, str]] = [
    ('status == "SLEEPING"', None, "'SLEEPING'"),
    ('secret == "x"', None, "'secret'"),
    ('cluster_size == "two"', None, "'two'"),
    ('id == "not-a-uuid"', None, "'not-a-uuid'"),
    ('created_at > "yesterday"', None, "'yesterday'"),
    ("name > null", None, "null"),
    ("cluster_size like 1", None, "'like'"),
    ('name == "x" &', None, "ends too early"),
    ('name == "x" )', None, "')'"),
    ('name = "x"', None, "position 5"),
    ("(" * 40 + 'name == "x"' + ")" * 40, None, "deeper than 32"),
    ("x" * 2001, None, "longer than 2000"),
    (None, "-color", "'color'"),
    (None, "name;drop", "'name;drop'"),
]


async def test_bad_expressions_are_errors_naming_the_problem(world: World) -> None:
    for filter_, order, needle in MISTAKES:
        body = await gql(world.api, world.superadmin, LIST, {"filter": filter_, "order": order})
        assert body["data"] == {"compute_session_list": None}, (filter_, order)
        message = messages(body)[0]
        assert needle in message, (filter_, order, message)
        assert ("order" if order else "filter") in message
