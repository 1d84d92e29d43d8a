"""Sharing folders through the real manager API and storage proxy, and its abuse.

Both deployments with a storage proxy (``local:local``,
:mod:`support.vfolders`).  Checked with the keys the official client reads:
invitations (send, list, list-sent, update, accept, reject, cancel),
leaving, direct shares of project folders and the grants they make, and that
nobody gains more than they were given: an invitee cannot invite, re-grant,
rename or delete; only admins share; nobody grants more than they hold; a
private folder is never shared.
"""

from __future__ import annotations

import uuid

from support.api_session import Deployment, problem, unique_name
from support.vfolders import (
    HOST,
    add_user,
    call,
    deployment,
    invitations,
    invite_and_accept,
    new_folder,
    ok,
)

__all__ = ["deployment"]


# -------------------------------------------------------------------------- tests


async def test_invitations_from_sending_to_leaving(deployment: Deployment) -> None:
    d = deployment
    owner, friend = d.api.user, await add_user(d)
    folder = await new_folder(d, owner)
    name = folder["name"]

    # The official client sends user_ids; inviting again while pending invites nobody.
    sent = await ok(
        d, "POST", f"/folders/{name}/invite", owner, {"perm": "ro", "user_ids": [friend.email]}, 201
    )
    assert sent == {"invited_ids": [friend.email]}
    again = await ok(
        d, "POST", f"/folders/{name}/invite", owner, {"perm": "rw", "emails": [friend.email]}, 201
    )
    assert again == {"invited_ids": []}

    received = await invitations(d, friend)
    assert len(received) == 1
    invitation = received[0]
    assert {k: invitation[k] for k in ("inviter", "invitee", "perm", "state", "vfolder_name")} == {
        "inviter": owner.email,
        "invitee": friend.email,
        "perm": "ro",
        "state": "pending",
        "vfolder_name": name,
    }
    assert invitation["vfolder_id"] == str(uuid.UUID(folder["id"]))
    assert [i["id"] for i in await invitations(d, owner, "list-sent")] == [invitation["id"]]
    assert [i["id"] for i in await invitations(d, owner, "list_sent")] == [invitation["id"]]
    assert await invitations(d, owner) == []

    # Only the inviter updates it.
    update = f"/folders/invitations/update/{invitation['id']}"
    problem(
        await call(d, "POST", update, friend, {"perm": "wd"}), 404, "vfolder-invitation-not-found"
    )
    assert "msg" in await ok(d, "POST", update, owner, {"perm": "rw"})
    assert (await invitations(d, friend))[0]["perm"] == "rw"
    problem(await call(d, "POST", update, owner, {}), 400, "invalid-api-params", "perm")

    problem(
        await call(d, "POST", "/folders/invitations/accept", owner, {"inv_id": invitation["id"]}),
        404,
        "vfolder-invitation-not-found",
    )
    assert (
        await ok(d, "POST", "/folders/invitations/accept", friend, {"inv_id": invitation["id"]})
        == {}
    )
    assert await invitations(d, friend) == []
    info = await ok(d, "GET", f"/folders/{name}", friend)
    assert (info["is_owner"], info["permission"]) == (False, "rw")
    listed = await ok(d, "GET", "/folders", friend)
    assert [(i["name"], i["is_owner"]) for i in listed] == [(name, False)]

    # The owner sees and changes the grant; the grantee cannot.
    shared = (await ok(d, "GET", "/folders/_/shared", owner))["shared"]
    assert [(s["vfolder_name"], s["shared_to"]["email"], s["perm"], s["type"]) for s in shared] == [
        (name, friend.email, "rw", "user")
    ]
    by_id = await ok(d, "GET", "/folders/_/shared", owner, {"vfolder_id": folder["id"]})
    assert by_id["shared"] == shared
    grant = {"vfolder": folder["id"], "user": str(friend.user_id), "perm": "wd"}
    problem(await call(d, "POST", "/folders/_/shared", friend, grant), 404, "vfolder-not-found")
    assert "msg" in await ok(d, "POST", "/folders/_/shared", owner, {**grant, "perm": "ro"})
    assert (await ok(d, "GET", f"/folders/{name}", friend))["permission"] == "ro"

    # Leaving: the grantee can, the owner cannot.
    problem(await call(d, "POST", f"/folders/{name}/leave", owner, {}), 400, "invalid-api-params")
    assert await ok(d, "POST", f"/folders/{name}/leave", friend, {"shared_user_uuid": None}) == {
        "msg": "left the shared vfolder"
    }
    problem(await call(d, "GET", f"/folders/{name}", friend), 404, "vfolder-not-found")
    assert (await ok(d, "GET", "/folders/_/shared", owner))["shared"] == []

    # The owner removes a grant with a null permission (the admin CLI's remove command).
    await invite_and_accept(d, owner, name, friend, "rw")
    removed = await ok(d, "POST", "/folders/_/shared", owner, {**grant, "perm": None})
    assert removed == {"msg": "shared vfolder permission updated"}
    problem(await call(d, "GET", f"/folders/{name}", friend), 404, "vfolder-not-found")
    problem(
        await call(d, "POST", "/folders/_/shared", owner, {**grant, "perm": None}),
        400,
        "vfolder-user-not-found",
        "user",
    )


async def test_rejecting_canceling_and_name_clashes(deployment: Deployment) -> None:
    d = deployment
    owner, friend = d.api.user, await add_user(d)
    folder = await new_folder(d, owner)
    name = folder["name"]
    body = {"perm": "ro", "emails": [friend.email]}

    await ok(d, "POST", f"/folders/{name}/invite", owner, body, 201)
    inv_id = (await invitations(d, friend))[0]["id"]
    stranger = await add_user(d)
    problem(
        await call(d, "DELETE", "/folders/invitations/delete", stranger, {"inv_id": inv_id}),
        404,
        "vfolder-invitation-not-found",
    )
    rejected = await ok(d, "DELETE", "/folders/invitations/delete", friend, {"inv_id": inv_id})
    assert "rejected" in rejected["msg"]
    assert await invitations(d, owner, "list-sent") == []

    await ok(d, "POST", f"/folders/{name}/invite", owner, body, 201)
    inv_id = (await invitations(d, friend))[0]["id"]
    canceled = await ok(d, "DELETE", "/folders/invitations/delete", owner, {"inv_id": inv_id})
    assert "canceled" in canceled["msg"]
    assert await invitations(d, friend) == []
    problem(
        await call(d, "POST", "/folders/invitations/accept", friend, {"inv_id": inv_id}),
        404,
        "vfolder-invitation-not-found",
    )

    # The invitee already has a folder of that name: accepting would make the name ambiguous.
    await new_folder(d, friend, name=name)
    await ok(d, "POST", f"/folders/{name}/invite", owner, body, 201)
    inv_id = (await invitations(d, friend))[0]["id"]
    problem(
        await call(d, "POST", "/folders/invitations/accept", friend, {"inv_id": inv_id}),
        400,
        "vfolder-already-exists",
        "inv_id",
    )
    problem(
        await call(d, "POST", "/folders/invitations/accept", friend, {"inv_id": "nope"}),
        400,
        "invalid-api-params",
        "inv_id",
    )


async def test_nobody_gains_more_than_they_were_given(deployment: Deployment) -> None:
    d = deployment
    owner, reader, third = d.api.user, await add_user(d), await add_user(d)
    folder = await new_folder(d, owner)
    name = folder["name"]
    await invite_and_accept(d, owner, name, reader, "ro")

    # An invitee cannot invite anyone, with any permission.
    for perm in ("ro", "rw", "wd"):
        problem(
            await call(
                d,
                "POST",
                f"/folders/{name}/invite",
                reader,
                {"perm": perm, "emails": [third.email]},
            ),
            403,
            "vfolder-permission-denied",
        )
    assert await invitations(d, third) == []
    # Nor re-grant itself, share, rename, change options or delete.
    problem(
        await call(
            d,
            "POST",
            "/folders/_/shared",
            reader,
            {"vfolder": folder["id"], "user": str(reader.user_id), "perm": "wd"},
        ),
        404,
        "vfolder-not-found",
    )
    problem(
        await call(d, "POST", f"/folders/{name}/share", reader, {"emails": [third.email]}),
        403,
        "forbidden",
    )
    problem(
        await call(d, "POST", f"/folders/{name}/rename", reader, {"new_name": "mine"}),
        403,
        "vfolder-permission-denied",
    )
    problem(
        await call(d, "POST", f"/folders/{name}/update-options", reader, {"permission": "wd"}),
        403,
        "vfolder-permission-denied",
    )
    problem(await call(d, "DELETE", f"/folders/{name}", reader), 403, "vfolder-permission-denied")
    problem(
        await call(d, "POST", f"/folders/{name}/mkdir", reader, {"path": "x"}),
        403,
        "vfolder-permission-denied",
    )
    assert (await ok(d, "GET", f"/folders/{name}", reader))["permission"] == "ro"

    # Even with wd, an invitee still cannot invite (only the owner grants).
    await ok(
        d,
        "POST",
        "/folders/_/shared",
        owner,
        {"vfolder": folder["id"], "user": str(reader.user_id), "perm": "wd"},
    )
    problem(
        await call(
            d, "POST", f"/folders/{name}/invite", reader, {"perm": "ro", "emails": [third.email]}
        ),
        403,
        "vfolder-permission-denied",
    )

    # Bad invitations write nothing.
    for emails, field in (
        (["nobody@example.com"], "emails.0"),
        ([third.email, "nobody@example.com"], "emails.1"),
        ([owner.email], "emails.0"),
    ):
        kind = "invalid-api-params" if emails == [owner.email] else "vfolder-user-not-found"
        problem(
            await call(
                d, "POST", f"/folders/{name}/invite", owner, {"perm": "ro", "emails": emails}
            ),
            400,
            kind,
            field,
        )
    problem(
        await call(d, "POST", f"/folders/{name}/invite", owner, {"perm": "rx", "emails": []}),
        400,
        "invalid-api-params",
        "perm",
    )
    problem(
        await call(d, "POST", f"/folders/{name}/invite", owner, {"perm": "ro"}),
        400,
        "invalid-api-params",
        "emails",
    )
    assert await invitations(d, third) == []

    # A private (dot-named) folder is never shared.
    await new_folder(d, owner, name=".local")
    problem(
        await call(
            d, "POST", "/folders/.local/invite", owner, {"perm": "ro", "emails": [third.email]}
        ),
        403,
        "vfolder-permission-denied",
    )


async def test_project_folders_are_shared_by_admins_only(deployment: Deployment) -> None:
    d = deployment
    admin, member = d.api.admin, d.api.user
    outsider = await add_user(d, member=False)
    project = await ok(
        d,
        "POST",
        "/folders",
        admin,
        {"name": unique_name("p"), "host": HOST, "group": "default", "permission": "ro"},
        201,
    )
    name = project["name"]
    assert project["ownership_type"] == "group" and project["user"] is None
    info = await ok(d, "GET", f"/folders/{name}", member)
    assert (info["is_owner"], info["permission"], info["type"]) == (False, "ro", "group")
    problem(await call(d, "GET", f"/folders/{name}", outsider), 404, "vfolder-not-found")
    problem(
        await call(d, "POST", f"/folders/{name}/mkdir", member, {"path": "x"}),
        403,
        "vfolder-permission-denied",
    )
    problem(await call(d, "DELETE", f"/folders/{name}", member), 403, "vfolder-permission-denied")
    problem(await call(d, "POST", f"/folders/{name}/leave", member, {}), 400, "invalid-api-params")

    # Only admins share; with the official client's body.
    body = {"permission": "rw", "emails": [member.email]}
    problem(await call(d, "POST", f"/folders/{name}/share", member, body), 403, "forbidden")
    shared = await ok(d, "POST", f"/folders/{name}/share", admin, body, 201)
    assert shared == {"shared_emails": [member.email]}
    assert (await ok(d, "GET", f"/folders/{name}", member))["permission"] == "rw"
    await ok(d, "POST", f"/folders/{name}/mkdir", member, {"path": "x"}, 201)
    problem(
        await call(
            d,
            "POST",
            f"/folders/{name}/share",
            admin,
            {"permission": "ro", "emails": [outsider.email]},
        ),
        400,
        "vfolder-user-not-found",
        "emails.0",
    )
    grants = (await ok(d, "GET", "/folders/_/shared", admin, {"vfolder_id": project["id"]}))[
        "shared"
    ]
    assert [(g["shared_to"]["email"], g["perm"], g["type"]) for g in grants] == [
        (member.email, "rw", "project")
    ]
    unshared = await ok(d, "DELETE", f"/folders/{name}/unshare", admin, {"emails": [member.email]})
    assert unshared == {"unshared_emails": [member.email]}
    assert (await ok(d, "GET", f"/folders/{name}", member))["permission"] == "ro"

    # User folders are invited to, not shared.
    user_folder = await new_folder(d, admin)
    problem(
        await call(d, "POST", f"/folders/{user_folder['name']}/share", admin, body),
        400,
        "invalid-api-params",
        "name",
    )
    # A project folder's members see it in their lists; the admin can delete it.
    assert name in [item["name"] for item in await ok(d, "GET", "/folders", member)]
    await ok(d, "DELETE", f"/folders/{name}", admin, status=204)
    assert name not in [item["name"] for item in await ok(d, "GET", "/folders", member)]
