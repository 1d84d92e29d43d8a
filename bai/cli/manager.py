"""``bai manager``: run the manager, or manage its database from the command line.

``bai manager [--config manager.toml]`` runs the daemon.  ``bai manager
fixture populate FILE.json`` (or ``default`` for the built-in set) loads a
fixture into the database the config names, creating the schema first if
needed, and prints the keypairs it created: the way a distributed manager gets
its first users.  Populating is idempotent and atomic (see
:mod:`bai.manager.fixtures`); a bad fixture or config exits 2 naming the
problem and writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import click


@click.group(invoke_without_command=True)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="manager.toml to use (default: search ./, ~/.config/bai/, /etc/bai/).",
)
@click.pass_context
def manager(ctx: click.Context, config_path: Path | None) -> None:
    """Run the manager: REST API, scheduler and session registry (distributed mode)."""
    ctx.obj = config_path
    if ctx.invoked_subcommand is None:
        from bai.manager.server import main

        raise SystemExit(main(config_path))


@manager.group()
def fixture() -> None:
    """Load fixtures (domains, users, keypairs, policies, presets) into the database."""


@fixture.command("populate")
@click.argument("source", metavar="FILE.json|default")
@click.pass_obj
def populate(config_path: Path | None, source: str) -> None:
    """Add the fixture in FILE.json (or the built-in default set) to the database."""
    import trio

    from bai.common.config import ManagerConfig, load_config
    from bai.common.errors import InvalidValue
    from bai.manager.db import create_database
    from bai.manager.fixtures import PopulateReport, default_fixture, load_fixture
    from bai.manager.fixtures import populate as populate_fixture
    from bai.manager.models import migrate

    def fail(exc: InvalidValue) -> NoReturn:
        click.echo(f"bai manager fixture populate: {exc}", err=True)
        raise SystemExit(2)

    try:
        config = load_config(ManagerConfig, config_path).config
        data = default_fixture() if source == "default" else load_fixture(source)
    except InvalidValue as exc:
        fail(exc)

    async def run() -> PopulateReport:
        async with create_database(config.db) as db:
            await migrate.upgrade(db)
            return await populate_fixture(db, data)

    try:
        report = trio.run(run)
    except InvalidValue as exc:
        fail(exc)
    added = ", ".join(f"{n} {table}" for table, n in sorted(report.inserted.items())) or "nothing"
    click.echo(f"added {added}")
    for pair in report.keypairs:
        role = "admin" if pair.is_admin else "user"
        click.echo(
            f"{pair.user_email} ({role}): access key {pair.access_key}"
            f"  secret key {pair.secret_key}"
        )
