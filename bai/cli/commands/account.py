"""``bai login``, ``bai logout``, ``bai update-password``: signing in with a password.

bai signs every request with a keypair, so signing in means trading the
email (or username) and password for the user's keypair: ``bai login``
calls ``POST /auth/authorize`` (:meth:`bai.client.Auth.login`) and writes
the endpoint and keypair into a ``client.env`` at
:func:`~bai.client.envfile.login_env_path` (``~/.config/bai/client.env``,
mode 0600, or ``$BAI_CLIENT_ENV``).  Later ``bai`` commands use that keypair
whenever ``BACKEND_ACCESS_KEY`` is unset; ``source`` the file to hand it to
the official client too.  ``bai logout`` deletes the file (the keypair itself
stays valid: an administrator deactivates keypairs).

``bai update-password`` changes the caller's password; with ``--expired
USER_ID`` it changes an expired one (``/auth/update-password-no-auth``), the
only way back in once the manager refuses the normal sign-in for it.

The password is read from the terminal without echo, or from stdin with
``--password-stdin`` (one line) for scripts; it is never an argument, so it
stays out of shell histories and process lists.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from bai.cli.commands.admin.output import CONTEXT
from bai.cli.commands.pretty import print_done, print_info
from bai.cli.commands.runtime import run_client

if TYPE_CHECKING:
    from bai.client import APIClient

__all__ = ["login", "logout", "update_password"]


def _read_password(from_stdin: bool, prompt: str) -> str:
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise click.UsageError("--password-stdin read no password.")
        return line
    text: str = click.prompt(prompt, hide_input=True, err=True)
    return text


@click.command(context_settings=CONTEXT)
@click.argument("user_id", required=False)
@click.option("-d", "--domain", default="default", show_default=True, help="The user's domain.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
def login(user_id: str | None, domain: str, password_stdin: bool) -> None:
    """Sign in as USER_ID (email or username) and keep the keypair for later commands."""
    from bai.client import Auth, BackendAPIError
    from bai.client.envfile import login_env_path, write_client_env

    if user_id is None:
        user_id = click.prompt("User ID (email)", err=True)
    password = _read_password(password_stdin, "Password")
    target = login_env_path()

    async def main(api: APIClient) -> None:
        import trio

        try:
            keys = await Auth.login(api, user_id, password, domain=domain)
        except BackendAPIError as exc:
            if exc.error_type == "password-expired":
                print_info(f"Change it first: bai update-password --expired {user_id} -d {domain}")
            raise
        await trio.to_thread.run_sync(
            lambda: write_client_env(
                target.parent,
                api.config.endpoint,
                keys.access_key,
                keys.secret_key,
                name=target.name,
            )
        )
        print_done(f"Signed in as {user_id} ({keys.role or 'user'}).")
        print_info(
            f"The keypair is saved in {target}; bai uses it while BACKEND_ACCESS_KEY is unset "
            f"(`source {target}` gives it to the official client too)."
        )

    run_client(main, needs_credentials=False)


@click.command(context_settings=CONTEXT)
def logout() -> None:
    """Forget the keypair ``bai login`` saved."""
    from bai.client.envfile import login_env_path

    target = login_env_path()
    if not target.is_file():
        print_info("Not signed in: there is no saved keypair.")
        return
    target.unlink()
    print_done(f"Signed out ({target} deleted).")


@click.command("update-password", context_settings=CONTEXT)
@click.option(
    "--expired",
    "user_id",
    metavar="USER_ID",
    help="Change the expired password of USER_ID (email), which cannot sign in; no keypair needed.",
)
@click.option("-d", "--domain", default="default", show_default=True, help="With --expired.")
@click.option("--password-stdin", is_flag=True, help="Read the old and new password from stdin.")
def update_password(user_id: str | None, domain: str, password_stdin: bool) -> None:
    """Change your password (asks for the old one, then the new one twice)."""
    from bai.client import Auth

    old = _read_password(password_stdin, "Current password")
    new = _read_password(password_stdin, "New password")
    again = _read_password(password_stdin, "New password (again)")
    if new != again:
        raise click.UsageError("The new passwords differ.")

    async def main(api: APIClient) -> None:
        if user_id is None:
            await Auth.update_password(api, old, new, again)
        else:
            await Auth.update_password_no_auth(api, domain, user_id, old, new)
        print_done("Password changed.")

    run_client(main, needs_credentials=user_id is None)
