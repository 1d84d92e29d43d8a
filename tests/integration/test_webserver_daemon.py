"""``bai webserver`` as a process (the distributed mode): sessions in Redis, a signal to stop,
a bad config."""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import trio

from bai.embedded import EmbeddedHandle
from bai.manager.models import users
from bai.manager.models.identity import hash_password

from support.distributed import private_redis_db
from support.net import free_port
from support.official import embedded_cluster

BAI = str(Path(sys.executable).parent / "bai")
EMAIL = "admin@lablup.com"
PASSWORD = "the daemon's password"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EmbeddedHandle]:
    async with embedded_cluster(tmp_path / "data") as handle:
        hashed = await trio.to_thread.run_sync(hash_password, PASSWORD)
        async with handle.manager.ctx.db.begin() as conn:
            await conn.execute(
                sa.update(users).where(users.c.email == EMAIL).values(password=hashed)
            )
        yield handle


async def _up(url: str) -> None:
    with trio.fail_after(30):
        while True:
            try:
                async with httpx.AsyncClient() as client:
                    await client.get(f"{url}/func/ping")
                return
            except httpx.TransportError:
                await trio.sleep(0.1)


async def test_sessions_outlive_a_restart_of_the_daemon(
    cluster: EmbeddedHandle, redis_url: str, tmp_path: Path
) -> None:
    base = redis_url.rsplit("/", 1)[0].removeprefix("redis://")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = tmp_path / "webserver.toml"
    async with private_redis_db(redis_url) as db:
        config.write_text(
            f'[webserver]\nservice-addr = "127.0.0.1:{port}"\n'
            f'pid-file = "{tmp_path / "webserver.pid"}"\n'
            f'[api]\nendpoint = "{cluster.endpoint}"\n'
            f'[redis]\ntype = "redis"\naddr = "{base}"\ndb = {db}\n'
        )
        session_id = ""
        for round_ in range(2):
            async with trio.open_nursery() as nursery:
                process: trio.Process = await nursery.start(
                    trio.run_process, [BAI, "webserver", "--config", str(config)]
                )
                await _up(url)
                assert (tmp_path / "webserver.pid").read_text().strip() == str(process.pid)
                async with httpx.AsyncClient(base_url=url) as client:
                    if round_ == 0:
                        login = await client.post(
                            "/server/login", json={"username": EMAIL, "password": PASSWORD}
                        )
                        assert login.json()["authenticated"] is True, login.text
                        session_id = login.cookies["AIOHTTP_SESSION"]
                    # The second daemon finds the first one's session in Redis.
                    echoed = await client.get(
                        "/func/auth",
                        params={"echo": f"round {round_}"},
                        headers={"Cookie": f"AIOHTTP_SESSION={session_id}"},
                    )
                    assert echoed.json() == {"authorized": "yes", "echo": f"round {round_}"}
                process.send_signal(signal.SIGTERM)
                with trio.fail_after(30):
                    assert await process.wait() == 0


async def test_a_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "webserver.toml"
    config.write_text('[api]\nendpoint = "ftp://manager/api"\n')
    done = await trio.run_process(
        [BAI, "webserver", "--config", str(config)], capture_stdout=True, check=False
    )
    assert done.returncode == 2
    assert b"api.endpoint" in done.stdout
