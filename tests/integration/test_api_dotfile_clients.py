"""bai's own clients of the dotfile routes: the SDK (:mod:`bai.client.dotfile`) and
``bai dotfile ...``, against a real manager API."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator

import pytest
import trio
from click.testing import CliRunner, Result

from bai.cli.main import cli
from bai.client import APIClient, APIConfig
from bai.client.dotfile import (
    DotfileScope,
    create_dotfile,
    delete_dotfile,
    get_bootstrap_script,
    get_dotfile,
    list_dotfiles,
    set_bootstrap_script,
    update_dotfile,
)
from bai.client.exceptions import BackendAPIError
from bai.manager.db import Database

from support.api import Api, Key, running_api


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    async with running_api(db) as running:
        yield running


def config(api: Api, key: Key) -> APIConfig:
    return APIConfig(endpoint=api.base_url, access_key=key.access_key, secret_key=key.secret_key)


async def test_sdk_round_trip_in_every_scope(api: Api) -> None:
    async with APIClient(config(api, api.user)) as user, APIClient(config(api, api.admin)) as admin:
        await create_dotfile(user, ".bashrc", "A=1\n", "600")
        assert await list_dotfiles(user) == [
            {"path": ".bashrc", "permission": "600", "data": "A=1\n"}
        ]
        await update_dotfile(user, ".bashrc", "A=2\n")
        assert await get_dotfile(user, ".bashrc") == {
            "path": ".bashrc",
            "permission": "644",
            "data": "A=2\n",
        }
        # The admin reads the user's through owner_access_key.
        for_user = DotfileScope(owner_access_key=api.user.access_key)
        assert (await get_dotfile(admin, ".bashrc", for_user))["data"] == "A=2\n"
        project = DotfileScope(group="default", domain="default")
        domain = DotfileScope(domain="default")
        await create_dotfile(admin, "p", "project", scope=project)
        await create_dotfile(admin, "d", "domain", scope=domain)
        assert [e["path"] for e in await list_dotfiles(user, project)] == ["p"]
        assert [e["path"] for e in await list_dotfiles(user, domain)] == ["d"]
        with pytest.raises(BackendAPIError) as denied:
            await delete_dotfile(user, "d", domain)
        assert denied.value.status == 403
        with pytest.raises(BackendAPIError) as missing:
            await get_dotfile(user, "nope")
        assert missing.value.status == 404
        with pytest.raises(BackendAPIError) as bad:
            await create_dotfile(user, "/etc/x", "x")
        assert bad.value.status == 400 and "path" in str(bad.value)
        await delete_dotfile(user, ".bashrc")
        assert await list_dotfiles(user) == []
        assert await get_bootstrap_script(user) == ""
        await set_bootstrap_script(user, "echo hi")
        assert await get_bootstrap_script(user) == "echo hi"


async def invoke(api: Api, key: Key, *args: str, stdin: str | None = None) -> Result:
    """Run ``bai ARGS`` in-process as a user whose environment names *api* and *key*."""
    environment: dict[str, str | None] = {k: None for k in os.environ if k.startswith("BACKEND_")}
    environment.update(
        BACKEND_ENDPOINT=api.base_url,
        BACKEND_ACCESS_KEY=key.access_key,
        BACKEND_SECRET_KEY=key.secret_key,
    )
    runner = CliRunner()
    return await trio.to_thread.run_sync(
        functools.partial(runner.invoke, cli, list(args), input=stdin, env=environment)
    )


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


async def test_bai_dotfile_commands(api: Api) -> None:
    user = api.user
    assert "There are no dotfiles." in ok(await invoke(api, user, "dotfile", "list")).output
    # The content from stdin is kept byte for byte.
    ok(await invoke(api, user, "dotfile", "create", ".vimrc", "--perm", "644", stdin="set nu\n"))
    listed = ok(await invoke(api, user, "dotfile", "list")).stdout
    assert ".vimrc" in listed and "644" in listed and "set nu" in listed
    assert ok(await invoke(api, user, "dotfile", "get", ".vimrc")).stdout == "set nu\n"
    ok(await invoke(api, user, "dotfile", "update", ".vimrc", stdin="set nonu\n"))
    assert ok(await invoke(api, user, "dotfile", "get", ".vimrc")).stdout == "set nonu\n"
    # The admin's view of the user's, with -o.
    shown = await invoke(api, api.admin, "dotfile", "get", ".vimrc", "-o", user.access_key)
    assert ok(shown).stdout == "set nonu\n"
    ok(await invoke(api, api.admin, "dotfile", "create", "x", "-d", "default", stdin="d"))
    assert "x" in ok(await invoke(api, user, "dotfile", "list", "-d", "default")).stdout
    refused = await invoke(api, user, "dotfile", "create", "../x", stdin="x")
    assert refused.exit_code == 1 and "'..'" in refused.output
    missing = await invoke(api, user, "dotfile", "get", "nope")
    assert missing.exit_code == 1 and "nope" in missing.output
    # delete asks first.
    kept = await invoke(api, user, "dotfile", "delete", ".vimrc", stdin="n\n")
    assert kept.exit_code == 0 and "Aborted" in kept.output
    ok(await invoke(api, user, "dotfile", "delete", ".vimrc", "-f"))
    assert "There are no dotfiles." in ok(await invoke(api, user, "dotfile", "list")).output
    ok(await invoke(api, user, "dotfile", "bootstrap-script", "-f", "-", stdin="echo boot\n"))
    assert ok(await invoke(api, user, "dotfile", "bootstrap-script")).stdout == "echo boot\n"
