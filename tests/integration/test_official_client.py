"""The official Backend.AI client (``backend.ai-client==23.9.10``) against ``bai up``, unchanged.

Each test starts the embedded cluster in-process and runs the client's CLI as
a separate process (:mod:`support.official`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bai.embedded import EmbeddedHandle
from bai.manager.models import sessions

from support.official import embedded_cluster, official, official_cli_path


@pytest.fixture
def official_cli() -> Path:
    return official_cli_path()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EmbeddedHandle]:
    async with embedded_cluster(tmp_path / "data") as handle:
        yield handle


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
