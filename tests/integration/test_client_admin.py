"""The SDK's administration wrappers against the real manager API (SQLite and PostgreSQL).

What these pin: each wrapper of :mod:`bai.client.identity`,
:mod:`bai.client.cluster`, :mod:`bai.client.manager` and
:mod:`bai.client.auth` sends a request the manager accepts and reads its
answer; refusals arrive as typed errors (a GraphQL error, ``ok: false`` as
:class:`~bai.client.MutationFailed`, a REST problem) and change nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from bai.client import (
    Admin,
    Agent,
    APIClient,
    APIConfig,
    Auth,
    Domain,
    ErrorLog,
    Forbidden,
    GraphQLError,
    Group,
    KeyPair,
    Manager,
    MutationFailed,
    ResourcePolicy,
    ResourcePreset,
    ScalingGroup,
    Unauthorized,
    User,
)
from bai.common.errors import InvalidValue
from bai.manager.db import Database
from bai.manager.models import users
from bai.manager.models.identity import hash_password

from support.api import Api, Key, running_api


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    # No auth cache: a keypair (de)activated here must count on its next request.
    async with running_api(db, auth_cache_ttl=0) as running:
        yield running


def client(api: Api, key: Key | None = None, **keys: str) -> APIClient:
    values = {"access_key": key.access_key, "secret_key": key.secret_key} if key else {}
    values.update(keys)
    return APIClient(APIConfig(endpoint=api.base_url, **values))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def set_password(api: Api, email: str, password: str) -> None:
    async with api.db.begin() as conn:
        await conn.execute(
            sa.update(users).where(users.c.email == email).values(password=hash_password(password))
        )


# ------------------------------------------------------------------ queries and keypairs


async def test_raw_query_and_the_callers_own_objects(api: Api) -> None:
    async with client(api, api.user) as sdk:
        data = await Admin.query(sdk, "query { keypair { access_key is_admin } }")
        me = await User.detail(sdk)
        mine = await KeyPair.detail(sdk)
    assert data == {"keypair": {"access_key": api.user.access_key, "is_admin": False}}
    assert me is not None and me["email"] == "user@lablup.com"
    assert me["groups"] == [{"id": me["groups"][0]["id"], "name": "default"}]
    assert mine is not None and mine["secret_key"] == api.user.secret_key


async def test_every_list_answers_pages_and_objects(api: Api) -> None:
    async with client(api, api.admin) as sdk:
        first = await User.list(sdk, limit=1, order="email")
        second = await User.list(sdk, limit=1, offset=1, order="email")
        keypairs = await KeyPair.list(sdk, user_id="user@lablup.com")
        groups = await Group.list(sdk, domain_name="default")
        domains = await Domain.list(sdk)
        scaling_groups = await ScalingGroup.list(sdk)
        policies = await ResourcePolicy.list(sdk)
        presets = await ResourcePreset.list(sdk)
        agents = await Agent.list(sdk, status=None)
        default_group = await Group.detail(sdk, groups[0]["id"])
        by_name = await Group.from_name(sdk, "default", domain_name="default")
        domain = await Domain.detail(sdk, "default")
        scaling_group = await ScalingGroup.detail(sdk, "default")
        admin_by_uuid = await User.detail_by_uuid(sdk, api.admin.user_id)
        nobody = await User.detail(sdk, "nobody@example.com")
    assert first.total_count == second.total_count == 2
    assert [first.items[0]["email"], second.items[0]["email"]] == [
        "admin@lablup.com",
        "user@lablup.com",
    ]
    assert [k["access_key"] for k in keypairs.items] == [api.user.access_key]
    assert [g["name"] for g in groups] == ["default"]
    assert "default" in [d["name"] for d in domains]
    assert "default" in [s["name"] for s in scaling_groups]
    assert "default" in [p["name"] for p in policies]
    assert isinstance(presets, list)
    assert agents.total_count == len(agents.items)
    assert default_group is not None and default_group["name"] == "default"
    assert [g["id"] for g in by_name] == [default_group["id"]]
    assert domain is not None and domain["is_active"] is True
    assert scaling_group is not None and scaling_group["driver"]
    assert admin_by_uuid is not None and admin_by_uuid["email"] == "admin@lablup.com"
    assert nobody is None


async def test_keypair_lifecycle(api: Api) -> None:
    async with client(api, api.admin) as sdk:
        created = await KeyPair.create(sdk, "user@lablup.com", rate_limit=5000)
        access_key = created["access_key"]
        await KeyPair.deactivate(sdk, access_key)
        inactive = await KeyPair.detail(sdk, access_key)
        async with client(api, access_key=access_key, secret_key=created["secret_key"]) as new:
            with pytest.raises(Unauthorized):
                await KeyPair.detail(new)
        await KeyPair.activate(sdk, access_key)
        await KeyPair.update(sdk, access_key, rate_limit=7000, is_admin=False)
        async with client(api, access_key=access_key, secret_key=created["secret_key"]) as new:
            own = await KeyPair.detail(new)
        await KeyPair.delete(sdk, access_key)
        listed = await KeyPair.list(sdk, user_id="user@lablup.com")
    assert inactive is not None and inactive["is_active"] is False
    assert own is not None and (own["is_active"], own["rate_limit"]) == (True, 7000)
    assert access_key not in [k["access_key"] for k in listed.items]


async def test_keypair_resource_policy_lifecycle(api: Api) -> None:
    name = unique("policy")
    async with client(api, api.admin) as sdk:
        await ResourcePolicy.create(
            sdk,
            name,
            {
                "default_for_unspecified": "LIMITED",
                "total_resource_slots": {"cpu": "4", "mem": "8g"},
                "max_concurrent_sessions": 3,
                "max_containers_per_session": 1,
                "idle_timeout": 600,
            },
        )
        await ResourcePolicy.update(sdk, name, {"max_concurrent_sessions": 5})
        shown = await ResourcePolicy.detail(sdk, name)
        await ResourcePolicy.delete(sdk, name)
        gone = await ResourcePolicy.detail(sdk, name)
        with pytest.raises(MutationFailed) as failed:
            await ResourcePolicy.delete(sdk, name)
    assert shown is not None
    assert shown["max_concurrent_sessions"] == 5
    assert shown["idle_timeout"] == 600
    assert gone is None
    assert failed.value.mutation == "delete_keypair_resource_policy"
    assert failed.value.msg


async def test_refusals_are_typed_and_change_nothing(api: Api) -> None:
    async with client(api, api.user) as sdk:
        with pytest.raises((GraphQLError, MutationFailed)):
            await KeyPair.create(sdk, "user@lablup.com")
        with pytest.raises(GraphQLError) as unknown:
            await Admin.query(sdk, "query { no_such_field }")
        with pytest.raises(InvalidValue):
            await User.list(sdk, fields=["email } users { password"])
        with pytest.raises(InvalidValue):
            await User.list(sdk, limit=0)
    async with client(api, api.admin) as sdk:
        keypairs = await KeyPair.list(sdk, user_id="user@lablup.com")
    assert unknown.value.error_type == "graphql-error"
    assert "no_such_field" in unknown.value.detail
    assert keypairs.total_count == 1


# ------------------------------------------------------------------ accounts


async def test_password_login_answers_the_users_keypair(api: Api) -> None:
    await set_password(api, "user@lablup.com", "correct horse 1")
    async with client(api) as anonymous:
        by_email = await Auth.login(anonymous, "user@lablup.com", "correct horse 1")
        by_username = await Auth.login(anonymous, "user", "correct horse 1", domain="default")
        with pytest.raises(Unauthorized):
            await Auth.login(anonymous, "user@lablup.com", "wrong")
    assert (by_email.access_key, by_email.secret_key) == (
        api.user.access_key,
        api.user.secret_key,
    )
    assert by_email.role == "user"
    assert by_username == by_email


async def test_password_changes(api: Api) -> None:
    await set_password(api, "user@lablup.com", "old-password-1")
    async with client(api, api.user) as sdk:
        await Auth.update_password(sdk, "old-password-1", "new-password-2", "new-password-2")
        with pytest.raises(Exception) as mismatch:
            await Auth.update_password(sdk, "new-password-2", "a-password-3", "b-password-3")
        await Auth.update_full_name(sdk, "user@lablup.com", "Ursula User")
        me = await User.detail(sdk)
    async with client(api) as anonymous:
        credentials = await Auth.login(anonymous, "user@lablup.com", "new-password-2")
        with pytest.raises(Unauthorized):
            await Auth.login(anonymous, "user@lablup.com", "old-password-1")
    assert credentials.access_key == api.user.access_key
    assert getattr(mismatch.value, "status", None) == 400
    assert me is not None and me["full_name"] == "Ursula User"


# ------------------------------------------------------------------ the manager


async def test_manager_status_freeze_and_announcement(api: Api) -> None:
    async with client(api, api.admin) as sdk:
        before = await Manager.status(sdk)
        await Manager.freeze(sdk)
        frozen = await Manager.status(sdk)
        await Manager.unfreeze(sdk)
        after = await Manager.status(sdk)
        await Manager.update_announcement(sdk, message="maintenance at 10:00")
        posted = await Manager.get_announcement(sdk)
        await Manager.delete_announcement(sdk)
        removed = await Manager.get_announcement(sdk)
    async with client(api, api.user) as sdk:
        with pytest.raises(Forbidden):
            await Manager.freeze(sdk)
        seen = await Manager.status(sdk)
    assert (before["status"], frozen["status"], after["status"]) == (
        "running",
        "frozen",
        "running",
    )
    assert (posted.enabled, posted.message) == (True, "maintenance at 10:00")
    assert removed.enabled is False
    assert seen["status"] == "running"


async def test_error_log_create_list_clear(api: Api) -> None:
    async with client(api, api.user) as sdk:
        await ErrorLog.create(sdk, severity="error", source="sdk-test", message="it broke")
        page = await ErrorLog.list(sdk, page_size=10)
        await ErrorLog.clear(sdk, str(page.logs[0]["log_id"]))
        after = await ErrorLog.list(sdk, page_size=10)
    assert page.count == 1
    assert page.logs[0]["message"] == "it broke"
    assert after.count == 0


async def test_scaling_groups_available_to_a_project(api: Api) -> None:
    async with client(api, api.user) as sdk:
        available = await ScalingGroup.list_available(sdk, "default")
    assert [sg["name"] for sg in available] == ["default"]


# ------------------------------------------------------------------ identity mutations


async def test_user_lifecycle(api: Api) -> None:
    email = f"{unique('ann')}@example.com"
    async with client(api, api.admin) as sdk:
        created = await User.create(sdk, "default", email, "ann-password-1", full_name="Ann")
        await User.update(sdk, email, full_name="Ann B.", role="admin")
        shown = await User.detail(sdk, email)
        with pytest.raises((GraphQLError, MutationFailed)):
            await User.create(sdk, "default", email, "ann-password-1")
        await User.delete(sdk, email)
        deleted = await User.detail(sdk, email)
        await User.purge(sdk, email)
        purged = await User.detail(sdk, email)
    async with client(api) as anonymous:
        with pytest.raises(Unauthorized):
            await Auth.login(anonymous, email, "ann-password-1")
    assert created["email"] == email and created["uuid"]
    assert shown is not None and (shown["full_name"], shown["role"]) == ("Ann B.", "admin")
    assert deleted is not None and deleted["status"] == "deleted"
    assert purged is None


async def test_domain_group_and_members(api: Api) -> None:
    domain_name = unique("dom")
    async with client(api, api.admin) as sdk:
        await Domain.create(sdk, domain_name, description="a test domain")
        await Domain.update(sdk, domain_name, description="changed")
        domain = await Domain.detail(sdk, domain_name)
        group = await Group.create(sdk, domain_name, "team")
        member = await User.create(sdk, domain_name, f"{unique('m')}@example.com", "pw-123456")
        await Group.add_users(sdk, group["id"], [member["uuid"]])
        members = await User.list(sdk, group=group["id"])
        await Group.remove_users(sdk, group["id"], [member["uuid"]])
        after = await User.list(sdk, group=group["id"])
        await Group.update(sdk, group["id"], description="renamed team")
        shown = await Group.detail(sdk, group["id"])
        await Group.delete(sdk, group["id"])
        inactive = await Group.detail(sdk, group["id"])
    assert domain is not None and domain["description"] == "changed"
    assert [u["uuid"] for u in members.items] == [member["uuid"]]
    assert after.total_count == 0
    assert shown is not None and shown["description"] == "renamed team"
    assert inactive is None or inactive["is_active"] is False


async def test_scaling_group_and_preset_lifecycle(api: Api) -> None:
    name = unique("sg")
    preset = unique("preset")
    async with client(api, api.admin) as sdk:
        await ScalingGroup.create(sdk, name, description="GPU nodes")
        await ScalingGroup.update(sdk, name, description="GPU nodes, 2")
        await ScalingGroup.associate_domain(sdk, name, "default")
        in_domain = await Admin.query(
            sdk, 'query { scaling_groups_for_domain(domain: "default") { name } }'
        )
        await ScalingGroup.dissociate_domain(sdk, name, "default")
        shown = await ScalingGroup.detail(sdk, name)
        await ScalingGroup.delete(sdk, name)
        gone = await ScalingGroup.detail(sdk, name)
        await ResourcePreset.create(sdk, preset, {"cpu": "2", "mem": "4g"}, shared_memory="64m")
        await ResourcePreset.update(sdk, preset, resource_slots={"cpu": "4", "mem": "4g"})
        shown_preset = await ResourcePreset.detail(sdk, preset)
        await ResourcePreset.delete(sdk, preset)
    assert name in [sg["name"] for sg in in_domain["scaling_groups_for_domain"]]
    assert shown is not None and shown["description"] == "GPU nodes, 2"
    assert gone is None
    assert shown_preset is not None and "4" in str(shown_preset["resource_slots"])


@pytest.mark.parametrize("kind", ["user", "project"])
async def test_user_and_project_resource_policies(api: Api, kind: str) -> None:
    name = unique(f"{kind}-policy")
    async with client(api, api.admin) as sdk:
        await ResourcePolicy.create(sdk, name, {"max_vfolder_count": 3}, kind)
        await ResourcePolicy.update(sdk, name, {"max_quota_scope_size": 2**30}, kind)
        shown = await ResourcePolicy.detail(sdk, name, kind)
        listed = await ResourcePolicy.list(sdk, kind)
        await ResourcePolicy.delete(sdk, name, kind)
        gone = await ResourcePolicy.detail(sdk, name, kind)
    async with client(api, api.user) as sdk:
        with pytest.raises((GraphQLError, MutationFailed)):
            await ResourcePolicy.create(sdk, name, {"max_vfolder_count": 3}, kind)
    assert shown is not None
    assert (shown["max_vfolder_count"], shown["max_quota_scope_size"]) == (3, 2**30)
    assert name in [p["name"] for p in listed]
    assert gone is None
