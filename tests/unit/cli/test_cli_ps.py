"""`bai ps`: status filters, columns and output, against a GraphQL-answering server."""

from __future__ import annotations

from typing import Any

import pytest
from quart import Response
from test_cli_session import invoke

from support.fakemanager import FakeManager, Recorded, json_response, manager

__all__ = ["manager"]

ITEMS: list[dict[str, Any]] = [
    {
        "name": "nb",
        "id": "12c45b55-ce3c-418d-9c58-223bbba307f1",
        "access_key": "AKIATEST",
        "image": "python:3.11",
        "type": "interactive",
        "status": "RUNNING",
        "status_info": None,
        "status_changed": "2024-05-01T10:00:00+00:00",
        "result": "UNDEFINED",
        "occupied_slots": '{"cpu": "1", "mem": "1073741824"}',
    },
    {
        "name": "job",
        "id": "22c45b55-ce3c-418d-9c58-223bbba307f2",
        "access_key": "AKIATEST",
        "image": "python:3.11",
        "type": "batch",
        "status": "PENDING",
        "status_info": "no-available-instances",
        "status_changed": "2024-05-01T10:01:00+00:00",
        "result": "UNDEFINED",
        "occupied_slots": "{}",
    },
]


def serve_sessions(
    fake: FakeManager, items: list[dict[str, Any]], total: int | None = None
) -> None:
    async def handler(recorded: Recorded) -> Response:
        query = recorded.json()["query"]
        fields = query.split("items {")[1].split("}")[0].split()
        page = [{f: item.get(f) for f in fields} for item in items]
        return json_response(
            {
                "data": {
                    "compute_session_list": {
                        "items": page,
                        "total_count": len(items) if total is None else total,
                    }
                }
            }
        )

    fake.add("POST", "/admin/gql", handler)


def variables(fake: FakeManager) -> dict[str, Any]:
    sent: dict[str, Any] = fake.last().json()["variables"]
    return sent


async def test_default_lists_active_sessions_as_tab_separated_rows(manager: FakeManager) -> None:
    serve_sessions(manager, ITEMS)
    ps = await invoke(manager, "ps")
    assert ps.exit_code == 0, ps.output
    lines = [line.split("\t") for line in ps.stdout.splitlines()]
    assert lines[0] == [
        "Name", "Session ID", "Owner", "Image", "Type", "Status", "Status Info",
        "Last Updated", "Result",
    ]  # fmt: skip
    assert lines[1][:6] == [
        "nb",
        ITEMS[0]["id"],
        "AKIATEST",
        "python:3.11",
        "interactive",
        "RUNNING",
    ]
    assert lines[1][6] == "-"
    assert lines[2][5:7] == ["PENDING", "no-available-instances"]
    sent = variables(manager)
    assert "TERMINATED" not in sent["status"] and "CANCELLED" not in sent["status"]
    assert {"PENDING", "RUNNING", "ERROR", "TERMINATING"} <= set(sent["status"].split(","))
    assert (sent["limit"], sent["offset"]) == (20, 0)


@pytest.mark.parametrize(
    ("option", "statuses"),
    [
        ("--dead", {"CANCELLED", "TERMINATED"}),
        (
            "--running",
            {"PREPARING", "PULLING", "PREPARED", "CREATING", "RUNNING", "RUNNING_DEGRADED"},
        ),
    ],
)
async def test_status_filters(manager: FakeManager, option: str, statuses: set[str]) -> None:
    serve_sessions(manager, [])
    ps = await invoke(manager, "ps", option)
    assert ps.exit_code == 0
    assert set(variables(manager)["status"].split(",")) == statuses
    assert ps.stdout.startswith("There are no compute sessions currently")


async def test_id_only_prints_just_the_ids(manager: FakeManager) -> None:
    serve_sessions(manager, ITEMS)
    ps = await invoke(manager, "ps", "--id-only")
    assert ps.stdout.splitlines() == [ITEMS[0]["id"], ITEMS[1]["id"]]
    assert "items { id }" in manager.last().json()["query"]


async def test_format_picks_columns_and_formats_slots(manager: FakeManager) -> None:
    serve_sessions(manager, ITEMS)
    ps = await invoke(manager, "ps", "-f", "id,status,occupied_slots")
    assert ps.stdout.splitlines()[:2] == [
        "Session ID\tStatus\tOccupied Resource",
        f"{ITEMS[0]['id']}\tRUNNING\tcpu=1 mem=1073741824",
    ]


async def test_unknown_format_field_is_a_usage_error(manager: FakeManager) -> None:
    ps = await invoke(manager, "ps", "-f", "id,bogus")
    assert ps.exit_code == 2
    assert "unknown field 'bogus'" in ps.stderr
    assert manager.requests == []


async def test_more_sessions_than_shown_says_how_to_see_them(manager: FakeManager) -> None:
    serve_sessions(manager, ITEMS, total=45)
    ps = await invoke(manager, "ps", "--limit", "2", "--offset", "10")
    assert "Showing 11-12 of 45 sessions; use --offset 12 for more." in ps.stderr
    assert (variables(manager)["limit"], variables(manager)["offset"]) == (2, 10)


async def test_conflicting_filters_are_refused(manager: FakeManager) -> None:
    ps = await invoke(manager, "ps", "--dead", "--running")
    assert ps.exit_code == 2
    assert manager.requests == []
