"""``bai manager``: run the manager, or manage its database from the command line.

``bai manager [--config manager.toml]`` runs the daemon.  The subcommands
work directly on the database the config names, creating the schema first if
needed, so they serve before the first manager starts:

* ``fixture populate FILE.json`` (or ``default`` for the built-in set) loads a
  fixture and prints the keypairs it created: the way a distributed manager
  gets its first users.  Populating is idempotent and atomic (see
  :mod:`bai.manager.fixtures`).
* ``config get|put|put-json|delete`` read and write the shared configuration
  (:mod:`bai.manager.models.shared_config`, the spec's etcd), as the spec's
  ``backend.ai mgr etcd ...`` commands do; ``get --prefix ""`` prints the
  whole tree as JSON and ``put-json "" FILE`` writes such a backup back.

Bad input (config, fixture, key, value) exits 2 naming the problem and writes
nothing; an unreachable database exits 1; so does ``config get`` of a key
without a value.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from bai.cli.commands.params import parse_json

if TYPE_CHECKING:
    from bai.manager.db import Database

T = TypeVar("T")


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


def _fail(command: str, problem: Exception | str, code: int = 2) -> NoReturn:
    click.echo(f"bai manager {command}: {problem}", err=True)
    raise SystemExit(code)


def _on_database(
    command: str, config_path: Path | None, work: Callable[[Database], Awaitable[T]]
) -> T:
    """Run *work* on the manager config's database, upgraded to the newest schema."""
    import trio

    from bai.common.config import ManagerConfig, load_config
    from bai.common.errors import InvalidValue
    from bai.manager.db import DatabaseError, create_database
    from bai.manager.models import migrate

    try:
        config = load_config(ManagerConfig, config_path).config
    except InvalidValue as exc:
        _fail(command, exc)

    async def run() -> T:
        async with create_database(config.db) as db:
            await migrate.upgrade(db)
            return await work(db)

    try:
        return trio.run(run)
    except InvalidValue as exc:
        _fail(command, exc)
    except DatabaseError as exc:
        _fail(command, exc, 1)


@manager.group()
def fixture() -> None:
    """Load fixtures (domains, users, keypairs, policies, presets) into the database."""


@fixture.command("populate")
@click.argument("source", metavar="FILE.json|default")
@click.pass_obj
def populate(config_path: Path | None, source: str) -> None:
    """Add the fixture in FILE.json (or the built-in default set) to the database."""
    from bai.common.errors import InvalidValue
    from bai.manager.fixtures import default_fixture, load_fixture
    from bai.manager.fixtures import populate as populate_fixture

    try:
        data = default_fixture() if source == "default" else load_fixture(source)
    except InvalidValue as exc:
        _fail("fixture populate", exc)
    report = _on_database("fixture populate", config_path, lambda db: populate_fixture(db, data))
    added = ", ".join(f"{n} {table}" for table, n in sorted(report.inserted.items())) or "nothing"
    click.echo(f"added {added}")
    for pair in report.keypairs:
        role = "admin" if pair.is_admin else "user"
        click.echo(
            f"{pair.user_email} ({role}): access key {pair.access_key}"
            f"  secret key {pair.secret_key}"
        )


@manager.group("config")
def shared_config() -> None:
    """Read and write the shared configuration (what the spec keeps in etcd).

    Keys are /-separated paths; a prefix selects a key and every key below it,
    and the prefix "" selects them all.
    """


_MISSING: Any = object()


@shared_config.command("get")
@click.argument("key")
@click.option("--prefix", is_flag=True, help='Print every key at or below KEY ("" for all).')
@click.pass_obj
def config_get(config_path: Path | None, key: str, prefix: bool) -> None:
    """Print the value at KEY: a string as is, anything else as JSON.

    With --prefix, print the keys at or below KEY as one JSON tree relative to
    KEY (KEY's own value under ""); put-json KEY reads it back.
    """
    from bai.cli.commands.config import print_value
    from bai.manager.models.shared_config import get_config, get_config_tree

    async def read(db: Database) -> Any:
        async with db.begin_readonly() as conn:
            if prefix:
                return await get_config_tree(conn, key)
            return await get_config(conn, key, _MISSING)

    value = _on_database("config get", config_path, read)
    if value is _MISSING:
        _fail("config get", f"no value at {key!r} (--prefix reads the keys below it)", 1)
    print_value(value)


def _write(config_path: Path | None, command: str, key: str, value: Any) -> None:
    from bai.common.errors import InvalidValue
    from bai.manager.api.shared_config import flatten_config
    from bai.manager.models.shared_config import ROOT, check_config_key, put_config_many

    if key == ROOT and (not isinstance(value, dict) or ROOT in value):
        _fail(command, 'the root key "" holds no value: write a JSON object without a "" member')
    updates: dict[str, Any] = {}
    try:
        if key == ROOT:
            for name, member in value.items():
                updates.update(flatten_config(name, member))
        else:
            updates = flatten_config(check_config_key(key), value)
    except InvalidValue as exc:
        _fail(command, exc)

    async def write(db: Database) -> None:
        async with db.begin() as conn:
            await put_config_many(conn, updates)

    _on_database(command, config_path, write)


@shared_config.command("put")
@click.argument("key")
@click.argument("value")
@click.option(
    "--json", "as_json", is_flag=True, help="VALUE is JSON; an object is stored one key per leaf."
)
@click.pass_obj
def config_put(config_path: Path | None, key: str, value: str, as_json: bool) -> None:
    """Store VALUE at KEY (a string unless --json), replacing what was there."""
    _write(config_path, "config put", key, parse_json(value, "VALUE") if as_json else value)


@shared_config.command("put-json")
@click.argument("key")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.pass_obj
def config_put_json(config_path: Path | None, key: str, file: IO[str]) -> None:
    """Store the JSON document in FILE (- for standard input) at KEY, as put --json does.

    An object is stored one key per leaf below KEY (a "" member at KEY
    itself), so the output of get --prefix KEY put back at KEY restores it.
    """
    _write(config_path, "config put-json", key, parse_json(file.read(), "FILE"))


@shared_config.command("delete")
@click.argument("key")
@click.option("--prefix", is_flag=True, help='Delete every key at or below KEY ("" for all).')
@click.pass_obj
def config_delete(config_path: Path | None, key: str, prefix: bool) -> None:
    """Delete the value at KEY (with --prefix, the keys below it too); print how many went."""
    from bai.manager.models.shared_config import delete_config

    async def delete(db: Database) -> int:
        async with db.begin() as conn:
            return await delete_config(conn, key, prefix=prefix)

    deleted = _on_database("config delete", config_path, delete)
    click.echo(f"deleted {deleted} key{'' if deleted == 1 else 's'}")
