"""``bai session-template`` (stored session templates) and ``bai start-template``.

``create`` and ``update ID`` read the template (YAML or JSON) from ``-f
FILE`` or stdin; ``create`` prints the new id(s) on stdout, one a line.
``list`` prints a table (name, id, created, owner?, project; ``-a`` every
template, superadmins); ``get ID`` prints the template as stored (``--format
yaml``, the default, or ``json``); ``delete ID`` asks first unless ``-f``.
``-o ACCESS_KEY`` acts for another keypair (admins), as the official
``backend.ai session-template``.  ``bai start-template ID`` starts a session
from a template: the options given replace the template's values (``-m``
replaces its folders, ``-e`` its variables, ``-r`` its resources, as a
whole), and it reports like ``bai start``.
"""

from __future__ import annotations

import secrets
import sys
from typing import TYPE_CHECKING

import click

from bai.cli.commands.params import owner_option, parse_env, parse_mounts, parse_resources
from bai.cli.commands.pretty import print_done, print_fail, print_info, print_table, print_warn
from bai.cli.commands.runtime import run_client

if TYPE_CHECKING:
    from bai.client import APIClient

__all__ = ["session_template", "start_template"]

_CONTEXT = {"help_option_names": ["-h", "--help"]}
_FILE = click.option(
    "-f",
    "--file",
    "source",
    metavar="FILE",
    help="Read the template from FILE (default: stdin).",
)


def _payload(source: str | None) -> str:
    if source is None or source == "-":
        return sys.stdin.read()
    with open(source, encoding="utf-8") as text:
        return text.read()


@click.group(name="session-template", context_settings=_CONTEXT)
def session_template() -> None:
    """Stored session templates: parameters to start sessions with (YAML or JSON)."""


@session_template.command(context_settings=_CONTEXT)
@_FILE
@click.option("-d", "--domain", metavar="DOMAIN", help="Store it in this domain.")
@click.option("-g", "--group", metavar="GROUP", help="Store it in this project (shared with it).")
@owner_option
def create(source: str | None, domain: str | None, group: str | None, owner: str | None) -> None:
    """Store the template(s) of FILE or stdin; print their ids."""
    payload = _payload(source)

    async def main(api: APIClient) -> int:
        from bai.client.template import SessionTemplate

        created = await SessionTemplate.create(
            api, payload, domain=domain, group=group, owner_access_key=owner
        )
        for template in created:
            click.echo(template.id)
        print_done(f"Session template(s) {', '.join(t.id for t in created)} created.")
        return 0

    run_client(main)


@session_template.command(name="list", context_settings=_CONTEXT)
@click.option("-a", "--all", "list_all", is_flag=True, help="Every template (superadmins).")
def list_(list_all: bool) -> None:
    """List the templates you may use."""

    async def main(api: APIClient) -> int:
        from bai.client.template import SessionTemplate

        entries = await SessionTemplate.list_templates(api, list_all=list_all)
        if not entries:
            print_info("There are no session templates.")
            return 0
        rows = [
            (
                str(item.get("name")),
                str(item.get("id")),
                str(item.get("created_at")),
                "yes" if item.get("is_owner") else "no",
                str(item.get("group_name") or item.get("group") or ""),
            )
            for item in entries
        ]
        print_table(("Name", "ID", "Created At", "Owner", "Project"), rows)
        return 0

    run_client(main)


@session_template.command(context_settings=_CONTEXT)
@click.argument("template_id", metavar="ID")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="How to print it.",
)
@owner_option
def get(template_id: str, format_: str, owner: str | None) -> None:
    """Print the template ID."""

    async def main(api: APIClient) -> int:
        from bai.client.template import SessionTemplate

        template = SessionTemplate(api, template_id, owner_access_key=owner)
        text = await template.get(format="json" if format_ == "json" else "yaml")
        click.echo(text.rstrip("\n"))
        return 0

    run_client(main)


@session_template.command(context_settings=_CONTEXT)
@click.argument("template_id", metavar="ID")
@_FILE
@owner_option
def update(template_id: str, source: str | None, owner: str | None) -> None:
    """Replace the template ID with the one of FILE or stdin."""
    payload = _payload(source)

    async def main(api: APIClient) -> int:
        from bai.client.template import SessionTemplate

        await SessionTemplate(api, template_id, owner_access_key=owner).update(payload)
        print_done(f"Session template {template_id} updated.")
        return 0

    run_client(main)


@session_template.command(context_settings=_CONTEXT)
@click.argument("template_id", metavar="ID")
@click.option("-f", "--force", is_flag=True, help="Do not ask.")
@owner_option
def delete(template_id: str, force: bool, owner: str | None) -> None:
    """Delete the template ID."""
    if not force and not click.confirm(f"Delete the session template {template_id}?"):
        print_info("Aborted.")
        return

    async def main(api: APIClient) -> int:
        from bai.client.template import SessionTemplate

        await SessionTemplate(api, template_id, owner_access_key=owner).delete()
        print_done(f"Session template {template_id} deleted.")
        return 0

    run_client(main)


@click.command(name="start-template", context_settings=_CONTEXT)
@click.argument("template_id", metavar="ID")
@click.option("-t", "--name", metavar="NAME", help="The session's name (default: random).")
@click.option("-i", "--image", metavar="IMAGE", help="Run this image instead.")
@click.option("--type", "type_", type=click.Choice(["interactive", "batch"]), default=None)
@click.option("-c", "--startup-command", metavar="CMD", help="A batch session's command.")
@click.option("-e", "--env", multiple=True, metavar="KEY=VAL", help="Variables (replace all).")
@click.option("-r", "--resources", multiple=True, metavar="SLOT=VAL", help="Resources (replace).")
@click.option("-m", "--mount", multiple=True, metavar="NAME[:PATH]", help="Folders (replace).")
@click.option("--tag", metavar="TAG", help="Annotate the session.")
@click.option("--scaling-group", "--sgroup", metavar="GROUP", help="The resource group.")
@click.option("-d", "--domain", metavar="DOMAIN", help="The session's domain.")
@click.option("-g", "--group", metavar="GROUP", help="The session's project.")
@click.option("--enqueue-only", is_flag=True, help="Return once the session is queued.")
@click.option("--max-wait", type=int, default=0, help="Wait at most this many seconds.")
@owner_option
def start_template(
    template_id: str,
    name: str | None,
    image: str | None,
    type_: str | None,
    startup_command: str | None,
    env: tuple[str, ...],
    resources: tuple[str, ...],
    mount: tuple[str, ...],
    tag: str | None,
    scaling_group: str | None,
    domain: str | None,
    group: str | None,
    enqueue_only: bool,
    max_wait: int,
    owner: str | None,
) -> None:
    """Start a session from the session template ID."""
    environ = parse_env(env) if env else None
    slots = parse_resources(resources) if resources else None
    mounts, mount_map = parse_mounts(mount) if mount else (None, None)
    session_name = name or f"bai-{secrets.token_hex(5)}"

    async def main(api: APIClient) -> int:
        from bai.client.template import SessionTemplate

        template = SessionTemplate(api, template_id, owner_access_key=owner)
        session = await template.start(
            name=session_name,
            image=image,
            type=type_,
            startup_command=startup_command,
            environ=environ,
            resources=slots,
            mounts=mounts,
            mount_map=mount_map,
            tag=tag,
            scaling_group=scaling_group,
            domain=domain,
            group=group,
            enqueue_only=enqueue_only,
            max_wait=max_wait,
        )
        label = f"{session.name} ({session.id})" if session.id is not None else session.name
        status = session.status
        if status == "RUNNING":
            created = "is created" if session.created else "is already running"
            print_info(f"Session {label} {created} and ready.")
            return 0
        if status in ("PENDING", "SCHEDULED", "TIMEOUT"):
            print_info(f"Session {label} is queued ({status}).")
            return 0
        if status == "TERMINATED":
            print_warn(f"Session {label} is already terminated.")
        else:
            print_fail(f"Session {label} has an error during scheduling/startup or cancelled.")
        return 1

    run_client(main)
