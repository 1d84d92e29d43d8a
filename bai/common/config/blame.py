"""Reporting a rejected config: the key, the words, and whether a file or a variable is wrong."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

from bai.common.config.errors import ConfigError
from bai.common.config.schema import DaemonConfig, Problem, Section, dec_hook
from bai.common.errors import InvalidValue
from bai.common.validation import NO_VALUE, PathStep, bracketed, value_at, violation_of

__all__ = ["Blame", "translate", "unknown_key_problem", "unwrap_optional", "walk_problems"]


class Blame:
    """Decides whether a bad key came from the file or from an environment variable."""

    def __init__(self, source: str, overrides: dict[str, str]) -> None:
        self.source = source
        self.overrides = overrides

    def source_of(self, key: str) -> str:
        for name, env_key in self.overrides.items():
            if key == env_key or key.startswith((env_key + ".", env_key + "[")):
                return f"environment variable {name}"
            if env_key.startswith(key + "."):
                return f"environment variable {name}"
        if self.overrides:
            return f"{self.source} (with {', '.join(self.overrides)})"
        return self.source


#: Keys of the Backend.AI samples that bai deliberately does not have.
_RETIRED_KEYS: Final = {
    "etcd": "bai has no etcd: the shared configuration lives in the manager database",
    "agent.mode": "the kernel backend is chosen with agent.backend ('local' or 'docker')",
    "event-loop": "bai daemons always run on Trio",
    "num-proc": "each bai daemon is one Trio process",
    "enhanced-aiomonitor-task-info": "bai does not use aiomonitor",
    "asyncio": "bai daemons always run on Trio",
}


def translate(
    kind: type[DaemonConfig], raw: dict[str, Any], exc: msgspec.ValidationError, blame: Blame
) -> ConfigError:
    """The :class:`ConfigError` for msgspec's *exc* about the TOML document *raw*."""
    found = violation_of(exc)
    path = _resolve_dict_keys(kind, raw, found.location)
    value: Any = NO_VALUE
    if found.unknown is not None:
        path.append(found.unknown)
        problem = unknown_key_problem(kind, path)
    elif found.missing is not None:
        path.append(found.missing)
        problem = "is required but missing"
    else:
        cause = exc.__cause__
        if isinstance(cause, InvalidValue):
            problem = cause.problem
        else:
            problem = _rephrase(found.problem, _type_at(kind, path))
        value = value_at(raw, path)
    key = bracketed(path)
    return ConfigError(problem, source=blame.source_of(key), key=key or None, value=value)


def _resolve_dict_keys(
    kind: type[DaemonConfig], raw: dict[str, Any], tokens: Sequence[PathStep]
) -> list[PathStep]:
    """Replace msgspec's ``[...]`` (an unnamed dict key) with the key that fails.

    Each entry of the table is converted alone; the first one that reproduces
    an error inside the table is the culprit.
    """
    resolved: list[PathStep] = []
    for token in tokens:
        table = value_at(raw, resolved)
        in_tables = all(isinstance(step, str) for step in resolved)
        if token is None and in_tables and isinstance(table, dict):
            inside = (*resolved, None)
            for name, value in table.items():
                trial = _replace_at(raw, resolved, {name: value})
                try:
                    msgspec.convert(trial, type=kind, dec_hook=dec_hook)
                except msgspec.ValidationError as exc:
                    if violation_of(exc).location[: len(inside)] == inside:
                        token = name
                        break
        resolved.append(token)
    return resolved


def _replace_at(raw: dict[str, Any], path: Sequence[PathStep], value: Any) -> dict[str, Any]:
    if not path:
        return value  # type: ignore[no-any-return]
    head = path[0]
    copied = dict(raw)
    copied[str(head)] = _replace_at(raw[str(head)], path[1:], value)
    return copied


def unknown_key_problem(kind: type[DaemonConfig], path: Sequence[PathStep]) -> str:
    """Why the key at *path* is unknown: a retired Backend.AI key, or a likely typo."""
    key = bracketed(path)
    name = str(path[-1])
    hint = _RETIRED_KEYS.get(key) or _RETIRED_KEYS.get(name)
    if hint:
        return f"unknown key ({hint})"
    known = _struct_fields_at(kind, path[:-1])
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return "unknown key"


def _struct_fields_at(kind: type[DaemonConfig], path: Sequence[PathStep]) -> list[str]:
    spec = _type_at(kind, path)
    return [f.encode_name for f in spec.fields] if isinstance(spec, mi.StructType) else []


def _type_at(kind: type[DaemonConfig], path: Sequence[PathStep]) -> mi.Type | None:
    """The schema type at a resolved *path*, or ``None`` where the path leaves the schema."""
    spec: mi.Type | None = mi.type_info(kind)
    for token in path:
        spec = unwrap_optional(spec) if spec is not None else None
        if isinstance(spec, mi.StructType):
            spec = next((f.type for f in spec.fields if f.encode_name == token), None)
        elif isinstance(spec, mi.DictType):
            spec = spec.value_type
        elif isinstance(spec, mi.VarTupleType | mi.ListType):
            spec = spec.item_type
        elif isinstance(spec, mi.TupleType) and isinstance(token, int):
            spec = spec.item_types[token] if token < len(spec.item_types) else None
        else:
            return None
    return unwrap_optional(spec) if spec is not None else None


def _rephrase(problem: str, spec: mi.Type | None) -> str:
    """Turn msgspec's wording into the words of a TOML file."""
    if isinstance(spec, mi.LiteralType) and problem.startswith("Invalid enum value"):
        return "must be one of " + ", ".join(repr(v) for v in spec.values)
    problem = problem.replace("`", "").replace("object", "table")
    return problem[:1].lower() + problem[1:]


def unwrap_optional(spec: mi.Type) -> mi.Type:
    """``X`` for the schema type ``X | None``; any other type unchanged."""
    if isinstance(spec, mi.UnionType):
        members = [t for t in spec.types if not isinstance(t, mi.NoneType)]
        if len(members) == 1:
            return members[0]
    return spec


def walk_problems(node: msgspec.Struct, prefix: str) -> Iterator[Problem]:
    """The cross-field problems of *node* and of every section inside it, keys dotted."""
    join: Callable[[str], str] = lambda key: f"{prefix}.{key}" if prefix else key  # noqa: E731
    if isinstance(node, Section):
        for key, problem, value in node.problems():
            yield join(key), problem, value
    for field in msgspec.structs.fields(node):
        child = getattr(node, field.name)
        if isinstance(child, msgspec.Struct):
            yield from walk_problems(child, join(field.encode_name))
        elif isinstance(child, dict):
            for name, item in child.items():
                if isinstance(item, msgspec.Struct):
                    yield from walk_problems(item, join(f"{field.encode_name}.{name}"))
