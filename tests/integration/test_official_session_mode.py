"""The official client (``backend.ai-client==23.9.10``) in session mode against ``bai up``.

With ``BACKEND_ENDPOINT_TYPE=session`` and ``BACKEND_ENDPOINT`` at the
webserver (what ``DATA_DIR/client-session.env`` says), the client logs in
with an email and a password, keeps the session cookie in its state folder
and sends everything under ``/func/``; the webserver signs it with the user's
keypair.  The CLI runs as a separate process without a terminal, so it reads
the user id and the password from its standard input.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import trio

from bai.embedded import EmbeddedHandle
from bai.manager.models import sessions, users
from bai.manager.models.identity import hash_password

from support.official import embedded_cluster, official_cli_path

EMAIL = "user@lablup.com"
PASSWORD = "a password for the session mode"


@pytest.fixture
def official_cli() -> Path:
    return official_cli_path()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EmbeddedHandle]:
    async with embedded_cluster(tmp_path / "data") as handle:
        hashed = await trio.to_thread.run_sync(hash_password, PASSWORD)
        async with handle.manager.ctx.db.begin() as conn:
            await conn.execute(
                sa.update(users).where(users.c.email == EMAIL).values(password=hashed)
            )
        yield handle


async def session_mode(
    cli: Path, handle: EmbeddedHandle, home: Path, *args: str, stdin: bytes = b""
) -> tuple[int, str, str]:
    """``backend.ai ARGS`` in session mode, with *home* as its home (and cookie jar)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("BACKEND_", "XDG_"))
    }
    env.update(HOME=str(home), BACKEND_ENDPOINT=handle.webserver, BACKEND_ENDPOINT_TYPE="session")
    with trio.fail_after(90):
        done = await trio.run_process(
            [str(cli), *args],
            cwd=home,
            env=env,
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            # No controlling terminal: getpass falls back to reading standard input.
            start_new_session=True,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_login_ps_run_logout(
    official_cli: Path, cluster: EmbeddedHandle, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    code, out, err = await session_mode(official_cli, cluster, home, "ps")
    assert "Unauthorized access" in out + err, (code, out, err)

    code, out, err = await session_mode(
        official_cli, cluster, home, "login", stdin=f"{EMAIL}\nwrong\n".encode()
    )
    assert "Login failed." in out + err, (code, out, err)
    assert not list(home.rglob("cookie.dat"))

    code, out, err = await session_mode(
        official_cli, cluster, home, "login", stdin=f"{EMAIL}\n{PASSWORD}\n".encode()
    )
    assert code == 0 and "Login succeeded." in out + err, (code, out, err)
    assert list(home.rglob("cookie.dat"))

    code, out, err = await session_mode(official_cli, cluster, home, "ps")
    # Signed and accepted: the user has no session yet.
    assert "NoItems" in out + err and "Unauthorized" not in out + err, (code, out, err)

    code, out, err = await session_mode(
        official_cli,
        cluster,
        home,
        "run",
        "--name",
        "hello",
        "-c",
        'print("hello world")',
        "python",
    )
    assert code == 0, (out, err)
    assert out == "hello world\n", (out, err)
    rows = await cluster.manager.ctx.db.fetch(
        sa.select(sessions.c.access_key).where(sessions.c.name == "hello")
    )
    # The session is the logged-in user's, not the superadmin's.
    user_key = next(k.access_key for k in cluster.keypairs if k.email == EMAIL)
    assert list(rows.scalars()) == [user_key]

    code, out, err = await session_mode(official_cli, cluster, home, "ps")
    assert code == 0 and "hello" in out, (code, out, err)
    code, out, err = await session_mode(official_cli, cluster, home, "rm", "hello")
    assert code == 0, (code, out, err)

    code, out, err = await session_mode(official_cli, cluster, home, "logout")
    assert code == 0 and "Logout done." in out + err, (code, out, err)
    assert not list(home.rglob("cookie.dat"))
    code, out, err = await session_mode(official_cli, cluster, home, "ps")
    assert "Unauthorized access" in out + err, (code, out, err)
