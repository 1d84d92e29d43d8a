"""The ``/template`` routes and the sessions made from templates, in both deployments.

A real manager and agent behind signed HTTP: templates are stored from YAML
and JSON payloads, read back in both formats, shared with the project,
guarded from other users, soft-deleted, refused with the field named, and
turned into running sessions (``create-from-template``, ``create-cluster``).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
import yaml

from bai.manager.models.session import session_templates

from support.api import Key
from support.api_session import Deployment, problem, unique_name
from support.vfolders import add_user

TEMPLATE_YAML = """---
api_version: v1
kind: taskTemplate
metadata:
  name: py-template
  tag: from-template
spec:
  sessionType: interactive
  kernel:
    image: python
    environ:
      MYCONFIG: from-the-template
  resources:
    cpu: '1'
    mem: 256m
"""


async def _call(
    d: Deployment,
    method: str,
    path: str,
    key: Key | None = None,
    body: Any = None,
    status: int = 200,
    **params: str,
) -> Any:
    response = await d.api.call(
        method,
        path,
        key=key or d.api.user,
        json_body=body if body is not None else {},
        params=params or None,
    )
    assert response.status_code == status, response.text
    if response.headers["content-type"].startswith("text/yaml"):
        return response.text
    return response.json()


async def _stored_rows(d: Deployment) -> list[tuple[str, bool]]:
    rows = await d.db.fetch(
        sa.select(session_templates.c.name, session_templates.c.is_active).order_by(
            session_templates.c.created_at
        )
    )
    return [(row.name, row.is_active) for row in rows]


async def test_session_templates_round_trip_and_permissions(deployment: Deployment) -> None:
    d = deployment
    created = await _call(d, "POST", "/template/session", body={"payload": TEMPLATE_YAML})
    [entry] = created
    template_id = entry["id"]
    assert entry["user"] == d.api.user.user_id.hex and len(template_id) == 32

    listed = await _call(d, "GET", "/template/session")
    assert [(t["id"], t["name"], t["is_owner"], t["type"]) for t in listed] == [
        (template_id, "py-template", True, "task")
    ]
    assert listed[0]["user_email"] == d.api.user.email and listed[0]["group_name"] == "default"

    got = await _call(d, "GET", f"/template/session/{template_id}")
    assert got["name"] == "py-template" and got["domain_name"] == "default"
    assert got["user_uuid"] == str(d.api.user.user_id)
    assert got["template"]["spec"]["kernel"]["environ"] == {"MYCONFIG": "from-the-template"}
    as_yaml = await _call(d, "GET", f"/template/session/{template_id}", format="yaml")
    assert yaml.safe_load(as_yaml) == got

    # What GET answers goes back as an update (the web UI's wrapper), changed.
    got["template"]["metadata"]["tag"] = "changed"
    got["name"] = "renamed"
    await _call(d, "PUT", f"/template/session/{template_id}", body={"payload": json.dumps([got])})
    again = await _call(d, "GET", f"/template/session/{template_id}")
    assert again["name"] == "renamed" and again["template"]["metadata"]["tag"] == "changed"

    # A member of the project reads it, but may not change it; a stranger does not see it.
    member = await add_user(d)
    stranger = await add_user(d, member=False)
    assert [t["id"] for t in await _call(d, "GET", "/template/session", member)] == [template_id]
    assert (await _call(d, "GET", f"/template/session/{template_id}", member))["name"]
    forbidden = await d.api.call(
        "DELETE", f"/template/session/{template_id}", key=member, json_body={}
    )
    problem(forbidden, 403, "forbidden")
    assert await _call(d, "GET", "/template/session", stranger) == []
    hidden = await d.api.call("GET", f"/template/session/{template_id}", key=stranger)
    problem(hidden, 404, "object-not-found")
    # The superadmin sees and may list everything.
    everything = await _call(d, "GET", "/template/session", d.api.admin, body={"all": True})
    assert [t["id"] for t in everything] == [template_id]
    problem(
        await d.api.call("GET", "/template/session", key=stranger, params={"all": "true"}),
        403,
        "forbidden",
    )

    # An admin stores a template for the user (owner_access_key), and deletes it.
    for_user = await _call(
        d,
        "POST",
        "/template/session",
        d.api.admin,
        body={"payload": TEMPLATE_YAML, "owner_access_key": d.api.user.access_key},
    )
    assert for_user[0]["user"] == d.api.user.user_id.hex
    await _call(d, "DELETE", f"/template/session/{for_user[0]['id']}", d.api.admin)

    # Deleting is soft: the row stays, inactive, and the template is gone for everyone.
    assert await _call(d, "DELETE", f"/template/session/{template_id}") == {"success": True}
    problem(
        await d.api.call("GET", f"/template/session/{template_id}", key=d.api.user),
        404,
        "object-not-found",
    )
    assert await _call(d, "GET", "/template/session") == []
    assert await _stored_rows(d) == [("renamed", False), ("py-template", False)]


async def test_bad_templates_are_refused_naming_the_field_and_store_nothing(
    deployment: Deployment,
) -> None:
    d = deployment
    cases = [
        (TEMPLATE_YAML + "  colour: red\n", "payload.spec.colour"),
        (TEMPLATE_YAML.replace("image: python", "image: [python]"), "payload.spec.kernel.image"),
        (
            TEMPLATE_YAML.replace("image: python", "image: no-such-image"),
            "payload.spec.kernel.image",
        ),
        (TEMPLATE_YAML.replace("kind: taskTemplate", "kind: task"), "payload.kind"),
        ("spec: [", "payload"),
    ]
    for payload, field in cases:
        refused = await d.api.call(
            "POST", "/template/session", key=d.api.user, json_body={"payload": payload}
        )
        problem(refused, 400, "invalid-api-params", field)
    # A good template after a bad one in the same payload: nothing is stored.
    mixed = json.dumps([yaml.safe_load(TEMPLATE_YAML), {"template": {"kind": "x"}}])
    refused = await d.api.call(
        "POST", "/template/session", key=d.api.user, json_body={"payload": mixed}
    )
    problem(refused, 400, "invalid-api-params", "payload.1.template.api_version")
    for body, field in [
        ({"payload": TEMPLATE_YAML, "group": "nowhere"}, "group"),
        ({"payload": TEMPLATE_YAML, "domain": "elsewhere"}, "domain"),
        ({"payload": 5}, "payload"),
    ]:
        refused = await d.api.call("POST", "/template/session", key=d.api.user, json_body=body)
        problem(refused, 400, "invalid-api-params", field)
    assert await _stored_rows(d) == []
    problem(
        await d.api.call("GET", "/template/session/not-a-uuid", key=d.api.user),
        400,
        "invalid-api-params",
        "template_id",
    )


async def test_a_template_starts_a_session_with_the_callers_overrides(
    deployment: Deployment,
) -> None:
    d = deployment
    [entry] = await _call(d, "POST", "/template/session", body={"payload": TEMPLATE_YAML})
    name = unique_name("tpl")
    created = await _call(
        d,
        "POST",
        "/session/_/create-from-template",
        body={
            "template_id": entry["id"],
            "name": name,
            # What the official SDK sends for options the caller did not give.
            "tag": None,
            "config": {"mounts": [], "environ": {"OTHER": "given"}},
        },
        status=201,
    )
    assert created["sessionName"] == name and created["status"] == "RUNNING"
    info = await d.info(name)
    assert info["tag"] == "from-template"
    # The caller's environ replaced the template's (not merged).
    out, _ = await d.run(name, "import os; print(os.environ.get('MYCONFIG'), os.environ['OTHER'])")
    assert out == "None given\n"
    assert (await d.destroy(name)).status_code == 200

    # Bad overrides and unknown templates write nothing.
    before = await d.table_counts()
    refused = await d.api.call(
        "POST",
        "/session/_/create-from-template",
        key=d.api.user,
        json_body={"template_id": entry["id"], "maxWaitSeconds": "soon"},
    )
    problem(refused, 400, "invalid-api-params", "maxWaitSeconds")
    missing = await d.api.call(
        "POST",
        "/session/_/create-from-template",
        key=d.api.user,
        json_body={"template_id": "0" * 32},
    )
    problem(missing, 404, "object-not-found")
    assert await d.table_counts() == before


async def test_cluster_templates_and_cluster_sessions(deployment: Deployment) -> None:
    d = deployment
    [task] = await _call(d, "POST", "/template/session", body={"payload": TEMPLATE_YAML})
    cluster = {
        "apiVersion": "v1",
        "kind": "clusterTemplate",
        "mode": "single-node",
        "metadata": {"name": "pair"},
        "spec": {
            "environ": {"CLUSTER": "yes"},
            "nodes": [
                {"role": "main", "sessionTemplate": task["id"]},
                {"role": "worker", "sessionTemplate": task["id"], "replicas": 1},
            ],
        },
    }
    created = await _call(d, "POST", "/template/cluster", body={"payload": yaml.safe_dump(cluster)})
    cluster_id = created["id"]
    listed = await _call(d, "GET", "/template/cluster")
    assert [(t["id"], t["name"], t["type"]) for t in listed] == [(cluster_id, "pair", "user")]
    stored = yaml.safe_load(await _call(d, "GET", f"/template/cluster/{cluster_id}"))
    assert stored["mode"] == "single-node" and len(stored["spec"]["nodes"]) == 2
    as_json = await _call(d, "GET", f"/template/cluster/{cluster_id}", format="json")
    assert as_json == stored

    # Nodes must name session templates the owner may read (a deleted one is none).
    [gone_task] = await _call(d, "POST", "/template/session", body={"payload": TEMPLATE_YAML})
    await _call(d, "DELETE", f"/template/session/{gone_task['id']}")
    dangling = json.loads(json.dumps(cluster))
    dangling["spec"]["nodes"][1]["sessionTemplate"] = gone_task["id"]
    refused = await d.api.call(
        "POST", "/template/cluster", key=d.api.user, json_body={"payload": json.dumps(dangling)}
    )
    problem(refused, 400, "invalid-api-params", "payload.spec.nodes.1.session_template")

    name = unique_name("pair")
    session = await _call(
        d,
        "POST",
        "/session/_/create-cluster",
        body={"clientSessionToken": name, "template_id": cluster_id},
        status=201,
    )
    assert session["status"] == "RUNNING"
    info = await d.info(name)
    assert [k["clusterHostname"] for k in info["kernels"]] == ["main1", "sub1"]
    out, _ = await d.run(name, "import os; print(os.environ['CLUSTER'], os.environ['MYCONFIG'])")
    assert out == "yes from-the-template\n"
    assert (await d.destroy(name)).status_code == 200

    cluster["metadata"] = {"name": "pair-2"}
    await _call(d, "PUT", f"/template/cluster/{cluster_id}", body={"payload": json.dumps(cluster)})
    assert (await _call(d, "GET", "/template/cluster"))[0]["name"] == "pair-2"
    await _call(d, "DELETE", f"/template/cluster/{cluster_id}")
    assert await _call(d, "GET", "/template/cluster") == []
    gone = await d.api.call(
        "POST",
        "/session/_/create-cluster",
        key=d.api.user,
        json_body={"clientSessionToken": unique_name("x"), "template_id": cluster_id},
    )
    problem(gone, 404, "object-not-found")
    # A session template id is not a cluster template.
    wrong_kind = await d.api.call("GET", f"/template/cluster/{task['id']}", key=d.api.user)
    problem(wrong_kind, 404, "object-not-found")


async def test_readers_who_may_not_change_a_template_see_no_git_password(
    deployment: Deployment,
) -> None:
    d = deployment
    git = (
        "  kernel:\n"
        "    git:\n"
        "      repository: https://example.invalid/team/repo.git\n"
        "      credential: {username: me, password: s3cret}\n"
    )
    payload = TEMPLATE_YAML.replace("  kernel:\n", git)
    [entry] = await _call(d, "POST", "/template/session", body={"payload": payload})
    member = await add_user(d)

    def password(answer: dict[str, Any]) -> str:
        found: str = answer["template"]["spec"]["kernel"]["git"]["credential"]["password"]
        return found

    path = f"/template/session/{entry['id']}"
    assert password(await _call(d, "GET", path)) == "s3cret"
    assert password(await _call(d, "GET", path, d.api.admin)) == "s3cret"
    assert password(await _call(d, "GET", path, member)) == "********"
    [listed] = await _call(d, "GET", "/template/session", member)
    assert password(listed) == "********"
