"""The client SDK and `bai config` against the real manager API (SQLite and PostgreSQL).

What these pin: requests signed by :class:`bai.client.APIClient` pass the
manager's real authentication; its RFC 7807 failures arrive as the typed
errors; the shared-config routes round-trip through the SDK and the CLI.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator

import pytest
import trio
from click.testing import CliRunner, Result

from bai.cli.main import cli
from bai.client import (
    APIClient,
    APIConfig,
    Forbidden,
    NotFound,
    Unauthorized,
    delete_config,
    get_config,
    set_config,
)
from bai.manager.db import Database

from support.api import Api, Key, running_api


@pytest.fixture
async def api(db: Database) -> AsyncIterator[Api]:
    async with running_api(db) as running:
        yield running


def config_for(api: Api, key: Key, **overrides: str) -> APIConfig:
    values = {"endpoint": api.base_url, "access_key": key.access_key, "secret_key": key.secret_key}
    values.update(overrides)
    return APIConfig(**values)


async def invoke(api: Api, key: Key, *args: str) -> Result:
    environment: dict[str, str | None] = {k: None for k in os.environ if k.startswith("BACKEND_")}
    environment.update(
        BACKEND_ENDPOINT=api.base_url,
        BACKEND_ACCESS_KEY=key.access_key,
        BACKEND_SECRET_KEY=key.secret_key,
    )
    runner = CliRunner()
    return await trio.to_thread.run_sync(
        functools.partial(runner.invoke, cli, list(args), env=environment)
    )


async def test_sdk_round_trips_shared_config(api: Api) -> None:
    async with APIClient(config_for(api, api.admin)) as client:
        assert (await client.hello())["version"] == "v6.20220615"
        await set_config(client, "bai-test/greeting", "hello")
        await set_config(client, "bai-test/tree", {"a": "1", "b": {"c": "2"}})
        assert await get_config(client, "bai-test/greeting") == "hello"
        assert await get_config(client, "bai-test/tree", prefix=True) == {
            "a": "1",
            "b": {"c": "2"},
        }
        await delete_config(client, "bai-test", prefix=True)
        assert await get_config(client, "bai-test/greeting") is None


async def test_manager_refusals_arrive_as_typed_errors(api: Api) -> None:
    async with APIClient(config_for(api, api.user)) as client:
        with pytest.raises(Forbidden) as forbidden:
            await get_config(client, "anything")
    assert forbidden.value.status == 403
    assert forbidden.value.title
    async with APIClient(config_for(api, api.admin, secret_key="wrong-secret")) as client:
        with pytest.raises(Unauthorized) as unauthorized:
            await get_config(client, "anything")
    assert unauthorized.value.status == 401
    assert unauthorized.value.type.startswith("https://api.backend.ai/probs/")
    async with APIClient(config_for(api, api.admin)) as client:
        with pytest.raises(NotFound):
            await client.fetch_json("GET", "/no-such-route")


async def test_cli_config_commands_against_the_manager(api: Api) -> None:
    set_result = await invoke(api, api.admin, "config", "set", "bai-cli/x", "42")
    get_result = await invoke(api, api.admin, "config", "get", "bai-cli/x")
    deleted = await invoke(api, api.admin, "config", "delete", "bai-cli/x")
    gone = await invoke(api, api.admin, "config", "get", "bai-cli/x")
    shown = await invoke(api, api.admin, "config")
    refused = await invoke(api, api.user, "config", "get", "bai-cli/x")
    assert set_result.exit_code == 0, set_result.output
    assert get_result.stdout == "42\n"
    assert deleted.exit_code == 0, deleted.output
    assert (gone.exit_code, gone.stdout) == (0, "")
    assert "(API: v6.20220615)" in shown.stdout
    assert refused.exit_code == 1
    assert "[403 Forbidden]" in refused.stderr
