"""``bai admin manager ...``, ``bai admin announcement ...``, ``bai admin error-log ...``.

* ``manager status``: running or frozen, the manager nodes, the active
  sessions; ``manager freeze [--force-kill]`` / ``unfreeze`` (superadmins):
  while frozen, new sessions and other RUNNING-only routes answer 503;
  ``manager include-agents``/``exclude-agents ID...``: the scheduler's
  operations on agents.
* ``announcement get|update MESSAGE|delete``: the message every client shows.
* ``error-log list [--limit N] [--page P] [--mark-read]``, ``error-log add``,
  ``error-log clear LOG_ID``: the errors clients reported.  The route pages
  by number, so ``--page`` replaces ``--offset`` here.

Through :class:`bai.client.Manager` and :class:`bai.client.ErrorLog`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TextIO

import click

from bai.cli.commands.admin.output import (
    CONTEXT,
    MAX_LIMIT,
    emit_done,
    emit_item,
    emit_list,
    output_option,
)
from bai.cli.commands.runtime import run_client

if TYPE_CHECKING:
    from bai.client import APIClient

__all__ = ["announcement", "error_log", "manager"]

ERROR_LOG_FIELDS: Final = (
    "log_id",
    "created_at",
    "severity",
    "source",
    "user",
    "is_read",
    "message",
    "request_url",
    "request_status",
)


@click.group(context_settings=CONTEXT)
def manager() -> None:
    """The manager's status and maintenance mode."""


@manager.command(context_settings=CONTEXT)
@output_option
def status(output: str) -> None:
    """Show whether the manager runs or is frozen, its nodes and active sessions."""
    from bai.client import Manager

    async def main(api: APIClient) -> None:
        answer = await Manager.status(api)
        shown = dict(answer)
        shown["nodes"] = [
            node.get("id", node) if isinstance(node, dict) else node
            for node in answer.get("nodes") or []
        ]
        emit_item(shown if output == "table" else answer, list(answer), output)

    run_client(main)


@manager.command(context_settings=CONTEXT)
@click.option("--force-kill", is_flag=True, help="Also terminate every running session now.")
@output_option
def freeze(force_kill: bool, output: str) -> None:
    """Enter maintenance: no new sessions until ``unfreeze``."""
    from bai.client import Manager

    async def main(api: APIClient) -> None:
        await Manager.freeze(api, force_kill=force_kill)
        emit_done("The manager is frozen.", output)

    run_client(main)


@manager.command(context_settings=CONTEXT)
@output_option
def unfreeze(output: str) -> None:
    """Leave maintenance: everything works again."""
    from bai.client import Manager

    async def main(api: APIClient) -> None:
        await Manager.unfreeze(api)
        emit_done("The manager is running.", output)

    run_client(main)


def _scheduler_op(op: str, agent_ids: tuple[str, ...], output: str) -> None:
    from bai.client import Manager

    async def main(api: APIClient) -> None:
        await Manager.scheduler_op(api, op, list(agent_ids))
        emit_done(f"{op}: {', '.join(agent_ids)}.", output)

    run_client(main)


@manager.command("include-agents", context_settings=CONTEXT)
@click.argument("agent_ids", nargs=-1, required=True)
@output_option
def include_agents(agent_ids: tuple[str, ...], output: str) -> None:
    """Let the scheduler place sessions on the agents AGENT_IDS again."""
    _scheduler_op("include-agents", agent_ids, output)


@manager.command("exclude-agents", context_settings=CONTEXT)
@click.argument("agent_ids", nargs=-1, required=True)
@output_option
def exclude_agents(agent_ids: tuple[str, ...], output: str) -> None:
    """Keep the scheduler from placing new sessions on the agents AGENT_IDS."""
    _scheduler_op("exclude-agents", agent_ids, output)


@click.group(context_settings=CONTEXT)
def announcement() -> None:
    """The announcement every client shows."""


@announcement.command(context_settings=CONTEXT)
@output_option
def get(output: str) -> None:
    """Show the announcement, if there is one."""
    from bai.client import Manager

    async def main(api: APIClient) -> None:
        posted = await Manager.get_announcement(api)
        if output == "json" or posted.enabled:
            item = {"enabled": posted.enabled, "message": posted.message}
            emit_item(item, ["enabled", "message"], output)
        else:
            click.echo("There is no announcement.", err=True)

    run_client(main)


@announcement.command(context_settings=CONTEXT)
@click.argument("message", required=False)
@click.option("-f", "--file", "path", type=click.File("r"), help="Read the message from a file.")
@output_option
def update(message: str | None, path: TextIO | None, output: str) -> None:
    """Post MESSAGE (or a file's text) as the announcement (superadmins)."""
    from bai.client import Manager

    text = path.read() if path is not None else message
    if not text or not text.strip():
        raise click.UsageError("Give the MESSAGE or --file with the announcement's text.")

    async def main(api: APIClient) -> None:
        await Manager.update_announcement(api, enabled=True, message=text)
        emit_done("Announcement posted.", output)

    run_client(main)


@announcement.command(context_settings=CONTEXT)
@output_option
def delete(output: str) -> None:
    """Take the announcement down (superadmins)."""
    from bai.client import Manager

    async def main(api: APIClient) -> None:
        await Manager.delete_announcement(api)
        emit_done("Announcement deleted.", output)

    run_client(main)


@click.group("error-log", context_settings=CONTEXT)
def error_log() -> None:
    """Errors clients and the manager recorded (yours; all of them for superadmins)."""


@error_log.command("list", context_settings=CONTEXT)
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=20, show_default=True)
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--mark-read", is_flag=True, help="Mark the listed entries read.")
@output_option
def list_logs(limit: int, page: int, mark_read: bool, output: str) -> None:
    """List error-log entries, newest first, a page at a time."""
    from bai.client import ErrorLog

    async def main(api: APIClient) -> None:
        answer = await ErrorLog.list(api, page_size=limit, page_no=page, mark_read=mark_read)
        emit_list(
            answer.logs,
            ERROR_LOG_FIELDS,
            output,
            total=answer.count,
            offset=(page - 1) * limit,
            noun="error-log entries",
        )

    run_client(main)


@error_log.command(context_settings=CONTEXT)
@click.argument("message")
@click.option(
    "--severity",
    type=click.Choice(["critical", "error", "warning"]),
    default="error",
    show_default=True,
)
@click.option("--source", default="bai-cli", show_default=True, help="What reported it.")
@output_option
def add(message: str, severity: str, source: str, output: str) -> None:
    """Record MESSAGE in the error log."""
    from bai.client import ErrorLog

    async def main(api: APIClient) -> None:
        await ErrorLog.create(api, severity=severity, source=source, message=message)
        emit_done("Error recorded.", output)

    run_client(main)


@error_log.command(context_settings=CONTEXT)
@click.argument("log_id")
@output_option
def clear(log_id: str, output: str) -> None:
    """Mark the entry LOG_ID cleared (it leaves the list)."""
    from bai.client import ErrorLog

    async def main(api: APIClient) -> None:
        await ErrorLog.clear(api, log_id)
        emit_done(f"Entry {log_id} cleared.", output)

    run_client(main)
