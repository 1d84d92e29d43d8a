"""Status lines on stderr, in the official client's style.

``∙`` informs, ``⋯`` waits, ``✔`` reports success, ``✘`` failure; a warning is
a yellow ``∙``.  Status lines go to stderr so that stdout carries only what
the user's code printed (``bai run ... > out.txt`` captures just that).
Colours appear only on a terminal (``click.echo`` strips them otherwise), and
a waiting line is shown only on a terminal, where the next line overwrites it.

Tables go to stdout (:func:`print_table`): a rich table on a terminal,
otherwise one line of tab-separated values per row under a header line, so
scripts can ``cut`` them.

This module imports only click (rich when a table is drawn), so command
modules can use it at import time.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Sequence
from typing import Any, Final

import click

__all__ = [
    "cell",
    "error_lines",
    "print_done",
    "print_error",
    "print_fail",
    "print_info",
    "print_table",
    "print_wait",
    "print_warn",
    "set_quiet",
]

INFO: Final = "\u2219"
WAIT: Final = "\u22ef"
DONE: Final = "\u2714"
FAIL: Final = "\u2718"
POINT: Final = "\u279c"

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Hide (or show again) every status line except failures (``bai run -q``)."""
    global _quiet
    _quiet = quiet


def _emit(symbol: str, colour: str, message: str, *, always: bool = False) -> None:
    if _quiet and not always:
        return
    text = textwrap.indent(message, "  ")[2:]
    stream = sys.stderr
    if stream.isatty():
        # Erase a waiting line this one replaces.
        click.echo("\x1b[2K\r", nl=False, err=True)
    click.echo(click.style(symbol, fg=colour) + " " + text, err=True)


def print_info(message: str) -> None:
    _emit(INFO, "bright_cyan", message)


def print_done(message: str) -> None:
    _emit(DONE, "bright_green", message)


def print_fail(message: str) -> None:
    _emit(FAIL, "bright_red", message, always=True)


def print_warn(message: str) -> None:
    _emit(INFO, "yellow", message)


def print_wait(message: str) -> None:
    """A transient line (terminal only) that the next status line replaces."""
    if sys.stderr.isatty() and not _quiet:
        click.echo(
            "\x1b[2K\r" + click.style(WAIT, fg="bright_yellow") + " " + message + "\r",
            nl=False,
            err=True,
        )


def error_lines(exc: BaseException) -> list[str]:
    """The lines that describe *exc* to a user (first line: what failed)."""
    status = getattr(exc, "status", None)
    title = getattr(exc, "title", None)
    if isinstance(status, int) and isinstance(title, str):
        reason = getattr(exc, "reason", "")
        lines = [f"{title} [{status} {reason}]".rstrip()]
        detail = getattr(exc, "detail", None)
        if detail and detail != title:
            lines.append(f"{POINT} {detail}")
        data = getattr(exc, "data", {})
        field = data.get("field") if isinstance(data, dict) else None
        if field:
            lines.append(f"{POINT} field: {field}")
        return lines
    return [str(exc) or type(exc).__name__]


def print_error(exc: BaseException) -> None:
    """Print *exc* as a failure line (API errors show title, status and detail)."""
    print_fail("\n".join(error_lines(exc)))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print *rows* under *headers* on stdout (see the module docstring)."""
    if not sys.stdout.isatty():
        for line in (headers, *rows):
            click.echo("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in line))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, header_style="bold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def cell(value: Any) -> str:
    """One table cell: ``-`` for nothing, JSON objects as ``key=value`` pairs, lists joined."""
    if value is None:
        return "-"
    if isinstance(value, str) and value.startswith("{"):
        text = value
        try:
            value = json.loads(text)
        except ValueError:
            return text
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)
