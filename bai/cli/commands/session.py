"""``bai run``, ``bai start``, ``bai rm``, ``bai logs`` and ``bai events``.

They mirror the official ``backend.ai`` commands of the same names: the same
options and the same status lines (spec, lines 2107-2140)::

    $ bai run --rm -c 'print("hello world")' python
    ∙ Session token prefix: fb05c73953
    ✔ [0] Session fb05c73953 is ready.
    hello world
    ✔ [0] Execution finished. (exit code = 0)
    ✔ [0] Cleaned up the session.

Status lines go to stderr, the session's own output to stdout and stderr as
the code wrote it.  Only click is imported here at module level; the client
is imported when a command runs.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bai.cli.commands.params import parse_env, parse_mounts, parse_resources
from bai.cli.commands.pretty import (
    error_lines,
    print_done,
    print_error,
    print_fail,
    print_info,
    print_wait,
    print_warn,
    set_quiet,
)
from bai.cli.commands.runtime import EXIT_FAILURE, run_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from bai.client import APIClient, ComputeSession, ExecutionResult, SSEEvent

__all__ = ["events", "logs", "rm", "run", "start"]

SESSION_TYPES = ("interactive", "batch")
CLUSTER_MODES = ("single-node", "multi-node")
#: How long cleanup after an interrupted run may take before giving up.
CLEANUP_TIMEOUT = 30.0
#: How long to wait for the result events of a batch session found already terminated.
TERMINATED_EVENT_GRACE = 10.0


@dataclass
class CreateOptions:
    """The session-creation options shared by ``run`` and ``start``."""

    image: str
    name: str | None
    type: str
    enqueue_only: bool
    max_wait: int
    no_reuse: bool
    env: dict[str, str]
    resources: dict[str, str]
    resource_opts: dict[str, str]
    mounts: list[str]
    mount_map: dict[str, str]
    tag: str | None
    cluster_size: int
    cluster_mode: str
    domain: str | None
    group: str | None
    scaling_group: str | None
    starts_at: str | None
    bootstrap_script: str | None
    architecture: str | None
    callback_url: str | None
    startup_command: str | None = None
    dependencies: list[str] = field(default_factory=list)
    owner: str | None = None

    async def create(self, api: APIClient, name: str) -> ComputeSession:
        from bai.client import ComputeSession

        return await ComputeSession.create(
            api,
            self.image,
            name=name,
            type=self.type,
            enqueue_only=self.enqueue_only,
            max_wait=self.max_wait,
            reuse_if_exists=not self.no_reuse,
            resources=self.resources,
            environ=self.env,
            mounts=self.mounts,
            mount_map=self.mount_map,
            resource_opts=self.resource_opts,
            cluster_size=self.cluster_size,
            cluster_mode=self.cluster_mode,
            startup_command=self.startup_command,
            bootstrap_script=self.bootstrap_script,
            dependencies=self.dependencies,
            starts_at=self.starts_at,
            tag=self.tag,
            domain=self.domain,
            group=self.group,
            scaling_group=self.scaling_group,
            architecture=self.architecture,
            callback_url=self.callback_url,
            owner_access_key=self.owner,
        )


def _start_options(fn: Any) -> Any:
    """The options ``run`` and ``start`` share (the official ``click_start_option``)."""
    options = [
        click.option(
            "-t",
            "--name",
            "--client-token",
            "name",
            metavar="NAME",
            default=None,
            help="Session name (4-64 letters, digits, hyphens). Default: random hex.",
        ),
        click.option(
            "--type",
            "session_type",
            type=click.Choice(SESSION_TYPES, case_sensitive=False),
            default="interactive",
            show_default=True,
            help="Session type.",
        ),
        click.option(
            "--starts-at",
            metavar="WHEN",
            default=None,
            help="Start the session at this time (ISO 8601) or after a delay (e.g. 1h).",
        ),
        click.option(
            "--enqueue-only",
            is_flag=True,
            help="Return right after queueing the session, without waiting for it to start.",
        ),
        click.option(
            "--max-wait",
            metavar="SECONDS",
            type=click.IntRange(min=0),
            default=0,
            help="Wait at most this long for the session to start (0: no limit).",
        ),
        click.option(
            "--no-reuse",
            is_flag=True,
            help="Fail instead of reusing a running session of the same name.",
        ),
        click.option(
            "--callback-url",
            metavar="URL",
            default=None,
            help="URL the manager calls on the session's lifecycle events.",
        ),
        click.option(
            "-e",
            "--env",
            metavar="KEY=VAL",
            multiple=True,
            help="Environment variable for the session (repeatable).",
        ),
        click.option("--tag", default=None, help="Free-form tag stored with the session."),
        click.option(
            "-m",
            "--mount",
            "-v",
            "--volume",
            "mount",
            metavar="NAME[:PATH]",
            multiple=True,
            help="Mount the vfolder NAME at /home/work/NAME, or at PATH: relative to "
            "/home/work, or absolute below /home/work, /data or /mnt (repeatable; "
            "NAME=PATH works too).",
        ),
        click.option(
            "--scaling-group",
            "--sgroup",
            "scaling_group",
            metavar="NAME",
            default=None,
            help="Resource group to run in (default: any allowed one).",
        ),
        click.option(
            "-r",
            "--resources",
            metavar="KEY=VAL",
            multiple=True,
            help="Resource slot per kernel, e.g. -r cpu=2 -r mem=4g -r cuda.shares=0.5 "
            "(mem without unit is MiB).",
        ),
        click.option(
            "--resource-opts",
            metavar="KEY=VAL",
            multiple=True,
            help="Resource options, e.g. shmem=64m.",
        ),
        click.option(
            "--cluster-size",
            metavar="N",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Number of kernels in the session.",
        ),
        click.option(
            "--cluster-mode",
            type=click.Choice(CLUSTER_MODES),
            default="single-node",
            show_default=True,
            help="Kernels on one agent or spread over several.",
        ),
        click.option(
            "-d",
            "--domain",
            metavar="NAME",
            default=None,
            help="Domain (default: BACKEND_DOMAIN or 'default').",
        ),
        click.option(
            "-g",
            "--group",
            metavar="NAME",
            default=None,
            help="Group/project (default: BACKEND_GROUP or 'default').",
        ),
        click.option(
            "--bootstrap-script",
            metavar="PATH",
            type=click.File("r"),
            default=None,
            help="Script the session runs once at startup.",
        ),
        click.option(
            "--arch",
            "--architecture",
            "architecture",
            metavar="ARCH",
            default=None,
            help="Image architecture (default: the server's choice).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _create_options(image: str, kw: dict[str, Any]) -> CreateOptions:
    mounts, mount_map = parse_mounts(kw.pop("mount"))
    script = kw.pop("bootstrap_script")
    return CreateOptions(
        image=image,
        name=kw.pop("name"),
        type=kw.pop("session_type").lower(),
        enqueue_only=kw.pop("enqueue_only"),
        max_wait=kw.pop("max_wait"),
        no_reuse=kw.pop("no_reuse"),
        env=parse_env(kw.pop("env")),
        resources=parse_resources(kw.pop("resources")),
        resource_opts=parse_resources(kw.pop("resource_opts"), "'--resource-opts'"),
        mounts=mounts,
        mount_map=mount_map,
        tag=kw.pop("tag"),
        cluster_size=kw.pop("cluster_size"),
        cluster_mode=kw.pop("cluster_mode"),
        domain=kw.pop("domain"),
        group=kw.pop("group"),
        scaling_group=kw.pop("scaling_group"),
        starts_at=kw.pop("starts_at"),
        bootstrap_script=script.read() if script is not None else None,
        architecture=kw.pop("architecture"),
        callback_url=kw.pop("callback_url"),
    )


def _new_name() -> str:
    import secrets

    return secrets.token_hex(5)


def _report_unready(session: ComputeSession, name: str) -> int | None:
    """Print why a just-created session cannot run code; ``None`` if it can."""
    status = session.status
    if status == "PENDING":
        print_info(f"Session ID {name} is enqueued for scheduling.")
        return 0
    if status == "SCHEDULED":
        print_info(f"Session ID {name} is scheduled and about to be started.")
        return 0
    if status == "TIMEOUT":
        print_info(f"Session ID {name} is still on the job queue.")
        return 0
    if status == "TERMINATED":
        print_warn(
            f"Session ID {name} is already terminated.\n"
            "This may be an error in the compute_session image."
        )
        return EXIT_FAILURE
    if status in ("ERROR", "CANCELLED"):
        print_fail(f"Session ID {name} has an error during scheduling/startup or cancelled.")
        return EXIT_FAILURE
    return None


def _write_console(result: ExecutionResult) -> None:
    out, err = sys.stdout, sys.stderr
    for item in result.console:
        if item.kind == "stdout" and isinstance(item.data, str):
            out.write(item.data)
        elif item.kind == "stderr" and isinstance(item.data, str):
            out.flush()
            err.write(item.data)
            err.flush()
        else:
            data = item.data if isinstance(item.data, str) else json.dumps(item.data)
            out.write(f"----- output record (type: {item.kind}) -----\n{data}\n")
            out.write("----- end of record -----\n")
    if result.files:
        out.write("--- generated files ---\n")
        for entry in result.files:
            out.write(f"{entry.get('name')}: {entry.get('url')}\n")
        out.write("--- end of generated files ---\n")
    out.flush()


async def _read_input(is_password: bool) -> str:
    import getpass

    import trio

    from bai.client import BackendClientError

    def read() -> str:
        try:
            return getpass.getpass("") if is_password else input()
        except EOFError:
            raise BackendClientError("the code waits for input but stdin is closed") from None

    return await trio.to_thread.run_sync(read)


async def _execute(
    session: ComputeSession, code: str, mode: str, options: dict[str, Any] | None, prefix: str
) -> int:
    """Run code (query) or the uploaded files (batch), streaming the output; the exit code."""
    from contextlib import aclosing

    exit_code = 0
    stream = session.run(code, mode=mode, options=options, read_input=_read_input)
    async with aclosing(stream) as results:
        async for result in results:
            _write_console(result)
            if result.status == "clean-finished":
                print_done(f"{prefix}Clean finished. (exit code = {result.exit_code})")
            elif result.status == "build-finished":
                print_done(f"{prefix}Build finished. (exit code = {result.exit_code})")
            elif result.status == "finished":
                print_done(f"{prefix}Execution finished. (exit code = {result.exit_code})")
                exit_code = result.exit_code or 0
            elif result.status == "exec-timeout":
                print_fail(f"{prefix}Execution timed out.")
                exit_code = EXIT_FAILURE
    return exit_code


def _progress_bar(description: str, total: int) -> Any:
    """A rich progress bar on a terminal, else ``None`` (no noise in logs)."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    progress.add_task(description, total=total or None)
    return progress


async def _upload(
    session: ComputeSession, files: Sequence[str], basedir: str | None, prefix: str
) -> None:
    import contextlib
    import os

    print_wait(f"{prefix}Uploading source files...")
    total = 0
    for path in files:
        with contextlib.suppress(OSError):
            total += os.stat(path).st_size
    bar = _progress_bar("Uploading files", total)
    if bar is None:
        await session.upload(files, basedir=basedir)
    else:
        with bar:
            task = bar.task_ids[0]
            await session.upload(files, basedir=basedir, progress=lambda n: bar.advance(task, n))
    print_done(f"{prefix}Uploading done.")


async def _cleanup(session: ComputeSession, prefix: str) -> bool:
    """Destroy the session (``--rm``); whether it worked.  Never raises an API error."""
    import trio

    from bai.client import BackendError

    print_wait(f"{prefix}Cleaning up the session...")
    # The run may be ending because of Ctrl-C or a cancelled scope; the
    # session must still go away, within a bounded time.
    with trio.move_on_after(CLEANUP_TIMEOUT) as scope:
        scope.shield = True
        try:
            await session.destroy()
        except BackendError as exc:
            print_fail(f"{prefix}Could not clean up the session:\n" + "\n".join(error_lines(exc)))
            return False
        print_done(f"{prefix}Cleaned up the session.")
        return True
    print_fail(f"{prefix}Could not clean up the session within {CLEANUP_TIMEOUT:.0f} s.")
    return False


#: The events after which a batch session has nothing more to report.
_BATCH_END_EVENTS = frozenset(
    {"session_success", "session_failure", "session_terminated", "session_cancelled"}
)


async def _run_batch_session(api: APIClient, opts: CreateOptions, name: str, rm: bool) -> int:
    """``--type batch``: the session runs its startup command by itself; wait for its end."""
    import trio

    from bai.client import BackendError, session_events

    prefix = "[0] "
    over = trio.Event()
    outcome: dict[str, Any] = {}
    early_events: list[tuple[str, dict[str, Any]]] = []
    ids: set[str] = set()
    created = False

    def consider(event: str, data: dict[str, Any]) -> None:
        mine = data.get("sessionName") == name or str(data.get("sessionId")) in ids
        if mine and event in _BATCH_END_EVENTS and not outcome:
            outcome.update(data, event=event)
            over.set()

    async def watch(stream: AsyncIterator[SSEEvent]) -> None:
        async for event in stream:
            try:
                data = event.json()
            except BackendError:
                continue
            if isinstance(data, dict):
                if not created:
                    # The session's id is known only once creation answers.
                    early_events.append((event.event, data))
                consider(event.event, data)
        over.set()

    # Subscribe before creating, so that a short job cannot finish unseen.
    async with session_events(api) as stream, trio.open_nursery() as nursery:
        nursery.start_soon(watch, stream)
        session = await opts.create(api, name)
        created = True
        if session.id is not None:
            ids.add(str(session.id))
        for event_name, data in early_events:
            consider(event_name, data)
        if session.status == "RUNNING":
            print_done(f"{prefix}Session {name} is ready.")
        elif session.status != "TERMINATED":
            nursery.cancel_scope.cancel()
            early = _report_unready(session, name)
            return early if early is not None else EXIT_FAILURE
        try:
            # A job that ended before its creation was answered has its last
            # events in flight already; do not wait for them forever.
            grace = TERMINATED_EVENT_GRACE if session.status == "TERMINATED" else math.inf
            with trio.move_on_after(grace):
                await over.wait()
        except BaseException:
            if rm:
                await _cleanup(session, prefix)
            raise
        nursery.cancel_scope.cancel()

    event = outcome.get("event")
    if event is None:
        print_fail(f"{prefix}Session {name} ended without reporting a result.")
        return EXIT_FAILURE
    if event == "session_cancelled":
        reason = outcome.get("reason") or "no reason given"
        print_fail(f"{prefix}Session {name} was cancelled ({reason}).")
        return EXIT_FAILURE
    try:
        text = await session.logs()
    except BackendError as exc:
        print_warn(f"{prefix}The session's output is not available: {exc}")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    default_result = {"session_success": "SUCCESS", "session_failure": "FAILURE"}
    result = outcome.get("result") or default_result.get(event, "UNDEFINED")
    exit_code = outcome.get("exitCode")
    if not isinstance(exit_code, int):
        exit_code = EXIT_FAILURE if result == "FAILURE" else 0
    message = f"{prefix}Batch session finished. (result = {result}, exit code = {exit_code})"
    if result == "FAILURE" or exit_code:
        print_fail(message)
        return exit_code or EXIT_FAILURE
    print_done(message)
    return 0


_FC = TypeVar("_FC", bound=Callable[..., Any] | click.Command)


def _owner_option(help_text: str) -> Callable[[_FC], _FC]:
    """``-o/--owner/--owner-access-key``: act on another keypair's session (administrators)."""
    return click.option(
        "-o",
        "--owner",
        "--owner-access-key",
        "owner",
        metavar="ACCESS_KEY",
        default=None,
        help=help_text,
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("image")
@click.argument("files", nargs=-1, type=click.Path())
@click.option("-c", "--code", metavar="CODE", default=None, help="Code to run (query mode).")
@click.option(
    "--clean", metavar="CMD", default=None, help="Shell command that cleans before the build."
)
@click.option(
    "--build",
    metavar="CMD",
    default=None,
    help="Shell command that builds the uploaded FILES (default: the image's).",
)
@click.option(
    "--exec",
    "exec_",
    metavar="CMD",
    default=None,
    help="Shell command that runs the uploaded FILES (default: the image's); "
    "with --type batch, the session's startup command.",
)
@click.option(
    "--basedir",
    metavar="PATH",
    type=click.Path(file_okay=False),
    default=None,
    help="FILES are uploaded relative to this directory (default: the current one).",
)
@click.option("--rm", is_flag=True, help="Terminate the session when the run ends.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the session's own output.")
@_start_options
def run(
    image: str,
    files: tuple[str, ...],
    code: str | None,
    clean: str | None,
    build: str | None,
    exec_: str | None,
    basedir: str | None,
    rm: bool,
    quiet: bool,
    **kw: Any,
) -> None:
    """Run CODE or FILES in a session of IMAGE, streaming the output.

    \b
    IMAGE: image name or alias (e.g. python).
    FILES: source files to upload and run in batch mode (build, then exec).

    The exit status is the code's exit code when it is not zero (1 for API
    errors).  A session of the given name that is already running is reused.
    """
    opts = _create_options(image, kw)
    batch = opts.type == "batch"
    if batch:
        if code is not None or files:
            raise click.UsageError(
                "A batch session runs --exec CMD as its startup command; "
                "-c and FILES need an interactive session."
            )
        if not exec_:
            raise click.UsageError("--type batch needs --exec CMD: the command the session runs.")
        opts.startup_command = exec_
    elif files and code is not None:
        raise click.UsageError("You can run only either source files or command-line code snippet.")
    elif not files and code is None:
        raise click.UsageError(
            'You should provide the command-line code snippet using "-c" option '
            "if run without files."
        )
    set_quiet(quiet)

    async def main(api: APIClient) -> int:
        name = opts.name or _new_name()
        print_info(f"Session token prefix: {name}")
        if batch:
            return await _run_batch_session(api, opts, name, rm)
        prefix = "[0] "
        session = await opts.create(api, name)
        early = _report_unready(session, name)
        if early is not None:
            return early
        if session.created:
            print_done(f"{prefix}Session {name} is ready.")
        else:
            print_done(f"{prefix}Reusing session {name}...")
        try:
            if files:
                await _upload(session, files, basedir, prefix)
                options = {"clean": clean or "*", "build": build or "*", "exec": exec_ or "*"}
                status = await _execute(session, "", "batch", options, prefix)
            else:
                assert code is not None
                status = await _execute(session, code, "query", None, prefix)
        finally:
            cleaned = await _cleanup(session, prefix) if rm else True
        return status if cleaned else status or EXIT_FAILURE

    run_client(main)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("image")
@click.option(
    "-c",
    "--startup-command",
    metavar="CMD",
    default=None,
    help="Command a batch session runs (and ends with).",
)
@click.option(
    "--depends",
    metavar="SESSION",
    multiple=True,
    help="Start only after this session finished successfully (repeatable).",
)
@_owner_option("Create the session for this keypair (administrators).")
@_start_options
def start(
    image: str, startup_command: str | None, depends: tuple[str, ...], owner: str | None, **kw: Any
) -> None:
    """Start a session of IMAGE without running code in it.

    Run code in it later with `bai run -t NAME ...`; stop it with `bai rm NAME`.
    """
    opts = _create_options(image, kw)
    opts.startup_command = startup_command
    opts.dependencies = list(depends)
    opts.owner = owner

    async def main(api: APIClient) -> int:
        name = opts.name or _new_name()
        session = await opts.create(api, name)
        label = f"{name} ({session.id})" if session.id is not None else name
        if session.status == "RUNNING":
            if session.created:
                print_info(f"Session {label} is created and ready.")
            else:
                print_info(f"Session {label} is already running and ready.")
            if session.service_ports:
                services = ", ".join(str(p.get("name")) for p in session.service_ports)
                print_info(f"This session provides the following app services: {services}")
            return 0
        early = _report_unready(session, label)
        return early if early is not None else 0

    run_client(main)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("names", metavar="SESSION...", nargs=-1, required=True)
@click.option("-f", "--forced", is_flag=True, help="Terminate even if the session is busy.")
@click.option("-r", "--recursive", is_flag=True, help="Also cancel sessions that depend on it.")
@_owner_option("The sessions belong to this keypair (administrators).")
def rm(names: tuple[str, ...], forced: bool, recursive: bool, owner: str | None) -> None:
    """Terminate sessions (pending ones are cancelled)."""

    async def main(api: APIClient) -> int:
        from bai.client import BackendError, ComputeSession, NotFound

        print_wait("Terminating the session(s)...")
        failed = False
        for name in names:
            try:
                await ComputeSession(api, name, owner_access_key=owner).destroy(
                    forced=forced, recursive=recursive
                )
            except BackendError as exc:
                failed = True
                print_error(exc)
                if isinstance(exc, NotFound) and owner is None:
                    print_info(
                        'If you are an admin, use "-o" / "--owner" option '
                        "to terminate other user's session."
                    )
        if failed:
            return EXIT_FAILURE
        print_done("Done.")
        return 0

    run_client(main)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name", metavar="SESSION")
@_owner_option("The session belongs to this keypair (administrators).")
def logs(name: str, owner: str | None) -> None:
    """Print the console log of a session's main kernel."""

    async def main(api: APIClient) -> int:
        from bai.client import ComputeSession

        print_wait("Retrieving live container logs...")
        text = await ComputeSession(api, name, owner_access_key=owner).logs()
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        sys.stdout.flush()
        print_done("End of logs.")
        return 0

    run_client(main)


#: Events after which a watched session has nothing more to report.
_LAST_EVENTS = frozenset({"session_terminated", "session_cancelled"})


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name", metavar="SESSION")
@_owner_option("The session belongs to this keypair (administrators).")
@click.option(
    "--scope",
    type=click.Choice(["*", "session", "kernel"]),
    default="*",
    show_default=True,
    help="Session events, kernel events, or both.",
)
def events(name: str, owner: str | None, scope: str) -> None:
    """Print the lifecycle events of SESSION ('*' for all visible sessions) as they happen.

    One line per event: its name and its data as JSON.  Watching one
    session ends when it terminates or is cancelled; watching '*' runs until
    Ctrl-C.
    """

    async def main(api: APIClient) -> int:
        from bai.client import ComputeSession, session_events

        if name == "*":
            stream_cm = session_events(api, scope=scope)
        else:
            stream_cm = ComputeSession(api, name, owner_access_key=owner).events(scope=scope)
        async with stream_cm as stream:
            async for event in stream:
                try:
                    data = json.dumps(json.loads(event.data), ensure_ascii=False)
                except ValueError:
                    data = event.data
                click.echo(click.style(event.event, fg="cyan", bold=True) + " " + data)
                if event.event == "server_close" or (name != "*" and event.event in _LAST_EVENTS):
                    break
        return 0

    run_client(main)
