"""The fourteen dotfile routes (``/user-config``, ``/group-config``, ``/domain-config``) with
each role, and dotfiles and the stored bootstrap script in a new kernel's ``/home/work``,
in the embedded and the distributed deployment."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa

from bai.manager.models.identity import (
    UserRole,
    association_groups_users,
    domains,
    generate_access_key,
    generate_secret_key,
    groups,
    keypairs,
    users,
)

from support.api import Key
from support.api_session import Deployment, problem, unique_name

USER = "/user-config/dotfiles"
GROUP = "/group-config/dotfiles"
DOMAIN = "/domain-config/dotfiles"
SCRIPT = "/user-config/bootstrap-script"


@dataclass
class World:
    """The default fixture plus a domain admin, a second domain and two more projects."""

    d: Deployment
    superadmin: Key
    user: Key
    domain_admin: Key
    outsider: Key  # a user of the other domain
    default_project: uuid.UUID
    side_project: uuid.UUID  # in the default domain; the user is not a member
    other_project: uuid.UUID  # in the other domain
    other_domain: str


async def add_key(
    d: Deployment, domain: str, role: UserRole, project: uuid.UUID | None = None
) -> Key:
    user_id = uuid.uuid4()
    email = f"{unique_name('u')}@example.com"
    access_key, secret_key = generate_access_key(), generate_secret_key()
    async with d.db.begin() as conn:
        await conn.execute(
            sa.insert(users).values(
                uuid=user_id,
                username=email.split("@")[0],
                email=email,
                domain_name=domain,
                role=role,
                resource_policy="default",
            )
        )
        await conn.execute(
            sa.insert(keypairs).values(
                access_key=access_key,
                secret_key=secret_key,
                user_id=email,
                user=user_id,
                is_admin=role is not UserRole.USER,
                resource_policy="default",
            )
        )
        if project is not None:
            await conn.execute(
                sa.insert(association_groups_users).values(user_id=user_id, group_id=project)
            )
    return Key(access_key, secret_key, email, user_id)


async def add_project(d: Deployment, domain: str, name: str) -> uuid.UUID:
    project = uuid.uuid4()
    async with d.db.begin() as conn:
        await conn.execute(
            sa.insert(groups).values(
                id=project, name=name, domain_name=domain, resource_policy="default"
            )
        )
    return project


async def world_of(d: Deployment) -> World:
    other = unique_name("dom")
    async with d.db.begin() as conn:
        await conn.execute(sa.insert(domains).values(name=other))
        default_project = await conn.scalar(
            sa.select(groups.c.id).where(groups.c.name == "default")
        )
    return World(
        d=d,
        superadmin=d.api.admin,
        user=d.api.user,
        domain_admin=await add_key(d, "default", UserRole.ADMIN),
        outsider=await add_key(d, other, UserRole.USER),
        default_project=default_project,
        side_project=await add_project(d, "default", "side"),
        other_project=await add_project(d, other, "elsewhere"),
        other_domain=other,
    )


async def call(
    d: Deployment, method: str, route: str, key: Key, /, **params: Any
) -> httpx.Response:
    """*params* go in the query string for GET/DELETE, in a JSON body otherwise."""
    if method in ("GET", "DELETE"):
        return await d.api.call(method, route, key=key, params=params or None)
    return await d.api.call(method, route, key=key, json_body=params)


async def ok(d: Deployment, method: str, route: str, key: Key, /, **params: Any) -> Any:
    response = await call(d, method, route, key, **params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_user_dotfiles_round_trip_and_stay_private(deployment: Deployment) -> None:
    w = await world_of(deployment)
    d = w.d
    assert await ok(d, "GET", USER, w.user) == []
    assert await ok(d, "POST", USER, w.user, path=".bashrc", permission="644", data="A=1\n") == {}
    assert await ok(d, "POST", USER, w.user, path="./bin//tool", permission="755", data="t") == {}
    assert await ok(d, "GET", USER, w.user) == [
        {"path": ".bashrc", "permission": "644", "data": "A=1\n"},
        {"path": "bin/tool", "permission": "755", "data": "t"},
    ]
    one = await ok(d, "GET", USER, w.user, path=".bashrc")
    assert one["data"] == "A=1\n" and one["permission"] == "644" and one["perm"] == "644"
    assert await ok(d, "PATCH", USER, w.user, path=".bashrc", permission="600", data="B") == {}
    assert (await ok(d, "GET", USER, w.user, path=".bashrc"))["data"] == "B"
    # Another user sees none of them.
    assert await ok(d, "GET", USER, w.domain_admin) == []
    problem(await call(d, "GET", USER, w.domain_admin, path=".bashrc"), 404, "dotfile-not-found")
    assert await ok(d, "DELETE", USER, w.user, path="bin/tool") == {"success": True}
    assert [item["path"] for item in await ok(d, "GET", USER, w.user)] == [".bashrc"]
    problem(await call(d, "DELETE", USER, w.user, path="bin/tool"), 404, "dotfile-not-found")
    problem(
        await call(d, "PATCH", USER, w.user, path="nope", permission="644", data=""),
        404,
        "dotfile-not-found",
    )
    problem(
        await call(d, "POST", USER, w.user, path=".bashrc", permission="644", data=""),
        409,
        "dotfile-already-exists",
    )
    # The stored bootstrap script.
    assert await ok(d, "GET", SCRIPT, w.user) == ""
    assert await ok(d, "POST", SCRIPT, w.user, script="  echo hi\n") == {}
    assert await ok(d, "GET", SCRIPT, w.user) == "echo hi"
    assert await ok(d, "GET", SCRIPT, w.domain_admin) == ""


async def test_owner_access_key_follows_the_admin_rules(deployment: Deployment) -> None:
    w = await world_of(deployment)
    d = w.d
    target = w.user.access_key
    body = {"path": ".vimrc", "permission": "644", "data": "set nu"}
    # A domain admin of the user's domain, and a superadmin, may act for the user.
    await ok(d, "POST", USER, w.domain_admin, owner_access_key=target, **body)
    assert (await ok(d, "GET", USER, w.user, path=".vimrc"))["data"] == "set nu"
    listed = await ok(d, "GET", USER, w.superadmin, owner_access_key=target)
    assert [item["path"] for item in listed] == [".vimrc"]
    await ok(
        d, "PATCH", USER, w.superadmin, owner_access_key=target, **{**body, "data": "set nonu"}
    )
    assert (await ok(d, "GET", USER, w.user, path=".vimrc"))["data"] == "set nonu"
    # A user may not act for anyone else; a domain admin not outside the domain.
    problem(
        await call(d, "POST", USER, w.user, owner_access_key=w.outsider.access_key, **body),
        403,
        "forbidden",
    )
    problem(
        await call(d, "POST", USER, w.domain_admin, owner_access_key=w.outsider.access_key, **body),
        403,
        "forbidden",
    )
    problem(
        await call(d, "DELETE", USER, w.outsider, owner_access_key=target, path=".vimrc"),
        403,
        "forbidden",
    )
    problem(
        await call(d, "POST", USER, w.superadmin, owner_access_key="AKIANOSUCHKEY0000000", **body),
        400,
        "invalid-api-params",
        "owner_access_key",
    )
    await ok(d, "DELETE", USER, w.domain_admin, owner_access_key=target, path=".vimrc")
    assert await ok(d, "GET", USER, w.user) == []


async def test_domain_dotfiles_need_an_admin_of_the_domain(deployment: Deployment) -> None:
    w = await world_of(deployment)
    d = w.d
    body = {
        "domain": "default",
        "path": ".inputrc",
        "permission": "644",
        "data": "set bell-style none",
    }
    # Users read their domain's dotfiles but may not change them.
    problem(await call(d, "POST", DOMAIN, w.user, **body), 403, "forbidden")
    await ok(d, "POST", DOMAIN, w.domain_admin, **body)
    assert await ok(d, "GET", DOMAIN, w.user, domain="default") == [
        {"path": ".inputrc", "permission": "644", "data": "set bell-style none"}
    ]
    assert (await ok(d, "GET", DOMAIN, w.user, domain="default", path=".inputrc"))["data"]
    problem(await call(d, "PATCH", DOMAIN, w.user, **body), 403, "forbidden")
    problem(
        await call(d, "DELETE", DOMAIN, w.user, domain="default", path=".inputrc"), 403, "forbidden"
    )
    # Nobody but a superadmin reads or changes another domain's.
    problem(await call(d, "GET", DOMAIN, w.outsider, domain="default"), 403, "forbidden")
    other = {**body, "domain": w.other_domain}
    problem(await call(d, "POST", DOMAIN, w.domain_admin, **other), 403, "forbidden")
    problem(await call(d, "GET", DOMAIN, w.domain_admin, domain=w.other_domain), 403, "forbidden")
    await ok(d, "POST", DOMAIN, w.superadmin, **other)
    assert len(await ok(d, "GET", DOMAIN, w.outsider, domain=w.other_domain)) == 1
    await ok(d, "PATCH", DOMAIN, w.domain_admin, **{**body, "data": "x"})
    assert (await ok(d, "GET", DOMAIN, w.user, domain="default", path=".inputrc"))["data"] == "x"
    await ok(d, "DELETE", DOMAIN, w.superadmin, domain=w.other_domain, path=".inputrc")
    assert await ok(d, "DELETE", DOMAIN, w.domain_admin, domain="default", path=".inputrc") == {
        "success": True
    }
    problem(
        await call(d, "GET", DOMAIN, w.superadmin, domain="no-such-domain"), 404, "object-not-found"
    )
    problem(
        await call(d, "POST", DOMAIN, w.superadmin, **{**body, "domain": "no-such-domain"}),
        404,
        "object-not-found",
    )
    problem(await call(d, "GET", DOMAIN, w.user), 400, "invalid-api-params", "domain")


async def test_group_dotfiles_by_id_or_name_with_membership(deployment: Deployment) -> None:
    w = await world_of(deployment)
    d = w.d
    file = {"path": ".condarc", "permission": "644", "data": "channels: []"}
    by_id = {"group": str(w.default_project)}
    by_name = {"group": "default", "domain": "default"}
    # Changes need an admin of the project's domain.
    problem(await call(d, "POST", GROUP, w.user, **by_id, **file), 403, "forbidden")
    await ok(d, "POST", GROUP, w.domain_admin, **by_id, **file)
    # Members read it, by id or by name.
    assert await ok(d, "GET", GROUP, w.user, **by_name) == [
        {"path": ".condarc", "permission": "644", "data": "channels: []"}
    ]
    assert (await ok(d, "GET", GROUP, w.user, **by_id, path=".condarc"))["data"] == "channels: []"
    # Non-members and other domains do not.
    await ok(d, "POST", GROUP, w.superadmin, group=str(w.side_project), **file)
    problem(await call(d, "GET", GROUP, w.user, group=str(w.side_project)), 403, "forbidden")
    assert len(await ok(d, "GET", GROUP, w.domain_admin, group=str(w.side_project))) == 1
    problem(await call(d, "GET", GROUP, w.outsider, **by_id), 403, "forbidden")
    problem(
        await call(d, "POST", GROUP, w.domain_admin, group=str(w.other_project), **file),
        403,
        "forbidden",
    )
    await ok(d, "POST", GROUP, w.superadmin, group="elsewhere", domain=w.other_domain, **file)
    # The original's aliases of ``group``.
    await ok(
        d, "PATCH", GROUP, w.domain_admin, groupId=str(w.default_project), **{**file, "data": "y"}
    )
    assert (await ok(d, "GET", GROUP, w.user, group_id=str(w.default_project), path=".condarc"))[
        "data"
    ] == "y"
    problem(await call(d, "DELETE", GROUP, w.user, **by_id, path=".condarc"), 403, "forbidden")
    assert await ok(d, "DELETE", GROUP, w.domain_admin, **by_name, path=".condarc") == {
        "success": True
    }
    assert await ok(d, "GET", GROUP, w.user, **by_id) == []
    # A name needs its domain; unknown projects are 404.
    problem(
        await call(d, "GET", GROUP, w.user, group="default"), 400, "invalid-api-params", "domain"
    )
    problem(await call(d, "GET", GROUP, w.user), 400, "invalid-api-params", "group")
    problem(
        await call(d, "GET", GROUP, w.superadmin, group=str(uuid.uuid4())), 404, "object-not-found"
    )


async def test_bad_dotfiles_are_refused_naming_the_field_and_nothing_is_written(
    deployment: Deployment,
) -> None:
    w = await world_of(deployment)
    d = w.d
    await ok(d, "POST", USER, w.user, path="conf/app", permission="644", data="x")
    before = await ok(d, "GET", USER, w.user)
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({"path": "/etc/passwd"}, 400, "invalid-api-params", "path"),
        ({"path": "/home/work/.bashrc"}, 400, "invalid-api-params", "path"),
        ({"path": "../escape"}, 400, "invalid-api-params", "path"),
        ({"path": "a/../../escape"}, 400, "invalid-api-params", "path"),
        ({"path": ".ssh/authorized_keys"}, 400, "invalid-api-params", "path"),
        ({"path": "id_container"}, 400, "invalid-api-params", "path"),
        ({"path": "x" * 300}, 400, "invalid-api-params", "path"),
        ({"permission": "0777"}, 400, "invalid-api-params", "permission"),
        ({"permission": "abc"}, 400, "invalid-api-params", "permission"),
        ({"data": "x" * (64 * 1024 + 1)}, 400, "invalid-api-params", "data"),
        ({"data": 5}, 400, "invalid-api-params", "data"),
    ]
    for change, status, kind, field in cases:
        body = {"path": ".ok", "permission": "644", "data": "d", **change}
        problem(await call(d, "POST", USER, w.user, **body), status, kind, field)
        problem(
            await call(d, "POST", DOMAIN, w.superadmin, domain="default", **body),
            status,
            kind,
            field,
        )
    # A file where another dotfile needs a folder.
    problem(
        await call(d, "POST", USER, w.user, path="conf", permission="644", data="d"),
        400,
        "invalid-api-params",
        "path",
    )
    problem(
        await call(d, "POST", USER, w.user, permission="644", data="d"),
        400,
        "invalid-api-params",
        "path",
    )
    problem(await call(d, "DELETE", USER, w.user), 400, "invalid-api-params", "path")
    # Too many, too big in all.
    for i in range(99):
        await ok(d, "POST", USER, w.user, path=f"f{i}", permission="644", data="")
    problem(
        await call(d, "POST", USER, w.user, path="one-more", permission="644", data=""),
        400,
        "invalid-api-params",
        "path",
    )
    await ok(d, "DELETE", USER, w.user, path="f0")
    problem(
        await call(d, "POST", USER, w.user, path="big", permission="644", data="z" * 64000),
        400,
        "invalid-api-params",
        "data",
    )
    after = await ok(d, "GET", USER, w.user)
    assert len(after) == 99 and after[0] == before[0]
    assert await ok(d, "GET", DOMAIN, w.superadmin, domain="default") == []
    problem(
        await call(d, "POST", SCRIPT, w.user, script="x" * (64 * 1024 + 1)),
        400,
        "invalid-api-params",
        "script",
    )
    assert await ok(d, "GET", SCRIPT, w.user) == ""


SHOW_HOME = """
import os, stat
for name in ("shared/app.conf", ".profile_bai", "bin/hello", "from-script"):
    try:
        st = os.lstat(name)
        print(name, oct(stat.S_IMODE(st.st_mode)), repr(open(name).read()))
    except FileNotFoundError:
        print(name, "missing")
"""


async def test_a_new_kernel_gets_the_dotfiles_and_runs_the_stored_script_first(
    deployment: Deployment,
) -> None:
    w = await world_of(deployment)
    d = w.d
    project = {"group": str(w.default_project)}
    await ok(
        d,
        "POST",
        DOMAIN,
        w.superadmin,
        domain="default",
        path="shared/app.conf",
        permission="644",
        data="domain",
    )
    await ok(
        d,
        "POST",
        DOMAIN,
        w.superadmin,
        domain="default",
        path=".profile_bai",
        permission="644",
        data="domain",
    )
    await ok(
        d,
        "POST",
        DOMAIN,
        w.superadmin,
        domain="default",
        path="bin/hello",
        permission="644",
        data="domain",
    )
    await ok(
        d,
        "POST",
        GROUP,
        w.superadmin,
        **project,
        path=".profile_bai",
        permission="600",
        data="project",
    )
    await ok(
        d,
        "POST",
        GROUP,
        w.superadmin,
        **project,
        path="bin/hello",
        permission="644",
        data="project",
    )
    await ok(
        d, "POST", USER, w.user, path="bin/hello", permission="755", data="#!/bin/sh\necho hello\n"
    )
    # The stored script runs before the session's and sees the dotfiles.
    await ok(
        d,
        "POST",
        SCRIPT,
        w.user,
        script="test -x bin/hello && bin/hello > from-script && echo user >> order.txt",
    )
    name = unique_name()
    created = await d.create(name=name, bootstrap_script="echo session >> order.txt\n")
    assert created["status"] == "RUNNING", created
    out, err = await d.run(name, SHOW_HOME)
    assert err == ""
    assert out.splitlines() == [
        "shared/app.conf 0o644 'domain'",
        ".profile_bai 0o600 'project'",
        "bin/hello 0o755 '#!/bin/sh\\necho hello\\n'",
        "from-script 0o644 'hello\\n'",
    ]
    order, _ = await d.run(name, "print(open('order.txt').read(), end='')")
    assert order == "user\nsession\n"
    assert (await d.destroy(name)).status_code == 200
    # A failing stored script fails the kernel, and the session's script never runs.
    await ok(d, "POST", SCRIPT, w.user, script="echo stored-script-broke >&2; exit 7")
    failed = unique_name()
    created = await d.create(name=failed, bootstrap_script="echo session-ran >&2")
    assert (created["status"], created["statusInfo"]) == ("ERROR", "bootstrap-failed")
    error = (await d.info(failed))["statusData"]["error"]["repr"]
    assert "stored-script-broke" in error and "exited with code 7" in error
    assert "session-ran" not in error
    assert (await d.destroy(failed)).status_code == 200
