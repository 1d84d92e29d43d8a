"""Parsing of command-line values: the repeated ``KEY=VAL`` options of ``bai
run`` and ``bai start``, and the JSON arguments of the config commands.

Every function raises :class:`click.BadParameter` naming the option and the
offending text, so click prints a usage error (exit status 2).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click

__all__ = ["parse_env", "parse_json", "parse_mounts", "parse_resources"]


def _pairs(values: Sequence[str], option: str) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for text in values:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {text!r}", param_hint=option)
        parsed[key] = value
    return parsed


def parse_env(values: Sequence[str]) -> dict[str, str]:
    """``-e NAME=VALUE`` options into an environment mapping (later ones win)."""
    return _pairs(values, "'-e' / '--env'")


def parse_resources(values: Sequence[str], option: str = "'-r' / '--resources'") -> dict[str, str]:
    """``-r SLOT=AMOUNT`` options into the creation config's ``resources``.

    As in the official client, a ``mem`` amount without a unit is in MiB.
    """
    parsed = _pairs(values, option)
    for key, value in parsed.items():
        if not value.strip():
            raise click.BadParameter(f"{key} has no amount", param_hint=option)
    mem = parsed.get("mem", "").strip()
    if mem and mem[-1].isdigit():
        parsed["mem"] = f"{mem}m"
    return parsed


def parse_mounts(values: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """``-m NAME[=PATH]`` / ``-m NAME[:PATH]`` into the vfolder list and the path map."""
    names: list[str] = []
    paths: dict[str, str] = {}
    for text in values:
        split_at = min((i for i in (text.find("="), text.find(":")) if i >= 0), default=-1)
        if split_at >= 0:
            name, path = text[:split_at].strip(), text[split_at + 1 :].strip()
            if not path:
                raise click.BadParameter(
                    f"{text!r} has an empty path", param_hint="'-m' / '--mount'"
                )
        else:
            name, path = text.strip(), ""
        if not name:
            raise click.BadParameter(f"{text!r} names no vfolder", param_hint="'-m' / '--mount'")
        if name not in names:
            names.append(name)
        if path:
            paths[name] = path
    return names, paths


def parse_json(text: str, param: str) -> Any:
    """The JSON value in *text*, given as the argument or option *param*."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=param) from None


def owner_option(fn: Any) -> Any:
    """``--owner ACCESS_KEY``: act on a session of another keypair (administrators)."""
    return click.option(
        "--owner",
        "--owner-access-key",
        "owner",
        metavar="ACCESS_KEY",
        default=None,
        help="The session belongs to this keypair (administrators).",
    )(fn)
