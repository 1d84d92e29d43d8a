"""What ``/admin/gql`` accepts: the spec's and the official client's documents, and no more.

Too deep, too costly, too long or too large documents are refused with a
message naming the limit before anything resolves (``data`` is ``null``);
introspection still works.  The spec's own session-list example, the
official client's field sets and id variables declared ``String``, ``ID``
or ``UUID`` all validate and answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from graphql import get_introspection_query, parse, validate

from bai.common.events.types import AgentStatsReported
from bai.common.types import AgentId
from bai.manager.api.gql.execution import (
    MAX_COMPLEXITY,
    MAX_DEPTH,
    MAX_DOCUMENT_FIELDS,
    MAX_TOKENS,
)
from bai.manager.api.gql.routes import MAX_QUERY_BODY
from bai.manager.api.gql.schema import SCHEMA
from bai.manager.db import Database
from bai.manager.livestats import LiveStats

from support.api import assert_problem, running_api
from support.api_gql import World, build_world, data_of, gql, gql_raw, messages
from support.api_session import Backends, Deployment, running_deployment


@pytest.fixture
async def world(db: Database) -> AsyncIterator[World]:
    async with running_api(db, auth_cache_ttl=0) as api:
        yield await build_world(api)


def _refused(body: dict[str, Any], *fragments: str) -> None:
    assert body["data"] is None, body
    text = " ".join(messages(body))
    for fragment in fragments:
        assert fragment in text, text


# ------------------------------------------------------------------------ limits


async def test_too_deep_documents_are_refused_before_anything_runs(world: World) -> None:
    nested = "dependencies { " * MAX_DEPTH + "name" + " }" * MAX_DEPTH
    query = f'{{ compute_session(id: "{world.sessions["batch-1"]}") {{ {nested} }} }}'
    _refused(await gql(world.api, world.superadmin, query), f"more than {MAX_DEPTH} levels deep")
    legacy = await gql_raw(world.api, world.superadmin, query, path="/admin/graphql")
    assert legacy.status_code == 400 and "levels deep" in legacy.text


async def test_too_costly_documents_are_refused_with_the_estimate_rule(world: World) -> None:
    # Shallow, but a page of 100k sessions with their containers' fields.
    query = """{ compute_session_list(limit: 100000, offset: 0) {
        items { name containers { id status image agent occupied_slots } } } }"""
    _refused(
        await gql(world.api, world.superadmin, query),
        f"estimated cost exceeds {MAX_COMPLEXITY}",
        "`limit`",
    )
    # The page size may come from a variable too; a sensible page is fine.
    query = """query($n: Int!) { compute_session_list(limit: $n, offset: 0) {
        total_count items { name containers { id status } } } }"""
    _refused(await gql(world.api, world.superadmin, query, {"n": 10**6}), "estimated cost")
    page = data_of(await gql(world.api, world.superadmin, query, {"n": 50}))
    assert page["compute_session_list"]["total_count"] == 5


async def test_fragments_spread_twice_cost_once(world: World) -> None:
    fan_out = [f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(12)]
    query = "{ ...F0 }\n" + "\n".join([*fan_out, "fragment F12 on Query { domain { name } }"])
    assert data_of(await gql(world.api, world.user, query)) == {"domain": {"name": "default"}}


async def test_documents_spelling_out_too_many_fields_are_refused(world: World) -> None:
    aliases = " ".join(f"d{i}: domain {{ name }}" for i in range(MAX_DOCUMENT_FIELDS // 2 + 1))
    _refused(
        await gql(world.api, world.user, f"{{ {aliases} }}"),
        f"at most {MAX_DOCUMENT_FIELDS} are allowed",
    )
    numbers = ", ".join(["1"] * (MAX_TOKENS + 1))  # a long list literal
    tokens = f"{{ domain(name: [{numbers}]) {{ name }} }}"
    _refused(await gql(world.api, world.user, tokens), f"more than {MAX_TOKENS} tokens")


async def test_bodies_over_the_size_limit_are_413_problems(world: World) -> None:
    query = "{ domain { name } }" + " " * MAX_QUERY_BODY
    response = await gql_raw(world.api, world.user, query)
    assert_problem(response, 413, "request-too-large")
    assert str(MAX_QUERY_BODY) in response.text


async def test_introspection_still_works(world: World) -> None:
    body = await gql(world.api, world.user, get_introspection_query(descriptions=True))
    types = {t["name"] for t in data_of(body)["__schema"]["types"]}
    assert {"Query", "ComputeSession", "User", "UUID"} <= types
    query = '{ __type(name: "User") { name fields(includeDeprecated: true) { name } } }'
    user = data_of(await gql(world.api, world.user, query))["__type"]
    assert user["name"] == "User" and "main_access_key" in {f["name"] for f in user["fields"]}


# ------------------------------------------------------- documents that validate

SPEC_EXAMPLE = """
query(
  $limit: Int!,
  $offset: Int!,
  $ak: String,
  $status: String,
) {
  compute_session_list(
    limit: $limit,
    offset: $offset,
    access_key: $ak,
    status: $status,
  ) {
    total_count
    items {
      id
      name
      type
      user_email
      status
      status_info
      status_updated
      containers {
        id
        role
        agent
      }
    }
  }
}
"""


async def test_the_spec_session_list_example_answers(world: World) -> None:
    variables = {"limit": 10, "offset": 0, "ak": world.user.access_key, "status": "RUNNING"}
    listing = data_of(await gql(world.api, world.user, SPEC_EXAMPLE, variables))[
        "compute_session_list"
    ]
    assert listing["total_count"] == 1
    (item,) = listing["items"]
    assert item["name"] == "train-1" and item["status_updated"].startswith("2024-05-01T12:01")
    assert [c["role"] for c in item["containers"]] == ["main", "sub"]
    assert all(c["agent"] is None for c in item["containers"])  # agents hidden from users
    query = f'{{ compute_session(id: "{world.sessions["train-1"]}") {{ created_user_uuid }} }}'
    session = data_of(await gql(world.api, world.user, query))["compute_session"]
    assert session["created_user_uuid"] == str(world.user.user_id)


async def test_containers_have_live_stat_and_agents_their_fields(world: World) -> None:
    query = f"""{{
      compute_container_list(limit: 5, offset: 0, session_id: "{world.sessions["train-1"]}") {{
        items {{ id live_stat last_stat }} }}
      agents {{ id live_stat compute_containers {{ id live_stat }} }}
    }}"""
    data = data_of(await gql(world.api, world.superadmin, query))
    items = data["compute_container_list"]["items"]
    assert len(items) == 2 and all(item["live_stat"] is None for item in items)
    (agent,) = data["agents"]
    assert agent["live_stat"] is None and len(agent["compute_containers"]) == 5


async def test_live_stat_is_the_newest_sample_the_agents_sent(world: World) -> None:
    live = LiveStats(world.api.ctx.bus)
    async with trio.open_nursery() as nursery:
        await nursery.start(live.serve)
        world.api.ctx.livestats = live
        main, sub = world.kernels["train-1"]
        sample = {"cpu_used": {"current": "1250.0", "pct": "12.5"}}
        await world.api.ctx.bus.publish(
            AgentStatsReported(agent_id=AgentId("i-agent01"), kernels={str(main): sample})
        )
        query = f'{{ compute_session(id: "{main}") {{ containers {{ id live_stat }} }} }}'
        with trio.fail_after(5):
            while True:
                data = data_of(await gql(world.api, world.user, query))
                by_id = {c["id"]: c["live_stat"] for c in data["compute_session"]["containers"]}
                if by_id[str(main)] is not None:
                    break
                await trio.sleep(0.05)
        assert json.loads(by_id[str(main)]) == sample and by_id[str(sub)] is None
        nursery.cancel_scope.cancel()


GROUP = "query($gid: %s) { group(id: $gid) { id name } }"
USER = "query($user_id: %s) { user_from_uuid(user_id: $user_id) { email } }"


@pytest.mark.parametrize("declared", ["UUID!", "String!", "ID!"])
async def test_id_variables_may_be_declared_string_id_or_uuid(world: World, declared: str) -> None:
    groups = data_of(await gql(world.api, world.user, "{ groups { id name } }"))["groups"]
    gid = groups[0]["id"]
    found = data_of(await gql(world.api, world.user, GROUP % declared, {"gid": gid}))
    assert found["group"] == {"id": gid, "name": "default"}
    user = data_of(
        await gql(
            world.api, world.user, USER % declared.rstrip("!"), {"user_id": str(world.user.user_id)}
        )
    )
    assert user["user_from_uuid"] == {"email": "user@lablup.com"}


async def test_a_malformed_id_in_a_string_variable_is_an_error_naming_it(world: World) -> None:
    body = await gql(world.api, world.user, GROUP % "String!", {"gid": "not-a-uuid"})
    assert body["data"] == {"group": None}
    assert "not-a-uuid" in " ".join(messages(body))
    # Other types still may not stand in for ids.
    body = await gql(world.api, world.user, GROUP % "Int!", {"gid": 1})
    _refused(body, "Variable '$gid' of type 'Int!' used in position expecting type 'UUID!'")


# The field sets of the official client 23.9 (ai.backend.client.output.fields), as its
# ``admin ... list`` commands and ``ps``/``session info`` select them.
OFFICIAL_FIELDS: dict[str, tuple[str, str]] = {
    "compute_container_list(limit: 1, offset: 0, session_id: $id) { items { %s } }": (
        "$id: UUID!",
        "id idx role hostname kernel_id:id cluster_role cluster_idx local_rank cluster_hostname"
        " session_id image registry status status_info status_data status_changed created_at"
        " terminated_at agent container_id resource_opts occupied_slots live_stat last_stat",
    ),
    "compute_session_list(limit: 1, offset: 0) { items { %s } }": (
        "",
        "id session_id main_kernel_id tag name type session_type image architecture registry"
        " cluster_template cluster_mode cluster_size domain_name group_name group_id"
        " agent_ids user_email user_id access_key created_user_email created_user_id status"
        " status_info status_data status_changed created_at terminated_at starts_at"
        " scheduled_at startup_command result resource_opts scaling_group service_ports"
        " mounts occupying_slots occupied_slots idle_checks"
        " containers { id role agent status live_stat }"
        " dependencies { name } abusing_reports",
    ),
    "keypair_list(limit: 1, offset: 0) { items { %s } }": (
        "",
        "user_id full_name:user_id access_key secret_key is_active is_admin created_at"
        " modified_at last_used resource_policy rate_limit concurrency_used num_queries"
        " user ssh_public_key ssh_private_key dotfiles bootstrap_script projects"
        " user_info { email full_name }",
    ),
    "storage_volume_list(limit: 1, offset: 0, filter: $f, order: $o) { items { %s } }": (
        "$f: String, $o: String",
        "id backend fsprefix path capabilities hardware_metadata performance_metric usage",
    ),
    "vfolder_host_permissions { %s }": ("", "vfolder_host_permission_list"),
    "agent_list(limit: 1, offset: 0) { items { %s } }": (
        "",
        "id status status_changed region architecture scaling_group schedulable"
        " available_slots occupied_slots addr first_contact lost_at live_stat version"
        " compute_plugins hardware_metadata local_config cpu_cur_pct mem_cur_bytes"
        " compute_containers { id }",
    ),
}


@pytest.mark.parametrize("selection", list(OFFICIAL_FIELDS))
def test_the_official_client_field_sets_validate(selection: str) -> None:
    declared, fields = OFFICIAL_FIELDS[selection]
    head = f"query({declared})" if declared else "query"
    document = parse(f"{head} {{ {selection % fields} }}")
    assert [e.message for e in validate(SCHEMA, document)] == []


async def test_the_official_client_keypair_fields_answer(world: World) -> None:
    _, fields = OFFICIAL_FIELDS["keypair_list(limit: 1, offset: 0) { items { %s } }"]
    query = f"{{ keypair {{ {fields} }} }}"
    keypair = data_of(await gql(world.api, world.user, query))["keypair"]
    assert keypair["access_key"] == world.user.access_key
    assert keypair["dotfiles"] is None and keypair["bootstrap_script"] is None
    assert json.dumps(keypair)  # every value is plain JSON


@pytest.fixture
async def with_storage(backends: Backends, tmp_path: Path) -> AsyncIterator[Deployment]:
    async with running_deployment(backends, tmp_path, agent_count=0, storage=True) as running:
        yield running


async def test_superadmins_list_the_storage_volumes(with_storage: Deployment) -> None:
    d = with_storage
    query = """query($f: String, $o: String) {
      storage_volume_list(limit: 10, offset: 0, filter: $f, order: $o) {
        total_count items { id backend path capabilities usage } }
    }"""
    listing = data_of(await gql(d.api, d.api.admin, query, {"f": None, "o": None}))
    volumes = listing["storage_volume_list"]["items"]
    assert listing["storage_volume_list"]["total_count"] == len(volumes) >= 1
    first = volumes[0]
    assert ":" in first["id"] and "vfolder" in first["capabilities"] and first["usage"] is None
    one = f'{{ storage_volume(id: "{first["id"]}") {{ id path }} }}'
    assert data_of(await gql(d.api, d.api.admin, one))["storage_volume"] == {
        "id": first["id"],
        "path": first["path"],
    }
    refused = await gql(d.api, d.api.user, query)
    assert refused["data"] == {"storage_volume_list": None}
    assert refused["errors"][0]["extensions"] == {"code": "forbidden"}
    filtered = await gql(d.api, d.api.admin, query, {"f": 'id == "x"'})
    assert "cannot be filtered" in messages(filtered)[0]
    acl = "{ vfolder_host_permissions { vfolder_host_permission_list } }"
    permissions = data_of(await gql(d.api, d.api.user, acl))["vfolder_host_permissions"]
    assert "mount-in-session" in permissions["vfolder_host_permission_list"]
