"""GraphQL ``vfolder_list`` and its siblings through the real API and storage proxy.

Both deployments with a storage proxy (``local:local``,
:mod:`support.vfolders`).  A user owns one folder, is invited to the
superadmin's folder read-only, and is a member of the project owning a
read-only project folder; each list shows what its caller may see, filters
and orders as the official client writes them, and refuses what a user may
not ask.  The official client's own query text (with its ``$group_id: UUID``
variable) validates and answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from support.api import Key
from support.api_gql import data_of, gql, messages
from support.api_session import Deployment, unique_name
from support.vfolders import deployment, invite_and_accept, new_folder, ok

__all__ = ["deployment"]

LIST = """
query($limit: Int!, $offset: Int!, $filter: String, $order: String, $group_id: UUID,
      $access_key: String, $domain_name: String) {
  vfolder_list(limit: $limit, offset: $offset, filter: $filter, order: $order,
               group_id: $group_id, access_key: $access_key, domain_name: $domain_name) {
    total_count
    items { id name host permission ownership_type status user group creator max_size
            usage_mode cloneable created_at }
  }
}
"""

# What `backend.ai vfolder list` / `admin vfolder list` send (func/vfolder.py, pagination.py).
OFFICIAL = """
query($limit:Int!, $offset:Int!, $group_id: UUID, $filter: String, $order: String) {
  vfolder_list(
      limit:$limit, offset:$offset, group_id:$group_id, filter:$filter, order:$order) {
    items { host name created_at creator group permission ownership_type status }
    total_count
  }
}
"""


@dataclass
class Folders:
    d: Deployment
    own: dict[str, Any]
    invited: dict[str, Any]
    project: dict[str, Any]


@pytest.fixture
async def folders(deployment: Deployment) -> Folders:
    d = deployment
    admin, user = d.api.admin, d.api.user
    own = await new_folder(d, user, name=unique_name("own"))
    invited = await new_folder(d, admin, name=unique_name("inv"))
    project = await new_folder(d, admin, name=unique_name("prj"), group="default", permission="ro")
    await invite_and_accept(d, admin, invited["name"], user, "ro")
    # A trashed folder is in no list.
    gone = await new_folder(d, user, name=unique_name("gone"))
    await ok(d, "DELETE", f"/folders/{gone['name']}", user, status=204)
    return Folders(d, own, invited, project)


async def page(d: Deployment, key: Key, query: str = LIST, **variables: Any) -> dict[str, Any]:
    values = {"limit": 50, "offset": 0, **variables}
    body = await gql(d.api, key, query, values)
    listing: dict[str, Any] = data_of(body)[query.split("(")[1].split("{")[-1].strip()]
    return listing


def by_name(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in listing["items"]}


async def test_each_list_shows_what_its_caller_may_see(folders: Folders) -> None:
    d, user, admin = folders.d, folders.d.api.user, folders.d.api.admin
    own, invited, project = folders.own["name"], folders.invited["name"], folders.project["name"]

    mine = await page(d, user)
    assert mine["total_count"] == 3
    items = by_name(mine)
    assert {name: item["permission"] for name, item in items.items()} == {
        own: "wd",
        invited: "ro",
        project: "ro",
    }
    assert items[own]["ownership_type"] == "user" and items[own]["user"] == str(user.user_id)
    assert items[project]["group"] is not None and items[project]["user"] is None
    assert items[own]["status"] == "ready" and items[own]["max_size"] is None

    for field, expected in (
        ("vfolder_own_list", {own}),
        ("vfolder_invited_list", {invited}),
        ("vfolder_project_list", {project}),
    ):
        query = (
            "query($limit: Int!, $offset: Int!) { "
            f"{field}(limit: $limit, offset: $offset) {{ total_count items {{ name }} }} }}"
        )
        listing = data_of(await gql(d.api, user, query, {"limit": 10, "offset": 0}))[field]
        assert {i["name"] for i in listing["items"]} == expected, field
        assert listing["total_count"] == len(expected)

    # The superadmin sees every live folder, and narrows by project or keypair.
    everything = by_name(await page(d, admin))
    assert {own, invited, project} <= set(everything)
    assert everything[own]["permission"] == "wd"
    group_id = folders.project["group"]
    assert set(by_name(await page(d, admin, group_id=group_id))) == {project}
    assert set(by_name(await page(d, admin, access_key=user.access_key))) == {own}
    assert set(by_name(await page(d, admin, domain_name="default"))) >= {own, project}
    assert (await page(d, admin, domain_name="nowhere"))["total_count"] == 0

    # A user may not name another keypair or domain.
    body = await gql(d.api, user, LIST, {"limit": 5, "offset": 0, "access_key": admin.access_key})
    assert body["data"]["vfolder_list"] is None and messages(body)
    body = await gql(d.api, user, LIST, {"limit": 5, "offset": 0, "domain_name": "other"})
    assert messages(body)

    # KeyPair.vfolders: the folders the keypair's user owns, with their usage.
    query = "{ keypair { access_key vfolders { name num_files cur_size permission } } }"
    keypair = data_of(await gql(d.api, user, query))["keypair"]
    assert keypair["vfolders"] == [{"name": own, "num_files": 0, "cur_size": 0, "permission": "wd"}]


async def test_filters_and_orders_as_the_official_client_writes_them(folders: Folders) -> None:
    d, user = folders.d, folders.d.api.user
    own, invited, project = folders.own["name"], folders.invited["name"], folders.project["name"]
    official = await page(d, user, OFFICIAL, group_id=None, filter=None, order=None)
    assert set(by_name(official)) == {own, invited, project}
    read_only = 'status == "READY" & permission in ["READ_ONLY", "READ_WRITE"]'
    assert set(by_name(await page(d, user, filter=read_only))) == {invited, project}
    assert set(by_name(await page(d, user, filter='ownership_type == "GROUP"'))) == {project}
    assert set(by_name(await page(d, user, filter=f'name == "{own}"'))) == {own}
    assert set(by_name(await page(d, user, filter='creator ilike "%@LABLUP.COM"'))) == {
        own,
        invited,
        project,
    }
    ordered = await page(d, user, order="-name")
    names = [item["name"] for item in ordered["items"]]
    assert names == sorted(names, reverse=True)
    paged = await page(d, user, limit=1, offset=1, order="+name")
    assert paged["total_count"] == 3 and len(paged["items"]) == 1
    assert paged["items"][0]["name"] == sorted([own, invited, project])[1]

    for bad in ('status == "ready"', 'permission == "OWNER"', "nosuch == 1", "name =="):
        body = await gql(d.api, user, LIST, {"limit": 5, "offset": 0, "filter": bad})
        assert body["data"]["vfolder_list"] is None, bad
        assert messages(body), bad
    body = await gql(d.api, user, LIST, {"limit": 5, "offset": 0, "order": "-nosuch"})
    assert messages(body)
    body = await gql(d.api, user, LIST, {"limit": 0, "offset": 0})
    assert messages(body)
