"""The official Backend.AI client (``backend.ai-client==23.9.10``) against ``bai up``, unchanged.

The client lives in its own virtual environment (it pins old aiohttp and
yarl): ``$BAI_OFFICIAL_CLIENT_VENV``, by default ``.venv-official-client`` in
the repository root, made with
``python3 -m venv .venv-official-client &&
.venv-official-client/bin/pip install backend.ai-client==23.9.10 yarl==1.9.4``.
Without it these tests skip, unless ``BAI_REQUIRE_SERVICES=1`` (CI), where
they fail.

Each test starts the embedded cluster in-process and runs the client's CLI
as a separate process with only ``BACKEND_ENDPOINT``, ``BACKEND_ACCESS_KEY``
and ``BACKEND_SECRET_KEY`` set, as a user would after sourcing
``client.env``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa
import trio

from bai.common.slots import BinarySize
from bai.embedded import EmbeddedHandle, EmbeddedService, embedded_configs
from bai.manager.models import sessions

from support.agent import CATALOG

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("BAI_OFFICIAL_CLIENT_VENV") or REPO / ".venv-official-client")
CLI = VENV / "bin" / "backend.ai"


@pytest.fixture
def official_cli() -> Path:
    if not CLI.exists():
        message = f"the official client is not installed at {VENV}"
        if os.environ.get("BAI_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message} and BAI_REQUIRE_SERVICES is set")
        pytest.skip(message)
    return CLI


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EmbeddedHandle]:
    manager, agent = embedded_configs(tmp_path / "data", port=0, image_catalog=CATALOG)
    agent = msgspec.structs.replace(
        agent,
        agent=msgspec.structs.replace(agent.agent, allow_compute_plugins=()),
        resource=msgspec.structs.replace(
            agent.resource, reserved_cpu=0, reserved_mem=BinarySize(512 * 1024**2)
        ),
    )
    service = EmbeddedService(tmp_path / "data", manager_config=manager, agent_config=agent)
    async with trio.open_nursery() as nursery:
        handle: EmbeddedHandle = await nursery.start(service.serve)
        yield handle
        nursery.cancel_scope.cancel()


async def official(
    cli: Path, handle: EmbeddedHandle, cwd: Path, *args: str
) -> tuple[int, str, str]:
    """Run ``backend.ai ARGS`` in *cwd* against *handle*: (exit code, stdout, stderr)."""
    admin = handle.keypairs[0]
    env = {key: value for key, value in os.environ.items() if not key.startswith("BACKEND_")}
    env.update(
        HOME=str(cwd),
        BACKEND_ENDPOINT=handle.endpoint,
        BACKEND_ACCESS_KEY=admin.access_key,
        BACKEND_SECRET_KEY=admin.secret_key,
    )
    with trio.fail_after(60):
        done = await trio.run_process(
            [str(cli), *args],
            cwd=cwd,
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def active_sessions(handle: EmbeddedHandle) -> list[str]:
    rows = await handle.manager.ctx.db.fetch(
        sa.select(sessions.c.name).where(sessions.c.status.notin_(["TERMINATED", "CANCELLED"]))
    )
    return list(rows.scalars())


async def test_run_prints_hello_world(
    official_cli: Path, cluster: EmbeddedHandle, tmp_path: Path
) -> None:
    code, out, err = await official(
        official_cli, cluster, tmp_path, "run", "--rm", "-c", 'print("hello world")', "python"
    )
    assert code == 0, err
    assert out == "hello world\n"
    assert "is ready (domain=default, group=default)" in err
    assert "Execution finished. (exit code = 0)" in err
    assert "Cleaned up the session." in err
    assert await active_sessions(cluster) == []


async def test_run_of_a_session_that_fails_to_start_ends_with_the_failure(
    official_cli: Path, cluster: EmbeddedHandle, tmp_path: Path
) -> None:
    (tmp_path / "boot.sh").write_text("echo cannot set up\nexit 1\n")
    code, out, err = await official(
        official_cli,
        cluster,
        tmp_path,
        "run",
        "--rm",
        "--name",
        "boot-fails",
        "--bootstrap-script",
        "boot.sh",
        "-c",
        'print("never")',
        "python",
    )
    # The client reports the failure and returns (its exit status stays 0
    # whatever the server says here); it must not wait for the session.
    assert "has an error during scheduling/startup or cancelled" in err, (code, out, err)
    assert "never" not in out and "Traceback" not in err
    rows = await cluster.manager.ctx.db.fetch(
        sa.select(sessions.c.status, sessions.c.status_info).where(sessions.c.name == "boot-fails")
    )
    assert [tuple(row) for row in rows] == [("ERROR", "bootstrap-failed")]


async def test_run_files_in_batch_mode(
    official_cli: Path, cluster: EmbeddedHandle, tmp_path: Path
) -> None:
    (tmp_path / "job.py").write_text("import sys\nprint('from a file', sys.argv[1:])\n")
    code, out, err = await official(
        official_cli,
        cluster,
        tmp_path,
        "run",
        "--rm",
        "--exec",
        "python job.py one two",
        "python",
        "job.py",
    )
    assert code == 0, err
    assert "from a file ['one', 'two']\n" in out
    assert "Uploading done." in err and "Execution finished. (exit code = 0)" in err
    assert await active_sessions(cluster) == []


async def test_session_commands(
    official_cli: Path, cluster: EmbeddedHandle, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("kept in the session\n")
    steps = [
        ("session", "create", "-t", "official-1", "python"),
        ("session", "upload", "official-1", "notes.txt"),
        ("session", "ls", "official-1"),
        ("session", "logs", "official-1"),
        ("session", "status-history", "official-1"),
        ("session", "rename", "official-1", "official-2"),
        ("session", "restart", "official-2"),
    ]
    outputs = []
    for step in steps:
        code, out, err = await official(official_cli, cluster, tmp_path, *step)
        assert code == 0, (step, out, err)
        outputs.append(out + err)
    assert "is created and ready" in outputs[0]
    assert "notes.txt" in outputs[2]
    assert "RUNNING" in outputs[4]
    assert "renamed to official-2" in outputs[5]
    (tmp_path / "down").mkdir()
    code, out, err = await official(
        official_cli, cluster, tmp_path / "down", "session", "download", "official-2", "notes.txt"
    )
    assert code == 0, err
    assert (tmp_path / "down" / "notes.txt").read_text() == "kept in the session\n"
    assert await active_sessions(cluster) == ["official-2"]
    code, out, err = await official(
        official_cli, cluster, tmp_path, "session", "destroy", "official-2"
    )
    assert code == 0, err
    assert await active_sessions(cluster) == []
