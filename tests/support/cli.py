"""Running the ``bai`` command in-process against an API, as a user with a keypair would."""

from __future__ import annotations

import functools
import os

import trio
from click.testing import CliRunner, Result

from bai.cli.main import cli

from support.api import Key

__all__ = ["invoke_bai"]


async def invoke_bai(endpoint: str, key: Key, *args: str, stdin: str | None = None) -> Result:
    """``bai ARGS`` with only this endpoint and keypair in the environment (a worker thread)."""
    environment: dict[str, str | None] = {k: None for k in os.environ if k.startswith("BACKEND_")}
    environment.update(
        BACKEND_ENDPOINT=endpoint,
        BACKEND_ACCESS_KEY=key.access_key,
        BACKEND_SECRET_KEY=key.secret_key,
    )
    runner = CliRunner()
    return await trio.to_thread.run_sync(
        functools.partial(runner.invoke, cli, list(args), env=environment, input=stdin)
    )
