"""``/auth/ssh-keypair`` (GET shows, PATCH generates, POST uploads), and the keypair in
every kernel of the owner's sessions as ``/home/work/id_container`` and ``.ssh/authorized_keys``,
in the embedded and the distributed deployment."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import trio

from bai.common.storage_api import CreateFolder, FolderArgs
from bai.manager.db import Database
from bai.manager.models import keypairs
from bai.manager.models.vfolder import vfolders
from bai.manager.sshkeys import check_keypair, check_public_key

from support.agent import is_root, read
from support.api import Api, Key, assert_problem, running_api
from support.api_session import Backends, Deployment, running_deployment, unique_name

PATH = "/auth/ssh-keypair"


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    async with running_api(db) as running:
        yield running


def keygen_pair(folder: Path, name: str, *args: str) -> tuple[str, str]:
    """(public, private) of a key ssh-keygen makes with *args* (as a user would upload)."""
    keygen = shutil.which("ssh-keygen")
    assert keygen is not None, "ssh-keygen is not installed (Debian: openssh-client)"
    key = folder / name
    subprocess.run([keygen, "-q", *args, "-C", "me@laptop", "-f", str(key)], check=True)
    return key.with_suffix(".pub").read_text(), key.read_text()


async def stored(db: Database, key: Key) -> tuple[str | None, str | None]:
    row = (
        await db.fetch(
            sa.select(keypairs.c.ssh_public_key, keypairs.c.ssh_private_key).where(
                keypairs.c.access_key == key.access_key
            )
        )
    ).one()
    return row.ssh_public_key, row.ssh_private_key


async def test_get_generates_a_pair_on_first_use_then_shows_the_same(api: Api) -> None:
    assert await stored(api.db, api.user) == (None, None)
    first = await api.call("GET", PATH, key=api.user)
    assert first.status_code == 200, first.text
    public = first.json()["ssh_public_key"]
    assert list(first.json()) == ["ssh_public_key"]
    assert check_public_key(public) == public and public.startswith("ssh-ed25519 ")
    again = await api.call("GET", PATH, key=api.user)
    assert again.json() == {"ssh_public_key": public}
    stored_public, stored_private = await stored(api.db, api.user)
    assert stored_public == public and stored_private is not None
    assert await check_keypair(public, stored_private)
    # Every keypair has its own.
    admin = await api.call("GET", PATH, key=api.admin)
    assert admin.json()["ssh_public_key"] != public


async def test_concurrent_first_uses_agree_on_one_pair(api: Api) -> None:
    answers: list[str] = []

    async def get() -> None:
        response = await api.call("GET", PATH, key=api.user)
        assert response.status_code == 200, response.text
        answers.append(response.json()["ssh_public_key"])

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(get)
    assert len(set(answers)) == 1
    assert (await stored(api.db, api.user))[0] == answers[0]


async def test_patch_replaces_the_pair_and_answers_both_halves(api: Api) -> None:
    before = (await api.call("GET", PATH, key=api.user)).json()["ssh_public_key"]
    response = await api.call("PATCH", PATH, key=api.user)
    assert response.status_code == 200, response.text
    pair = response.json()
    assert set(pair) == {"ssh_public_key", "ssh_private_key"}
    assert pair["ssh_public_key"] != before
    assert await check_keypair(pair["ssh_public_key"], pair["ssh_private_key"])
    assert await stored(api.db, api.user) == (pair["ssh_public_key"], pair["ssh_private_key"])
    shown = await api.call("GET", PATH, key=api.user)
    assert shown.json() == {"ssh_public_key": pair["ssh_public_key"]}


async def test_post_stores_the_users_own_pair(api: Api, tmp_path: Path) -> None:
    public, private = keygen_pair(tmp_path, "rsa", "-t", "rsa", "-b", "2048", "-N", "")
    response = await api.call(
        "POST", PATH, key=api.user, json_body={"pubkey": public.strip(), "privkey": private}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"ssh_public_key": public, "ssh_private_key": private}
    assert await stored(api.db, api.user) == (public, private)
    shown = await api.call("GET", PATH, key=api.user)
    assert shown.json() == {"ssh_public_key": public}


async def test_bad_uploads_are_refused_naming_the_field_and_change_nothing(
    api: Api, tmp_path: Path
) -> None:
    pair = (await api.call("PATCH", PATH, key=api.user)).json()
    public, private = pair["ssh_public_key"], pair["ssh_private_key"]
    other_public, _ = keygen_pair(tmp_path, "other", "-t", "ed25519", "-N", "")
    locked_public, locked_private = keygen_pair(tmp_path, "locked", "-t", "ed25519", "-N", "secret")
    secret_part = "".join(private.strip().splitlines()[1:-1])[-60:]
    cases: list[tuple[object, str, str]] = [
        ({"pubkey": public}, "privkey", "is required"),
        ({"privkey": private}, "pubkey", "is required"),
        ({"pubkey": 42, "privkey": private}, "pubkey", "Expected `str`"),
        ({"pubkey": "not a key", "privkey": private}, "pubkey", "supported key type"),
        ({"pubkey": public + public, "privkey": private}, "pubkey", "must be one line"),
        ({"pubkey": public, "privkey": "-----BEGIN nonsense"}, "privkey", "PEM-armoured"),
        ({"pubkey": other_public, "privkey": private}, "pubkey", "not the public key of privkey"),
        ({"pubkey": locked_public, "privkey": locked_private}, "privkey", "passphrase"),
        ({"pubkey": public, "privkey": "x" * 100_000}, "privkey", "Expected `str` of length"),
    ]
    for body, field, problem_text in cases:
        response = await api.call("POST", PATH, key=api.user, json_body=body)
        problem = assert_problem(response, 400, "invalid-api-params")
        assert problem["field"] == field, (body, problem)
        assert problem_text in problem["detail"], (body, problem)
        assert secret_part not in response.text
    not_json = await api.call("POST", PATH, key=api.user, content=b"{pubkey")
    assert_problem(not_json, 400, "invalid-api-params")
    assert await stored(api.db, api.user) == (public, private)


async def test_the_routes_need_credentials(api: Api) -> None:
    for method in ("GET", "PATCH", "POST"):
        assert_problem(await api.call(method, PATH), 401, "unauthorized")
    assert await stored(api.db, api.user) == (None, None)


# ----------------------------------------------------------------- in sessions


SHOW_FILES = """
import os, stat
for path in ("id_container", ".ssh", ".ssh/authorized_keys"):
    st = os.lstat(path)
    print(path, oct(stat.S_IMODE(st.st_mode)), stat.S_ISLNK(st.st_mode), st.st_uid == os.getuid())
print(open(".ssh/authorized_keys").read(), end="")
"""


async def files_of(deployment: Deployment, name: str) -> str:
    out, err = await deployment.run(name, SHOW_FILES)
    assert err == ""
    return out


async def download(deployment: Deployment, name: str, path: str) -> str:
    response = await deployment.api.call(
        "GET", f"/session/{name}/download_single", key=deployment.api.user, params={"file": path}
    )
    assert response.status_code == 200, response.text
    return response.content.decode()


async def test_every_kernel_gets_the_owners_keypair(deployment: Deployment, tmp_path: Path) -> None:
    api = deployment.api
    pair = (await api.call("PATCH", PATH, key=api.user)).json()
    public, private = pair["ssh_public_key"], pair["ssh_private_key"]
    name = unique_name()
    created = await deployment.create(name=name, cluster_size=2, cluster_mode="single-node")
    assert created["status"] == "RUNNING", created
    assert await download(deployment, name, "id_container") == private
    assert await files_of(deployment, name) == (
        "id_container 0o600 False True\n"
        ".ssh 0o700 False True\n"
        ".ssh/authorized_keys 0o600 False True\n" + public
    )
    # The cluster's other kernel has the same pair.
    scratches = [
        Path(kernel.record.scratch_dir)
        for agent in deployment.cluster.agents
        for kernel in agent.kernels.values()
        if kernel.record.session_id == created["sessionId"]
    ]
    assert len(scratches) == 2
    for scratch in scratches:
        assert read(scratch / "id_container") == private
        assert read(scratch / ".ssh" / "authorized_keys") == public
    assert (await deployment.destroy(name)).status_code == 200

    # An uploaded pair is what the next session gets; a running one keeps its own.
    first = unique_name()
    await deployment.create(name=first)
    own_public, own_private = keygen_pair(tmp_path, "ecdsa", "-t", "ecdsa", "-N", "")
    uploaded = await api.call(
        "POST", PATH, key=api.user, json_body={"pubkey": own_public, "privkey": own_private}
    )
    assert uploaded.status_code == 200, uploaded.text
    second = unique_name()
    await deployment.create(name=second)
    assert await download(deployment, second, "id_container") == own_private
    listing = await deployment.api.call(
        "GET", f"/session/{second}/files", key=api.user, params={"path": ".ssh"}
    )
    assert [e["filename"] for e in json.loads(listing.json()["files"])] == ["authorized_keys"]
    assert await download(deployment, second, ".ssh/authorized_keys") == own_public
    assert await download(deployment, first, "id_container") == private
    for session in (first, second):
        assert (await deployment.destroy(session)).status_code == 200


async def test_a_session_gets_a_pair_generated_on_first_use(deployment: Deployment) -> None:
    assert await stored(deployment.db, deployment.api.user) == (None, None)
    name = unique_name()
    await deployment.create(name=name)
    public, private = await stored(deployment.db, deployment.api.user)
    assert public is not None and private is not None
    assert await download(deployment, name, "id_container") == private
    assert await download(deployment, name, ".ssh/authorized_keys") == public
    shown = await deployment.api.call("GET", PATH, key=deployment.api.user)
    assert shown.json() == {"ssh_public_key": public}
    assert (await deployment.destroy(name)).status_code == 200


@pytest.fixture
async def with_storage(backends: Backends, tmp_path: Path) -> AsyncIterator[Deployment]:
    async with running_deployment(backends, tmp_path, storage=True) as running:
        yield running


async def owned_folder(deployment: Deployment, owner: Key, name: str) -> Path:
    """A folder of *owner* made as the folder routes make it (a row and the proxy's
    ``folder/create``), even under a name they refuse; its root on the host."""
    folder_id = uuid.uuid4()
    scope = f"user:{owner.user_id}"
    storage = deployment.cluster.ctx.storage
    await storage.call(
        "local",
        "/folder/create",
        CreateFolder(volume="local", vfid=folder_id.hex, quota_scope=scope),
    )
    async with deployment.db.begin() as conn:
        await conn.execute(
            sa.insert(vfolders).values(
                id=folder_id,
                host="local:local",
                quota_scope_id=scope,
                name=name,
                ownership_type="user",
                user=owner.user_id,
                creator=owner.email,
            )
        )
    info = await storage.call(
        "local", "/folder/mount", FolderArgs(volume="local", vfid=folder_id.hex)
    )
    return Path(info["path"])


@pytest.mark.skipif(not is_root(), reason="kernels with mounts need root and bwrap")
async def test_a_folder_mounted_at_ssh_keeps_its_own_authorized_keys(
    with_storage: Deployment, tmp_path: Path
) -> None:
    deployment = with_storage
    user = deployment.api.user
    # The spec's own-key recipe: a ".ssh" folder holding authorized_keys, mounted by itself.
    folder = await owned_folder(deployment, user, ".ssh")
    mine, _ = keygen_pair(tmp_path, "mine", "-t", "ed25519", "-N", "")
    (folder / "authorized_keys").write_text(mine)
    name = unique_name()
    await deployment.create(name=name)
    public, private = await stored(deployment.db, user)
    assert public is not None and private is not None
    assert await download(deployment, name, "id_container") == private
    out, err = await deployment.run(name, "print(open('.ssh/authorized_keys').read(), end='')")
    assert (out, err) == (mine, "")
    assert sorted(p.name for p in folder.iterdir()) == ["authorized_keys"]
    assert (folder / "authorized_keys").read_text() == mine
    assert (await deployment.destroy(name)).status_code == 200
