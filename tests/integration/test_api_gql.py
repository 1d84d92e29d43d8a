"""``POST /admin/gql`` on the real manager API: sessions, roles, Trio-safe execution, HTTP.

The session list is what ``bai ps`` and the official ``backend.ai ps`` are
built on, so their exact query texts are sent here and must validate and
answer; the CLI itself runs against the server too.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from click.testing import CliRunner, Result
from graphql import get_introspection_query

from bai.cli.main import cli
from bai.client import APIClient, APIConfig, BackendAPIError, list_sessions
from bai.manager.db import Database

from support.api import Key, assert_problem, manager_config, running_api
from support.api_gql import IMAGE, World, build_world, data_of, gql, gql_raw, messages


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    async with running_api(db, auth_cache_ttl=0) as api:
        yield await build_world(api)


SESSION_PAGE = """
query($limit: Int!, $offset: Int!, $status: String, $access_key: String) {
  compute_session_list(limit: $limit, offset: $offset, status: $status, access_key: $access_key) {
    total_count
    items { name access_key status }
  }
}
"""


async def page(world: World, key: Key, **variables: Any) -> dict[str, Any]:
    values = {"limit": 20, "offset": 0, **variables}
    listing: dict[str, Any] = data_of(await gql(world.api, key, SESSION_PAGE, values))[
        "compute_session_list"
    ]
    return listing


def names(page_: dict[str, Any]) -> list[str]:
    return [item["name"] for item in page_["items"]]


# ----------------------------------------------------------------- the session list


async def test_sessions_come_newest_first_with_their_fields(world: World) -> None:
    query = """
    query($id: UUID!) {
      compute_session_list(limit: 10, offset: 0, status: "RUNNING,PENDING") {
        total_count
        items {
          id session_id main_kernel_id name type status status_info status_changed
          created_at terminated_at result image registry tag access_key domain_name
          group_name user_email cluster_size occupied_slots occupying_slots scaling_group
          agent_ids containers { id role cluster_hostname agent status occupied_slots registry }
        }
      }
      compute_session(id: $id) { name dependencies { name status } }
    }
    """
    data = data_of(await gql(world.api, world.user, query, {"id": str(world.sessions["batch-1"])}))
    listing = data["compute_session_list"]
    assert listing["total_count"] == 2
    assert names(listing) == ["batch-1", "train-1"]
    train = listing["items"][1]
    assert train["id"] == train["session_id"] == str(world.sessions["train-1"])
    assert train["main_kernel_id"] == str(world.kernels["train-1"][0])
    assert train["type"] == "interactive"
    assert train["status"] == "RUNNING" and train["status_info"] == "test"
    assert train["created_at"] == "2024-05-01T12:01:00+00:00"
    assert train["terminated_at"] is None
    assert train["result"] == "UNDEFINED"
    assert train["image"] == IMAGE and train["registry"] == "cr.backend.ai"
    assert train["access_key"] == world.user.access_key
    assert (train["domain_name"], train["group_name"]) == ("default", "default")
    assert train["user_email"] == "user@lablup.com"
    assert train["cluster_size"] == 2
    # JSONString: a JSON document in a string, slots as decimal strings, summed over kernels.
    assert json.loads(train["occupied_slots"]) == {"cpu": "2", "mem": str(2 * 2**30)}
    assert train["occupying_slots"] == train["occupied_slots"]
    # hide-agents is on by default: users never learn where their kernels run.
    assert train["agent_ids"] is None
    roles = [(c["role"], c["cluster_hostname"], c["agent"]) for c in train["containers"]]
    assert roles == [("main", "main1", None), ("sub", "sub1", None)]
    assert {c["registry"] for c in train["containers"]} == {"cr.backend.ai"}
    assert data["compute_session"] == {
        "name": "batch-1",
        "dependencies": [{"name": "train-1", "status": "RUNNING"}],
    }


async def test_statuses_pages_and_counts(world: World) -> None:
    everything = await page(world, world.superadmin)
    assert everything["total_count"] == 5
    assert names(everything) == ["other-1", "admin-nb", "batch-1", "train-2", "train-1"]
    second = await page(world, world.superadmin, limit=2, offset=2)
    assert second["total_count"] == 5 and names(second) == ["batch-1", "train-2"]
    dead = await page(world, world.superadmin, status="TERMINATED,CANCELLED")
    assert names(dead) == ["train-2"]
    body = await gql(
        world.api, world.user, SESSION_PAGE, {"limit": 5, "offset": 0, "status": "RUNNING,ZOMBIE"}
    )
    assert body["data"] == {"compute_session_list": None}
    assert "'ZOMBIE'" in messages(body)[0] and "status" in messages(body)[0]
    body = await gql(world.api, world.user, SESSION_PAGE, {"limit": 0, "offset": 0})
    assert "limit" in messages(body)[0]


async def test_each_role_sees_its_own_sessions(world: World) -> None:
    assert names(await page(world, world.user)) == ["batch-1", "train-2", "train-1"]
    assert names(await page(world, world.other_user)) == ["other-1"]
    assert names(await page(world, world.other_admin)) == ["other-1"]
    assert names(await page(world, world.domain_admin)) == [
        "admin-nb",
        "batch-1",
        "train-2",
        "train-1",
    ]
    # Admins may narrow to one keypair; a domain admin never sees beyond the domain.
    assert names(await page(world, world.superadmin, access_key=world.other_user.access_key)) == [
        "other-1"
    ]
    assert (
        names(await page(world, world.domain_admin, access_key=world.other_user.access_key)) == []
    )
    # Users may name only themselves.
    assert names(await page(world, world.user, access_key=world.user.access_key)) == [
        "batch-1",
        "train-2",
        "train-1",
    ]
    body = await gql(
        world.api,
        world.user,
        SESSION_PAGE,
        {"limit": 5, "offset": 0, "access_key": world.other_user.access_key},
    )
    assert body["data"]["compute_session_list"] is None
    assert messages(body) == ["you may only query your own sessions"]
    body = await gql(
        world.api,
        world.other_admin,
        'query { compute_session_list(limit: 5, offset: 0, domain_name: "default")'
        " { total_count } }",
    )
    assert messages(body) == ["you may not query the domain 'default'"]


async def test_a_session_out_of_sight_is_null(world: World) -> None:
    query = "query($id: UUID!) { compute_session(id: $id) { name } }"
    mine = {"id": str(world.sessions["train-1"])}
    theirs = {"id": str(world.sessions["other-1"])}
    assert data_of(await gql(world.api, world.user, query, mine))["compute_session"] == {
        "name": "train-1"
    }
    assert data_of(await gql(world.api, world.user, query, theirs))["compute_session"] is None
    assert (
        data_of(await gql(world.api, world.domain_admin, query, theirs))["compute_session"] is None
    )
    assert data_of(await gql(world.api, world.superadmin, query, theirs))["compute_session"] == {
        "name": "other-1"
    }


async def test_superadmins_see_agents_and_others_do_not(world: World) -> None:
    query = """
    query($id: UUID!) {
      compute_session(id: $id) { agent_ids containers { agent agent_addr } }
      compute_container(id: $id) { role agent }
    }
    """
    variables = {"id": str(world.sessions["train-1"])}
    seen = data_of(await gql(world.api, world.superadmin, query, variables))
    assert seen["compute_session"]["agent_ids"] == ["i-agent01"]
    assert {c["agent"] for c in seen["compute_session"]["containers"]} == {"i-agent01"}
    assert seen["compute_container"] == {"role": "main", "agent": "i-agent01"}
    hidden = data_of(await gql(world.api, world.domain_admin, query, variables))
    assert hidden["compute_session"]["agent_ids"] is None
    assert {c["agent_addr"] for c in hidden["compute_session"]["containers"]} == {None}
    assert hidden["compute_container"] == {"role": "main", "agent": None}


async def test_agents_can_be_shown_when_not_hidden(db: Database) -> None:
    config = manager_config("hide-agents = false\n")
    async with running_api(db, config=config) as api:
        world = await build_world(api)
        query = "query($id: UUID!) { compute_session(id: $id) { agent_ids } }"
        data = data_of(await gql(api, world.user, query, {"id": str(world.sessions["train-1"])}))
    assert data["compute_session"]["agent_ids"] == ["i-agent01"]


# ------------------------------------------------------------------------ the clients


def client_config(world: World, key: Key) -> APIConfig:
    return APIConfig(
        endpoint=world.api.base_url, access_key=key.access_key, secret_key=key.secret_key
    )


async def test_the_sdk_lists_sessions(world: World) -> None:
    async with APIClient(client_config(world, world.user)) as client:
        listed = await list_sessions(
            client, fields=["id", "name", "status", "occupied_slots"], statuses=["RUNNING"]
        )
        assert listed.total_count == 1
        assert listed.items[0]["name"] == "train-1"
        with pytest.raises(BackendAPIError) as refused:
            await list_sessions(client, fields=["name"], access_key=world.other_user.access_key)
    assert "you may only query your own sessions" in str(refused.value)


async def invoke(world: World, key: Key, *args: str) -> Result:
    environment: dict[str, str | None] = {k: None for k in os.environ if k.startswith("BACKEND_")}
    environment.update(
        BACKEND_ENDPOINT=world.api.base_url,
        BACKEND_ACCESS_KEY=key.access_key,
        BACKEND_SECRET_KEY=key.secret_key,
    )
    runner = CliRunner()
    return await trio.to_thread.run_sync(
        functools.partial(runner.invoke, cli, list(args), env=environment)
    )


async def test_bai_ps_prints_the_callers_sessions(world: World) -> None:
    result = await invoke(world, world.user, "ps")
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.output.splitlines()]
    assert lines[0][:2] == ["Name", "Session ID"]
    assert [row[0] for row in lines[1:]] == ["batch-1", "train-1"]
    assert lines[2][1] == str(world.sessions["train-1"])
    assert lines[2][5] == "RUNNING"
    dead = await invoke(world, world.user, "ps", "--dead", "-f", "name,status,tag")
    assert dead.exit_code == 0, dead.output
    assert dead.output.splitlines()[1:] == ["train-2\tTERMINATED\told"]
    other = await invoke(world, world.superadmin, "ps", "--access-key", world.other_user.access_key)
    assert [line.split("\t")[0] for line in other.output.splitlines()[1:]] == ["other-1"]


# The query texts of backend.ai-client 23.9.10: KeyPair.info() and the page that
# `backend.ai ps` (ComputeSession.paginated_list with its default and --detail fields) sends.
OFFICIAL_KEYPAIR_INFO = "query {  keypair {    user_id access_key secret_key is_active is_admin  }}"
_OFFICIAL_PS_FIELDS = (
    "name access_key id group_name main_kernel_id image type status status_info"
    " status_changed result tag created_at occupying_slots"
)
OFFICIAL_PS = (
    "query($limit:Int!, $offset:Int!, $status: String, $access_key: String,"
    " $filter: String, $order: String) {\n"
    "  compute_session_list(\n"
    "      limit:$limit, offset:$offset, status:$status, access_key:$access_key,"
    " filter:$filter, order:$order) {\n"
    f"    items {{ {_OFFICIAL_PS_FIELDS} }}\n"
    "    total_count\n"
    "  }\n"
    "}"
)
OFFICIAL_SESSION_INFO = (
    "query($id: UUID!) {  compute_session(id: $id) {    name id main_kernel_id image tag"
    " created_at terminated_at status status_info status_data occupying_slots idle_checks"
    " containers { id id cluster_role cluster_idx cluster_hostname session_id session_id image"
    " registry status status_info status_data status_changed agent container_id resource_opts"
    " occupied_slots preopen_ports live_stat last_stat } dependencies { name id }  }}"
)


async def test_the_official_clients_queries_answer(world: World) -> None:
    info = data_of(await gql(world.api, world.user, OFFICIAL_KEYPAIR_INFO))["keypair"]
    assert info == {
        "user_id": "user@lablup.com",
        "access_key": world.user.access_key,
        "secret_key": world.user.secret_key,
        "is_active": True,
        "is_admin": False,
    }
    active = "PENDING,SCHEDULED,PULLING,PREPARING,RUNNING,RUNNING_DEGRADED,TERMINATING,ERROR"
    variables = {
        "status": active,
        "access_key": None,
        "filter": None,
        "order": None,
        "limit": 20,
        "offset": 0,
    }
    listing = data_of(await gql(world.api, world.user, OFFICIAL_PS, variables))
    items = listing["compute_session_list"]["items"]
    assert [item["name"] for item in items] == ["batch-1", "train-1"]
    assert items[1]["main_kernel_id"] == str(world.sessions["train-1"])
    assert items[1]["group_name"] == "default"
    detail = data_of(
        await gql(
            world.api, world.user, OFFICIAL_SESSION_INFO, {"id": str(world.sessions["batch-1"])}
        )
    )["compute_session"]
    assert detail["name"] == "batch-1" and detail["idle_checks"] == "{}"
    assert detail["containers"][0]["preopen_ports"] == []
    assert detail["dependencies"] == [{"name": "train-1", "id": str(world.sessions["train-1"])}]


# ------------------------------------------------------------------ Trio-safe execution


async def test_many_sibling_and_nested_fields_resolve_under_trio(world: World) -> None:
    # graphql-core would gather these sibling resolvers with asyncio; under Trio they must
    # still all resolve, on both databases, also with requests running side by side.
    query = """
    {
      a: compute_session_list(limit: 10, offset: 0) { total_count items { name registry
           containers { registry hostname } dependencies { name } } }
      b: keypairs { access_key concurrency_used projects
           compute_sessions(status: "RUNNING") { name containers { role } } }
      c: agent_list(limit: 5, offset: 0) { total_count items { id occupied_slots
           compute_containers(status: "RUNNING") { session_id } } }
      d: users { email groups { name } main_access_key }
      e: domains { name scaling_groups }
      f: resource_presets { name }
      g: images { name aliases }
    }
    """
    results: list[dict[str, Any]] = []

    async def one() -> None:
        results.append(data_of(await gql(world.api, world.superadmin, query)))

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(one)
    assert len(results) == 8
    assert all(result == results[0] for result in results)
    data = results[0]
    assert data["a"]["total_count"] == 5
    running_on_agent = data["c"]["items"][0]["compute_containers"]
    assert len(running_on_agent) == 4  # train-1 (2 kernels), admin-nb, other-1
    assert json.loads(data["c"]["items"][0]["occupied_slots"]) == {
        "cpu": "4",
        "mem": str(4 * 2**30),
    }
    user_keypair = next(k for k in data["b"] if k["access_key"] == world.user.access_key)
    assert user_keypair["concurrency_used"] == 1
    assert user_keypair["projects"] == ["default"]
    assert [s["name"] for s in user_keypair["compute_sessions"]] == ["train-1"]


async def test_too_deep_queries_are_refused_before_running(world: World) -> None:
    nested = "name"
    for _ in range(16):
        nested = f"dependencies {{ {nested} }}"
    body = await gql(
        world.api,
        world.user,
        f"query($id: UUID!) {{ compute_session(id: $id) {{ {nested} }} }}",
        {"id": str(world.sessions["batch-1"])},
    )
    assert body["data"] is None
    assert messages(body) == [
        "the query nests selections (or fragment spreads) more than 16 levels deep"
    ]


async def test_introspection_works(world: World) -> None:
    schema = data_of(await gql(world.api, world.user, get_introspection_query()))["__schema"]
    types = {t["name"]: t for t in schema["types"]}
    session_fields = {f["name"] for f in types["ComputeSession"]["fields"]}
    assert {"id", "name", "status", "occupied_slots", "containers"} <= session_fields
    assert schema["mutationType"]["name"] == "Mutation"


# ------------------------------------------------------------------------- HTTP side


async def test_the_legacy_endpoint_answers_bare_data_or_a_problem(world: World) -> None:
    response = await gql_raw(
        world.api, world.user, "{ keypair { access_key } }", path="/admin/graphql"
    )
    assert response.status_code == 200
    assert response.json() == {"keypair": {"access_key": world.user.access_key}}
    response = await gql_raw(world.api, world.user, "{ domains { name } }", path="/admin/graphql")
    problem = assert_problem(response, 400, "graphql-error")
    assert problem["title"] == "GraphQL-generated error"
    assert problem["data"][0]["message"] == "listing domains needs superadmin privileges"
    assert problem["data"][0]["path"] == ["domains"]


async def test_graphql_errors_are_in_the_errors_array(world: World) -> None:
    body = await gql(world.api, world.user, "{ keypair { access_key ")
    assert body["data"] is None
    assert "Syntax Error" in messages(body)[0]
    assert body["errors"][0]["locations"]
    body = await gql(world.api, world.user, "{ keypair { no_such_field } }")
    assert body["data"] is None and "no_such_field" in messages(body)[0]
    body = await gql(
        world.api,
        world.user,
        "query($id: UUID!) { compute_session(id: $id) { name } }",
        {"id": "nope"},
    )
    assert body["data"] is None and "'nope'" in messages(body)[0]
    # One refused field does not take its siblings down.
    body = await gql(world.api, world.user, "{ domains { name } keypair { access_key } }")
    assert body["data"] == {"domains": None, "keypair": {"access_key": world.user.access_key}}
    assert body["errors"][0]["path"] == ["domains"]


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b"not json", None),
        (b"[]", None),
        (b"{}", "query"),
        (b'{"query": 5}', "query"),
        (b'{"query": "{ keypair { access_key } }", "variables": [1]}', "variables"),
    ],
)
async def test_malformed_bodies_are_400_problems(
    world: World, content: bytes, field: str | None
) -> None:
    response = await world.api.call("POST", "/admin/gql", key=world.user, content=content)
    problem = assert_problem(response, 400, "invalid-api-params")
    assert problem.get("field") == field


async def test_credentials_are_required(world: World) -> None:
    response = await world.api.call(
        "POST", "/admin/gql", json_body={"query": "{ keypair { access_key } }"}
    )
    assert_problem(response, 401, "unauthorized")
