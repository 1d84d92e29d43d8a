"""What every ``bai admin`` command shares: its options and how it prints answers.

* ``-o/--output table|json``: a table (rich on a terminal, tab-separated
  otherwise, see :func:`~bai.cli.commands.pretty.print_table`) or JSON on
  stdout for scripts: a list as ``{"total_count": N, "items": [...]}``, one
  object as itself, a change as ``{"ok": true, ...}``.  Status lines go to
  stderr either way, so stdout stays parseable.
* ``-f/--format a,b,c``: the columns, GraphQL field names of the object kind
  (:func:`parse_format` checks them against the kind's known fields).
* ``--limit``/``--offset``: the page; lists the manager pages itself
  (``user_list``...) are paged there, the others here (:func:`page_of`).

Only click is imported at module level, like every command module.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import click

from bai.cli.commands.pretty import cell as table_cell
from bai.cli.commands.pretty import print_done, print_info, print_table

__all__ = [
    "CONTEXT",
    "MAX_LIMIT",
    "cell",
    "emit_done",
    "emit_item",
    "emit_list",
    "format_option",
    "header",
    "output_option",
    "page_of",
    "paging_options",
    "parse_format",
    "parse_json_option",
]

CONTEXT: Final = {"help_option_names": ["-h", "--help"]}
#: The largest ``--limit``: the manager's largest page.
MAX_LIMIT: Final = 1000

_F = TypeVar("_F", bound=Callable[..., Any])

#: Headers that title-casing would spell wrong.
_HEADERS: Final[Mapping[str, str]] = {
    "uuid": "UUID",
    "id": "ID",
    "is_active": "Active?",
    "is_admin": "Admin?",
    "is_public": "Public?",
    "user_id": "Email",
    "groups": "Projects",
    "wsproxy_addr": "App Proxy Address",
    "wsproxy_api_token": "App Proxy Token",
}


def cell(value: Any) -> str:
    """One value as table text (resource slots as ``cpu=1 mem=1g``, lists joined,
    projects by name)."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return ", ".join(str(v.get("name", v.get("id", v))) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return table_cell(value)


def header(field: str) -> str:
    """The column header of a GraphQL field (``max_vfolder_count`` -> ``Max Vfolder Count``)."""
    return _HEADERS.get(field) or field.replace("_", " ").title()


def parse_format(text: str | None, known: Sequence[str], default: Sequence[str]) -> list[str]:
    """The fields ``-f`` names (comma-separated), or *default* without ``-f``.

    A name outside *known* is a usage error naming it and the choices.  A
    field with subfields (``groups { id name }``) is named by its first word.
    """
    if text is None:
        return list(default)
    by_name = {name.split("{")[0].strip(): name for name in known}
    chosen: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item not in by_name:
            raise click.BadParameter(
                f"unknown field {item!r}; choose from {', '.join(by_name)}",
                param_hint="'-f' / '--format'",
            )
        if by_name[item] not in chosen:
            chosen.append(by_name[item])
    if not chosen:
        raise click.BadParameter("names no field", param_hint="'-f' / '--format'")
    return chosen


def parse_json_option(text: str | None, option: str) -> Any:
    """The JSON value of *option* (``None`` when not given); a usage error if it is not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=option) from None


def page_of(items: Sequence[dict[str, Any]], limit: int, offset: int) -> list[dict[str, Any]]:
    """The page *offset*..*offset*+*limit* of a list the manager answers whole."""
    return list(items[offset : offset + limit])


def output_option(fn: _F) -> _F:
    """``-o/--output table|json``."""
    return click.option(
        "-o",
        "--output",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="Print a table, or JSON for scripts.",
    )(fn)


def format_option(known: Sequence[str]) -> Callable[[_F], _F]:
    """``-f/--format FIELDS`` choosing among *known*."""
    names = ", ".join(name.split("{")[0].strip() for name in known)
    return click.option(
        "-f",
        "--format",
        "format_",
        metavar="FIELDS",
        default=None,
        help=f"Comma-separated fields to show: {names}.",
    )


def paging_options(fn: _F) -> _F:
    """``--limit N`` (1 to :data:`MAX_LIMIT`) and ``--offset N``."""
    fn = click.option(
        "--offset",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Skip this many items.",
    )(fn)
    return click.option(
        "--limit",
        type=click.IntRange(1, MAX_LIMIT),
        default=20,
        show_default=True,
        help="Show at most this many items.",
    )(fn)


def _field_key(field: str) -> str:
    return field.split("{")[0].strip()


def emit_list(
    items: Sequence[dict[str, Any]],
    fields: Sequence[str],
    output: str,
    *,
    total: int,
    offset: int,
    noun: str,
) -> None:
    """Print one page of a list (*total* items in all, this page from *offset*)."""
    keys = [_field_key(f) for f in fields]
    if output == "json":
        page = [{k: item.get(k) for k in keys} for item in items]
        click.echo(json.dumps({"total_count": total, "items": page}, ensure_ascii=False))
        return
    if not items:
        print_info(f"There are no {noun}." if offset == 0 else f"No {noun} after {offset}.")
        return
    print_table([header(k) for k in keys], [[cell(item.get(k)) for k in keys] for item in items])
    shown_until = offset + len(items)
    if total > shown_until:
        print_info(
            f"Showing {offset + 1}-{shown_until} of {total} {noun}; "
            f"use --offset {shown_until} for more."
        )


def emit_item(item: dict[str, Any], fields: Sequence[str], output: str) -> None:
    """Print one object: a two-column table of its fields, or JSON."""
    keys = [_field_key(f) for f in fields]
    if output == "json":
        click.echo(json.dumps({k: item.get(k) for k in keys}, ensure_ascii=False))
        return
    print_table(["Field", "Value"], [[header(k), cell(item.get(k))] for k in keys])


def emit_done(message: str, output: str, **extra: Any) -> None:
    """Report a change that succeeded: a status line, or ``{"ok": true, ...}`` as JSON."""
    if output == "json":
        click.echo(json.dumps({"ok": True, "msg": message, **extra}, ensure_ascii=False))
        return
    print_done(message)
    for key, value in extra.items():
        click.echo(f"{header(key)}: {cell(value)}")
