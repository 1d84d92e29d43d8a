"""Running one client command: config from the environment, a Trio loop, exit codes.

:func:`run_client` is the only place the CLI enters Trio.  Exit statuses:
0 success (or the status the command returns), 1 an API or connection
error (printed as a failure line), 2 a bad client configuration, 130 Ctrl-C.
The heavy imports (trio, httpx) happen here, at call time, so ``bai --help``
never pays for them.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NoReturn

from bai.cli.commands.pretty import print_error, print_fail
from bai.common.errors import sole_exception

if TYPE_CHECKING:
    from bai.client import APIClient, APIConfig

__all__ = ["EXIT_CONFIG", "EXIT_FAILURE", "EXIT_INTERRUPTED", "load_config", "run_client"]

EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


def load_config(*, needs_credentials: bool = True) -> APIConfig:
    """The client config from ``BACKEND_*`` variables; exits with status 2 if unusable.

    Without a keypair in the environment, the one ``bai login`` saved (with
    the endpoint it was saved for) is used, if there is one.
    """
    from bai.client import APIConfig, ClientConfigError
    from bai.client.envfile import login_env_path, read_client_env

    try:
        config = APIConfig.from_env()
        saved = login_env_path()
        if not config.has_credentials and saved.is_file():
            login = read_client_env(saved)
            config = config.with_overrides(
                endpoint=login.endpoint, access_key=login.access_key, secret_key=login.secret_key
            )
    except ClientConfigError as exc:
        print_fail(f"Bad client configuration: {exc}")
        sys.exit(EXIT_CONFIG)
    if needs_credentials and not config.has_credentials:
        print_fail(
            "No keypair configured: set BACKEND_ACCESS_KEY and BACKEND_SECRET_KEY\n"
            "(after `bai up`, `source DATA_DIR/client.env` sets them and BACKEND_ENDPOINT),\n"
            "or sign in with `bai login`."
        )
        sys.exit(EXIT_CONFIG)
    return config


def run_client(
    main: Callable[[APIClient], Awaitable[int | None]], *, needs_credentials: bool = True
) -> NoReturn:
    """Run ``main(api)`` in a fresh Trio loop and exit with its status."""
    import trio

    from bai.client import APIClient, BackendError
    from bai.common.errors import InvalidValue

    config = load_config(needs_credentials=needs_credentials)

    async def _main() -> int | None:
        async with APIClient(config) as api:
            return await main(api)

    try:
        status = trio.run(_main)
    except BaseException as raised:
        exc = sole_exception(raised)
        if isinstance(exc, KeyboardInterrupt):
            print_fail("Interrupted.")
            sys.exit(EXIT_INTERRUPTED)
        if isinstance(exc, BackendError | InvalidValue):
            print_error(exc)
            sys.exit(EXIT_FAILURE)
        raise
    sys.exit(status or 0)
