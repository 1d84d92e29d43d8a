"""The official Backend.AI client (``backend.ai-client==23.9.10``) as tests run it.

The client lives in its own virtual environment (it pins old aiohttp and
yarl): ``$BAI_OFFICIAL_CLIENT_VENV``, by default ``.venv-official-client`` in
the repository root, made by ``.ci/bootstrap``.  Without it the tests that
use :func:`official_cli_path` skip, unless ``BAI_REQUIRE_SERVICES=1`` (CI),
where they fail.  :func:`official` runs its CLI as a separate process with
only ``BACKEND_ENDPOINT``, ``BACKEND_ACCESS_KEY`` and ``BACKEND_SECRET_KEY``
set, as a user would after sourcing ``client.env``.  :func:`embedded_cluster`
is the ``bai up`` these tests talk to (:func:`embedded_service`, which the
tests of ``bai up`` itself start too).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest
import trio

from bai.common.slots import BinarySize
from bai.embedded import EmbeddedHandle, EmbeddedService, Keypair, embedded_configs

from support.agent import CATALOG

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("BAI_OFFICIAL_CLIENT_VENV") or REPO / ".venv-official-client")
CLI = VENV / "bin" / "backend.ai"


def official_cli_path() -> Path:
    """The official CLI; skips the test without it (fails it in CI)."""
    if not CLI.exists():
        message = f"the official client is not installed at {VENV}"
        if os.environ.get("BAI_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{message} and BAI_REQUIRE_SERVICES is set")
        pytest.skip(message)
    return CLI


def embedded_service(data_dir: Path) -> EmbeddedService:
    """``bai up`` in *data_dir* on a free port with the repository's image catalog, no
    compute plugins, all host CPUs and all but 512 MiB (not started)."""
    manager, agent = embedded_configs(data_dir, port=0, image_catalog=CATALOG)
    agent = msgspec.structs.replace(
        agent,
        agent=msgspec.structs.replace(agent.agent, allow_compute_plugins=()),
        resource=msgspec.structs.replace(
            agent.resource, reserved_cpu=0, reserved_mem=BinarySize(512 * 1024**2)
        ),
    )
    return EmbeddedService(data_dir, manager_config=manager, agent_config=agent)


@asynccontextmanager
async def embedded_cluster(data_dir: Path) -> AsyncIterator[EmbeddedHandle]:
    """:func:`embedded_service` in *data_dir*, running for the ``async with`` block."""
    async with trio.open_nursery() as nursery:
        handle: EmbeddedHandle = await nursery.start(embedded_service(data_dir).serve)
        yield handle
        nursery.cancel_scope.cancel()


async def official(
    cli: Path,
    handle: EmbeddedHandle,
    cwd: Path,
    *args: str,
    keypair: Keypair | None = None,
    stdin: bytes = b"",
) -> tuple[int, str, str]:
    """Run ``backend.ai ARGS`` in *cwd* as *keypair* (the superadmin by default):
    (exit code, stdout, stderr); the caller bounds it (60 s unless its own scope is shorter)."""
    key = keypair or handle.keypairs[0]
    env = {name: value for name, value in os.environ.items() if not name.startswith("BACKEND_")}
    env.update(
        HOME=str(cwd),
        BACKEND_ENDPOINT=handle.endpoint,
        BACKEND_ACCESS_KEY=key.access_key,
        BACKEND_SECRET_KEY=key.secret_key,
    )
    with trio.fail_after(60):
        done = await trio.run_process(
            [str(cli), *args],
            cwd=cwd,
            env=env,
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()
