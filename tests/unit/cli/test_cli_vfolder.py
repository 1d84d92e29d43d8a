"""`bai vfolder ...` and `bai start -m` as a user sees them.

Each test runs the real ``bai`` click command against the signature-checking
fake manager (``support.fakemanager``); transfers go to a real tus and
range-serving HTTP server (``support.transferserver``).  The tests check the
printed lines, the exit status and the requests that reached the servers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from quart import Response
from test_cli_session import invoke

from support.fakemanager import FakeManager, Recorded, json_response, manager, sse_response
from support.transferserver import TransferServer, content, proxy, wire_folder

__all__ = ["manager", "proxy"]

FOLDER_ID = "b4b1b16c-d07f-4f1f-b60e-da9449aa60a6"
OTHER_ID = "c5c2c27d-e18a-4a2a-b71f-eb9550bb71b7"
TASK_ID = "0f9a1c2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"


async def test_create_list_and_info(manager: FakeManager) -> None:
    manager.answer("POST", "/folders", {"id": FOLDER_ID, "name": "data", "host": "local:local"})
    folder = {
        "name": "data",
        "id": FOLDER_ID,
        "host": "local:local",
        "status": "ready",
        "permission": "rw",
        "ownership_type": "user",
        "is_owner": True,
        "usage_mode": "general",
    }
    manager.answer_each("GET", "/folders", [[folder], []])
    manager.answer("GET", "/folders/data", {**folder, "numFiles": 3, "cloneable": False})

    made = await invoke(manager, "vfolder", "create", "data", "local:local", "-q", "1g")
    assert made.exit_code == 0, made.output
    assert made.stderr == f'✔ Virtual folder "data" is created on local:local (ID: {FOLDER_ID}).\n'
    assert manager.requests[0].json()["quota"] == str(1 << 30)

    listed = await invoke(manager, "vfolder", "list")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines() == [
        "Name\tID\tHost\tStatus\tPermission\tType\tOwner\tUsage Mode",
        f"data\t{FOLDER_ID}\tlocal:local\tready\trw\tuser\tyes\tgeneral",
    ]
    empty = await invoke(manager, "vfolder", "list")
    assert empty.stdout == "There are no virtual folders.\n"

    shown = await invoke(manager, "vfolder", "info", "data")
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == f'Virtual folder "data" (ID: {FOLDER_ID})'
    assert "- Number of files: 3" in lines
    assert "- Clone Allowed: no" in lines


async def test_a_bad_quota_is_a_usage_error(manager: FakeManager) -> None:
    made = await invoke(manager, "vfolder", "create", "data", "-q", "lots")
    assert made.exit_code == 2
    assert "'lots' is not a size" in made.stderr
    assert manager.requests == []


async def test_list_hosts(manager: FakeManager) -> None:
    manager.answer(
        "GET", "/folders/_/hosts", {"default": "local:local", "allowed": ["local:local", "b:c"]}
    )
    hosts = await invoke(manager, "vfolder", "list-hosts")
    assert hosts.stdout.splitlines() == [
        "Default vfolder host: local:local",
        "Usable hosts: local:local, b:c",
    ]


async def test_an_api_error_is_one_failure_line(manager: FakeManager) -> None:
    shown = await invoke(manager, "vfolder", "info", "nope")
    assert shown.exit_code == 1
    assert shown.stderr.startswith("✘ Unknown route [404 Not Found]")


async def test_upload_download_with_an_address_override(
    manager: FakeManager, proxy: TransferServer, tmp_path: Path
) -> None:
    stored = wire_folder(manager, proxy, "data")
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    (local / "big.bin").write_bytes(os.urandom(700_000))
    (local / "sub" / "s.txt").write_bytes(b"small")
    manager.answer("POST", "/folders/data/mkdir", {})
    proxy.drop_patch_after = [200_000]
    up = await invoke(
        manager, "vfolder", "upload", "data", "big.bin", "sub", "-r", "-b", str(local),
        "--chunk-size", "256k",
    )  # fmt: skip
    assert up.exit_code == 0, up.output
    assert content(stored / "big.bin") == content(local / "big.bin")
    assert content(stored / "sub" / "s.txt") == b"small"
    lines = up.stderr.splitlines()
    assert lines[0].startswith("∙ big.bin: ")
    assert lines[0].endswith("; resuming at byte 200000 (retry 1)")
    assert lines[1:] == [
        "∙ big.bin (683.6 KiB)",
        "∙ sub/s.txt (5 B)",
        "✔ Uploaded 2 file(s), 683.6 KiB.",
    ]

    # The manager names an address this client cannot reach; the override maps it.
    async def far_away(recorded: Recorded) -> Response:
        token = "far"
        proxy.offer_download(token, stored / recorded.json()["path"])
        return json_response({"token": token, "url": "http://proxy.internal:1/download"})

    manager.add("POST", "/folders/data/request-download", far_away)
    back = tmp_path / "back"
    down = await invoke(
        manager, "vfolder", "download", "data", "big.bin", "-b", str(back),
        "--override-storage-proxy", f"http://proxy.internal:1/download={proxy.url}/download",
    )  # fmt: skip
    assert down.exit_code == 0, down.output
    assert content(back / "big.bin") == content(local / "big.bin")
    assert down.stderr.splitlines()[-1] == "✔ Downloaded 1 file(s), 683.6 KiB."

    again = await invoke(manager, "vfolder", "download", "data", "big.bin", "-b", str(back))
    assert again.exit_code == 1
    assert "exists already" in again.stderr


async def test_transfers_refuse_bad_paths(manager: FakeManager, tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    up = await invoke(manager, "vfolder", "upload", "data", "dir", "-b", str(tmp_path))
    assert up.exit_code == 1
    assert "is a directory (upload it recursively)" in up.stderr
    down = await invoke(manager, "vfolder", "download", "data", "../x", "-b", str(tmp_path))
    assert down.exit_code == 1
    assert "must not contain '..'" in down.stderr
    assert manager.requests == []


async def test_ls_prints_a_table(manager: FakeManager) -> None:
    manager.answer(
        "GET",
        "/folders/data/files",
        {
            "items": [
                {"name": "sub", "type": "DIRECTORY", "size": 4096, "mode": 0o755, "modified": None},
                {"name": "a.txt", "type": "FILE", "size": 3, "mode": "644", "modified": None},
            ]
        },
    )
    ls = await invoke(manager, "vfolder", "ls", "data", "x")
    assert ls.exit_code == 0, ls.output
    assert ls.stdout.splitlines() == [
        "Name\tSize\tModified\tMode",
        "sub/\t4096\t-\tdrwxr-xr-x",
        "a.txt\t3\t-\t-rw-r--r--",
    ]
    assert manager.last().query == {"path": ["x"]}


async def test_file_commands(manager: FakeManager) -> None:
    for method, route in [
        ("POST", "mkdir"),
        ("POST", "move-file"),
        ("POST", "rename-file"),
        ("DELETE", "delete-files"),
    ]:
        manager.answer(method, f"/folders/data/{route}", {})
    assert (await invoke(manager, "vfolder", "mkdir", "data", "a/b", "-p")).exit_code == 0
    assert (await invoke(manager, "vfolder", "mv", "data", "a/b", "c")).exit_code == 0
    assert (await invoke(manager, "vfolder", "rename-file", "data", "c", "d")).exit_code == 0
    refused = await invoke(manager, "vfolder", "rm", "data", "d", stdin="n\n")
    assert refused.exit_code == 1
    assert manager.bodies("DELETE", "/folders/data/delete-files") == []
    confirmed = await invoke(manager, "vfolder", "rm", "data", "d", "-r", stdin="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert (await invoke(manager, "vfolder", "rm", "data", "e", "--yes")).exit_code == 0
    assert manager.bodies("POST", "/folders/data/mkdir") == [
        {"path": "a/b", "parents": True, "exist_ok": False}
    ]
    assert manager.bodies("POST", "/folders/data/move-file") == [{"src": "a/b", "dst": "c"}]
    assert manager.bodies("POST", "/folders/data/rename-file") == [
        {"target_path": "c", "new_name": "d"}
    ]
    assert manager.bodies("DELETE", "/folders/data/delete-files") == [
        {"files": ["d"], "recursive": True},
        {"files": ["e"], "recursive": False},
    ]


async def test_folder_commands(manager: FakeManager) -> None:
    manager.answer("POST", "/folders/data/rename", {})
    manager.answer("POST", "/folders/new/update-options", {})
    manager.answer("DELETE", "/folders/new", {})
    assert (await invoke(manager, "vfolder", "rename", "data", "new")).exit_code == 0
    nothing = await invoke(manager, "vfolder", "update-options", "new")
    assert nothing.exit_code == 2
    updated = await invoke(
        manager, "vfolder", "update-options", "new", "-p", "ro", "--set-cloneable", "true"
    )
    assert updated.exit_code == 0, updated.output
    deleted = await invoke(manager, "vfolder", "delete", "new")
    assert deleted.stderr == '✔ Moved "new" to the trash (see `bai vfolder trash`).\n'
    assert manager.bodies("POST", "/folders/data/rename") == [{"new_name": "new"}]
    assert manager.bodies("POST", "/folders/new/update-options") == [
        {"permission": "ro", "cloneable": True}
    ]


async def test_trash_restore_and_purge(manager: FakeManager) -> None:
    trashed = [
        {"id": FOLDER_ID, "name": "old", "host": "local:local", "deleted_at": "2024-01-01"},
        {"id": OTHER_ID, "name": "twice", "host": "local:local"},
        {"id": FOLDER_ID[::-1], "name": "twice", "host": "local:local"},
    ]
    manager.answer("GET", "/folders/_/trash", trashed)
    manager.answer("POST", "/folders/_/restore", {})
    manager.answer("POST", "/folders/_/purge", {})
    listed = await invoke(manager, "vfolder", "trash")
    assert listed.stdout.splitlines()[:2] == [
        "Name\tID\tHost\tDeleted At",
        f"old\t{FOLDER_ID}\tlocal:local\t2024-01-01",
    ]
    restored = await invoke(manager, "vfolder", "restore", "old")
    assert restored.exit_code == 0, restored.output
    ambiguous = await invoke(manager, "vfolder", "restore", "twice")
    assert ambiguous.exit_code == 1
    assert "Several folders named" in ambiguous.stderr
    missing = await invoke(manager, "vfolder", "restore", "none")
    assert missing.exit_code == 1
    purged = await invoke(manager, "vfolder", "purge", OTHER_ID, "-y")
    assert purged.exit_code == 0, purged.output
    kept = await invoke(manager, "vfolder", "purge", OTHER_ID, stdin="n\n")
    assert kept.exit_code == 1
    assert manager.bodies("POST", "/folders/_/restore") == [{"id": FOLDER_ID}]
    assert manager.bodies("POST", "/folders/_/purge") == [{"id": OTHER_ID}]


async def test_sharing_commands(manager: FakeManager) -> None:
    manager.answer("POST", "/folders/data/invite", {"invited_ids": ["b@x.org"]})
    manager.answer(
        "GET",
        "/folders/invitations/list",
        {
            "invitations": [
                {
                    "id": "i1",
                    "vfolder_name": "data",
                    "inviter": "a@x.org",
                    "perm": "ro",
                    "state": "pending",
                }
            ]
        },
    )
    manager.answer("POST", "/folders/invitations/accept", {})
    manager.answer("POST", "/folders/data/share", {"shared_emails": []})
    manager.answer("DELETE", "/folders/data/unshare", {"unshared_emails": ["b@x.org"]})
    manager.answer("POST", "/folders/data/leave", {})
    invited = await invoke(manager, "vfolder", "invite", "data", "b@x.org", "-p", "ro")
    assert invited.stdout == "Invitation sent to:\n\t- b@x.org\n"
    bad = await invoke(manager, "vfolder", "invite", "data", "b@x.org", "-p", "all")
    assert bad.exit_code == 2
    listed = await invoke(manager, "vfolder", "invitations")
    assert listed.stdout.splitlines()[1] == "i1\tdata\ta@x.org\tro\tpending"
    assert (await invoke(manager, "vfolder", "accept-invitation", "i1")).exit_code == 0
    shared = await invoke(manager, "vfolder", "share", "data", "c@x.org")
    assert shared.stdout == "No users found. Folder is not shared.\n"
    unshared = await invoke(manager, "vfolder", "unshare", "data", "b@x.org")
    assert unshared.stdout == "Unshared from:\n\t- b@x.org\n"
    left = await invoke(manager, "vfolder", "leave", "data")
    assert left.stderr == '✔ Left the shared virtual folder "data".\n'
    assert manager.bodies("POST", "/folders/data/invite") == [
        {"perm": "ro", "user_ids": ["b@x.org"]}
    ]
    assert manager.bodies("POST", "/folders/invitations/accept") == [{"inv_id": "i1"}]
    assert manager.bodies("POST", "/folders/data/share") == [
        {"permission": "rw", "emails": ["c@x.org"]}
    ]


async def test_clone_waits_for_its_task(manager: FakeManager) -> None:
    manager.answer("POST", "/folders/data/clone", {"id": FOLDER_ID, "bgtask_id": TASK_ID})
    outcomes: Iterator[list[tuple[str, Any]]] = iter(
        [
            [("task_updated", {"current_progress": 1, "total_progress": 1}), ("task_done", {})],
            [("task_failed", {"message": "no space left"})],
        ]
    )

    async def events(recorded: Recorded) -> Response:
        return sse_response(next(outcomes))

    manager.add("GET", "/events/background-task", events)
    done = await invoke(manager, "vfolder", "clone", "data", "copy", "local:local", "-p", "ro")
    assert done.exit_code == 0, done.output
    assert done.stderr == "✔ Cloning the vfolder is complete.\n"
    failed = await invoke(manager, "vfolder", "clone", "data", "copy2")
    assert failed.exit_code == 1
    assert failed.stderr == "✘ Cloning failed: no space left\n"
    assert manager.bodies("POST", "/folders/data/clone") == [
        {
            "target_name": "copy",
            "target_host": "local:local",
            "usage_mode": "general",
            "permission": "ro",
        },
        {"target_name": "copy2", "usage_mode": "general", "permission": "rw"},
    ]


async def test_start_mounts_folders(manager: FakeManager) -> None:
    manager.answer(
        "POST", "/session", {"sessionId": FOLDER_ID, "status": "RUNNING", "created": True}
    )
    started = await invoke(
        manager, "start", "-t", "s1", "-m", "data", "-m", "models:/data/models",
        "--mount", "scratch=work/scratch", "-m", "data", "python",
    )  # fmt: skip
    assert started.exit_code == 0, started.output
    config = manager.requests[0].json()["config"]
    assert config["mounts"] == ["data", "models", "scratch"]
    assert config["mount_map"] == {"models": "/data/models", "scratch": "work/scratch"}
