"""``bai apps``, ``bai app``, ``bai ssh`` and ``bai scp``: a session's app services from here.

``bai app SESSION APP -b [HOST:]PORT`` listens on a local port and tunnels
every accepted connection through its own ``/stream/session/{name}/tcpproxy``
WebSocket to the app's service in the session (the official ``backend.ai
app``): one line, the local URL, goes to stdout once the port listens (the
status lines around it go to stderr), so a script can wait for it::

    $ bai app mysess ttyd -b 9900
    ∙ A local proxy to the application "ttyd" provided by the session "mysess" is available at:
    http://127.0.0.1:9900

Ctrl-C (or SIGTERM) closes the listener and every tunnel and exits with 0.

``bai ssh SESSION [-- CMD...]`` and ``bai scp SESSION SRC... DST`` download
the session's generated key (``/home/work/id_container``) into a private
temporary folder, run the same tunnel to the intrinsic ``sshd`` app in this
process on a free local port (or ``-p PORT``), run OpenSSH's ``ssh`` or
``scp`` as ``work@127.0.0.1`` through it, remove the key, and exit with the
status of ``ssh`` / ``scp``.  Only click is imported at module level.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from bai.cli.commands.params import owner_option, parse_env
from bai.cli.commands.pretty import (
    error_lines,
    print_done,
    print_fail,
    print_info,
    print_table,
    print_warn,
)
from bai.cli.commands.runtime import EXIT_FAILURE, run_client

if TYPE_CHECKING:
    import trio

    from bai.client import APIClient, AppInfo, ComputeSession

__all__ = [
    "app",
    "apps",
    "parse_app_arguments",
    "parse_bind",
    "scp",
    "scp_operand",
    "ssh",
    "ssh_command",
]

#: The default of ``-b``, as in the official client.
DEFAULT_BIND: Final = "127.0.0.1:8080"
#: The intrinsic app every kernel serves SSH/SFTP with, and the user it knows.
SSHD_APP: Final = "sshd"
SSH_USER: Final = "work"
#: The key the agent writes into every kernel's home (``backend.ai ssh`` downloads it too).
SSH_KEY_FILE: Final = "id_container"
_LOOPBACK: Final = "127.0.0.1"
# Options that make OpenSSH accept the session's throw-away host key without
# a warning each time (a user's -v still raises the log level), and use only
# the session's key (an agent holding many keys would exhaust the tries).
_SSH_OPTIONS: Final = (
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "IdentitiesOnly=yes",
)
_REMOTE: Final = re.compile(r"(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]*):(?P<path>.*)", re.DOTALL)
_HTTP_PROTOCOLS: Final = frozenset({"http", "preopen"})


def parse_bind(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (``[::1]:PORT`` for IPv6) into a host and a port 0..65535.

    The host defaults to 127.0.0.1; port 0 takes any free port.  Raises
    :class:`click.BadParameter` for anything else.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host = _LOOPBACK
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port_text.isdigit() or int(port_text) > 65535:
        raise click.BadParameter(
            f"expected [HOST:]PORT with a port 0..65535, got {text!r}", param_hint="'-b' / '--bind'"
        )
    return host, int(port_text)


def parse_app_arguments(values: Sequence[str]) -> dict[str, str | list[str] | None]:
    """``--arg`` options into the service's ``arguments`` object, as the official client does.

    Each value is one option of the service written as on a shell
    (``"--port 8888"``, ``"--NotebookApp.token=abc"``, ``"--debug"``,
    ``"--dirs a b"``): its first word (or the part before ``=``) is the key,
    the rest its value: ``None`` for none, a string for one, a list for more.
    """
    parsed: dict[str, str | list[str] | None] = {}
    for text in values:
        try:
            words = shlex.split(text)
        except ValueError as exc:
            raise click.BadParameter(f"{text!r}: {exc}", param_hint="'--arg'") from None
        if not words:
            raise click.BadParameter("an empty argument", param_hint="'--arg'")
        key, sep, value = words[0].partition("=")
        rest = ([value] if sep else []) + words[1:]
        parsed[key] = None if not rest else rest[0] if len(rest) == 1 else rest
    return parsed


def _app_url(info: AppInfo, host: str, port: int) -> str:
    protocol = "http" if info.protocol in _HTTP_PROTOCOLS else "tcp"
    shown = f"[{host}]" if ":" in host else host
    template = info.url_template or "{protocol}://{host}:{port}"
    try:
        return template.format(protocol=protocol, host=shown, port=port)
    except (KeyError, IndexError, ValueError):
        # A template naming other fields than these three: show the plain address.
        return f"{protocol}://{shown}:{port}"


async def _find_app(session: ComputeSession, name: str) -> AppInfo | None:
    found = await session.apps()
    for info in found:
        if info.name == name:
            return info
    names = ", ".join(i.name for i in found) or "none"
    print_fail(
        f'The app "{name}" is not supported by the session {session.name} (its apps: {names}).'
    )
    return None


def _report_tunnel_error(app: str) -> Any:
    def report(exc: BaseException) -> None:
        print_fail(f'A connection to "{app}" failed:\n' + "\n".join(error_lines(exc)))

    return report


async def _listen(host: str, port: int) -> list[trio.SocketListener] | None:
    import trio

    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        print_fail(f"Cannot listen on {host}:{port}: {exc.strerror or exc}")
        return None


# ---------------------------------------------------------------------------
# bai apps


def _show(value: Any) -> str:
    if value is None or value == [] or value == {}:
        return "-"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name", metavar="SESSION")
@click.argument("app_names", metavar="[APP]...", nargs=-1)
@click.option("-l", "--list-names", is_flag=True, help="Print only the names of the apps.")
@owner_option
def apps(name: str, app_names: tuple[str, ...], list_names: bool, owner: str | None) -> None:
    """List the app services SESSION offers (only APP... if given).

    One row per app: its name, protocol, ports inside the session, and the
    arguments and environment variables it may be started with.
    """

    async def main(api: APIClient) -> int:
        from bai.client import ComputeSession

        found = await ComputeSession(api, name, owner_access_key=owner).apps()
        if app_names:
            found = [info for info in found if info.name in app_names]
            missing = sorted(set(app_names) - {info.name for info in found})
            if missing:
                print_fail(f"The session {name} offers no app {', '.join(missing)}.")
                return EXIT_FAILURE
        if list_names:
            services = ", ".join(info.name for info in found)
            print_info(f"This session provides the following app services: {services}")
            return 0
        rows = [
            [
                info.name,
                info.protocol,
                ",".join(str(p) for p in info.ports) or "-",
                _show(info.allowed_arguments),
                _show(info.allowed_envs),
            ]
            for info in found
        ]
        print_table(["Name", "Protocol", "Ports", "Arguments", "Environment"], rows)
        return 0

    run_client(main)


# ---------------------------------------------------------------------------
# bai app


async def _serve_until_signal(
    session: ComputeSession,
    info: AppInfo,
    listeners: Sequence[trio.SocketListener],
    *,
    envs: dict[str, str],
    arguments: dict[str, Any],
) -> None:
    """Tunnel connections until SIGINT or SIGTERM."""
    import signal

    import trio

    from bai.client import forward_app

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: forward_app(
                    session,
                    info.name,
                    listeners,
                    envs=envs,
                    arguments=arguments,
                    http=info.protocol in _HTTP_PROTOCOLS,
                    on_error=_report_tunnel_error(info.name),
                )
            )
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name", metavar="SESSION")
@click.argument("app_name", metavar="APP")
@click.option(
    "-b",
    "--bind",
    metavar="[HOST:]PORT",
    default=DEFAULT_BIND,
    show_default=True,
    help="Local address to listen on (port 0: any free port).",
)
@click.option(
    "--arg",
    "arg",
    metavar='"--OPTION [VALUE]"',
    multiple=True,
    help="An argument the service is started with (repeatable).",
)
@click.option(
    "-e",
    "--env",
    metavar="NAME=VALUE",
    multiple=True,
    help="An environment variable the service is started with (repeatable).",
)
@owner_option
def app(
    name: str,
    app_name: str,
    bind: str,
    arg: tuple[str, ...],
    env: tuple[str, ...],
    owner: str | None,
) -> None:
    """Run a local proxy to the app APP of the session SESSION.

    Each connection to the local port is tunnelled to the app's service
    (started on first use).  Runs until Ctrl-C.
    """
    host, port = parse_bind(bind)
    arguments = parse_app_arguments(arg)
    envs = parse_env(env)

    async def main(api: APIClient) -> int:
        from bai.client import ComputeSession

        session = ComputeSession(api, name, owner_access_key=owner)
        info = await _find_app(session, app_name)
        if info is None:
            return EXIT_FAILURE
        listeners = await _listen(host, port)
        if listeners is None:
            return EXIT_FAILURE
        bound = listeners[0].socket.getsockname()[1]
        print_info(
            f'A local proxy to the application "{app_name}" provided by the session '
            f'"{name}" is available at:'
        )
        click.echo(_app_url(info, host, bound))
        sys.stdout.flush()
        if host in ("0.0.0.0", "::"):
            print_warn(
                f'NOTE: Replace "{host}" with the actual hostname you use '
                "to connect with the CLI app proxy."
            )
        await _serve_until_signal(session, info, listeners, envs=envs, arguments=arguments)
        print_info("Shutting down....")
        print_done(f'The local proxy to "{app_name}" has terminated.')
        return 0

    run_client(main)


# ---------------------------------------------------------------------------
# bai ssh / bai scp


def ssh_command(key: Path, port: int, args: Sequence[str]) -> list[str]:
    """The ``ssh`` command line that logs in through the tunnel on *port* with *key*.

    *args* follow the destination: OpenSSH reads options there too, and the
    first other word starts the remote command.
    """
    return ["ssh", *_SSH_OPTIONS, "-i", str(key), "-p", str(port), f"{SSH_USER}@{_LOOPBACK}", *args]


def scp_operand(text: str, session_name: str) -> tuple[str, bool]:
    """One ``bai scp`` path as ``scp`` must get it, and whether it is remote.

    Remote paths are written ``SESSION:PATH`` or ``:PATH`` (relative paths
    are under ``/home/work``); the official client's ``work@localhost:PATH``
    is accepted too.  A local path with a ``:`` before its first ``/`` is
    read by scp as remote: write it ``./NAME``.  Any other host is refused
    with :class:`click.BadParameter`.
    """
    match = _REMOTE.fullmatch(text)
    if match is None or text.startswith(("/", "./", "../")):
        return text, False
    user, host, path = match.group("user"), match.group("host"), match.group("path")
    if host in ("", session_name) and user is None:
        return f"{SSH_USER}@{_LOOPBACK}:{path}", True
    if host in ("localhost", _LOOPBACK):
        return f"{user or SSH_USER}@{_LOOPBACK}:{path}", True
    raise click.BadParameter(
        f"{text!r} names the host {host!r}: write remote paths as {session_name}:PATH or :PATH "
        "(a local path with a colon as ./PATH)",
        param_hint="SRC / DST",
    )


def _exit_status(returncode: int) -> int:
    # A child killed by a signal reports -N; shells report 128 + N.
    return 128 - returncode if returncode < 0 else returncode


async def _through_sshd(
    session: ComputeSession, port: int, command: Callable[[Path, int], list[str]]
) -> int:
    """Download the session's key, tunnel a local port to its ``sshd``, and run
    ``command(key, port)`` (the ``ssh`` or ``scp`` command line) to its end."""
    import os
    import shutil
    import signal
    import tempfile

    import trio

    from bai.client import forward_app

    # mkdtemp makes the folder 0700: the key is never readable by others.
    folder = Path(await trio.to_thread.run_sync(tempfile.mkdtemp, "", "bai-ssh-"))
    try:
        names = await session.download([SSH_KEY_FILE], dest=folder)
        key = folder / SSH_KEY_FILE
        if not key.is_file():
            key = next((folder / n for n in names if Path(n).name == SSH_KEY_FILE), key)
        if not key.is_file():
            print_fail(f"The session {session.name} has no SSH key ({SSH_KEY_FILE}).")
            return EXIT_FAILURE
        os.chmod(key, 0o600)
        listeners = await _listen(_LOOPBACK, port)
        if listeners is None:
            return EXIT_FAILURE
        bound = listeners[0].socket.getsockname()[1]
        argv = command(key, bound)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: forward_app(
                    session, SSHD_APP, listeners, on_error=_report_tunnel_error(SSHD_APP)
                )
            )
            # Ctrl-C reaches ssh (the same process group), which ends by
            # itself; bai waits for it rather than dying first.
            with trio.open_signal_receiver(signal.SIGINT):
                # stdin=None: ssh reads this terminal (trio's default is empty input).
                finished = await trio.run_process(argv, stdin=None, check=False)
            nursery.cancel_scope.cancel()
        return _exit_status(finished.returncode)
    finally:
        await trio.to_thread.run_sync(shutil.rmtree, folder, True)


def _require(tool: str) -> None:
    import shutil

    if shutil.which(tool) is None:
        print_fail(f"`{tool}` is not installed here (OpenSSH's client provides it).")
        sys.exit(EXIT_FAILURE)


_PASS_THROUGH: Final = {
    "help_option_names": ["-h", "--help"],
    "ignore_unknown_options": True,
}


@click.command(context_settings=_PASS_THROUGH)
@click.argument("name", metavar="SESSION")
@click.option(
    "-p",
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Local port of the tunnel (0: any free port).",
)
@owner_option
@click.argument("ssh_args", metavar="[SSH OPTIONS] [-- CMD...]", nargs=-1, type=click.UNPROCESSED)
def ssh(name: str, port: int, owner: str | None, ssh_args: tuple[str, ...]) -> None:
    """Log in to SESSION with ssh (or run CMD there) as the user `work`.

    The session's own key is downloaded for the call and removed after it;
    the connection goes through a tunnel to the session's sshd.  Other
    options are passed to ssh.  The exit status is ssh's.
    """
    _require("ssh")

    async def main(api: APIClient) -> int:
        from bai.client import ComputeSession

        session = ComputeSession(api, name, owner_access_key=owner)
        return await _through_sshd(
            session, port, lambda key, bound: ssh_command(key, bound, ssh_args)
        )

    run_client(main)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name", metavar="SESSION")
@click.argument("paths", metavar="SRC... DST", nargs=-1, required=True)
@click.option(
    "-p",
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Local port of the tunnel (0: any free port).",
)
@click.option("-r", "--recursive", is_flag=True, help="Copy folders recursively.")
@owner_option
def scp(name: str, paths: tuple[str, ...], port: int, recursive: bool, owner: str | None) -> None:
    """Copy files between here and SESSION with scp.

    \b
    Remote paths are SESSION:PATH or :PATH (relative to /home/work):
      bai scp mysess data.csv :inputs/
      bai scp mysess -r mysess:results ./results
    The exit status is scp's.
    """
    if len(paths) < 2:
        raise click.UsageError("Name at least one SRC and the DST.")
    operands = [scp_operand(path, name) for path in paths]
    if not any(remote for _, remote in operands):
        raise click.UsageError(f"Name a remote path ({name}:PATH or :PATH) as SRC or DST.")
    _require("scp")

    def command(key: Path, bound: int) -> list[str]:
        flags = ["-r"] if recursive else []
        files = [text for text, _ in operands]
        return ["scp", *_SSH_OPTIONS, "-i", str(key), "-P", str(bound), *flags, "--", *files]

    async def main(api: APIClient) -> int:
        from bai.client import ComputeSession

        session = ComputeSession(api, name, owner_access_key=owner)
        return await _through_sshd(session, port, command)

    run_client(main)
