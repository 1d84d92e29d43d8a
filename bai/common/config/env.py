"""``BAI_<SECTION>__<KEY>`` environment variables written over the TOML document."""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

from bai.common.config.blame import unknown_key_problem, unwrap_optional
from bai.common.config.errors import ConfigError
from bai.common.config.schema import DAEMON_CONFIGS, DaemonConfig
from bai.common.validation import bracketed

__all__ = ["ENV_PREFIX", "apply_env"]

#: Environment variables ``BAI_<SECTION>__<KEY>`` override config keys.
ENV_PREFIX: Final = "BAI_"
_ENV_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*")


def _all_sections() -> frozenset[str]:
    return frozenset(
        field.encode_name for kind in DAEMON_CONFIGS for field in msgspec.structs.fields(kind)
    )


_ALL_SECTIONS: Final = _all_sections()


def _normalize(segment: str) -> str:
    return segment.lower().replace("_", "-")


def apply_env(
    kind: type[DaemonConfig], raw: dict[str, Any], env: Mapping[str, str], source: str
) -> dict[str, str]:
    """Write every ``BAI_<SECTION>__<KEY>`` variable meant for *kind* into *raw*.

    Returns ``{variable: dotted key}`` of the variables applied.  A variable
    naming a section of another daemon (``BAI_DB__ADDR`` seen by the agent) is
    skipped; one naming no daemon's section, or an unknown key, is an error.
    """
    applied: dict[str, str] = {}
    own = {field.encode_name for field in msgspec.structs.fields(kind)}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        where = f"environment variable {name}"
        segments = name[len(ENV_PREFIX) :].split("__")
        if not all(_ENV_SEGMENT_RE.fullmatch(segment) for segment in segments):
            raise ConfigError(
                "malformed override name (expected BAI_<SECTION>__<KEY>)", source=where
            )
        section = _normalize(segments[0])
        if section not in own:
            if section in _ALL_SECTIONS:
                continue
            raise ConfigError(
                f"unknown section (known: {', '.join(sorted(_ALL_SECTIONS))})",
                source=where,
                key=section,
            )
        key = _set_override(kind, raw, segments, env[name], where, source)
        applied[name] = key
    return applied


def _set_override(
    kind: type[DaemonConfig],
    raw: dict[str, Any],
    segments: Sequence[str],
    text: str,
    where: str,
    source: str,
) -> str:
    spec: mi.Type = mi.type_info(kind)
    node = raw
    path: list[str] = []
    for position, segment in enumerate(segments):
        spec = unwrap_optional(spec)
        if isinstance(spec, mi.StructType):
            wanted = _normalize(segment)
            field = next((f for f in spec.fields if f.encode_name == wanted), None)
            if field is None:
                path.append(wanted)
                raise ConfigError(
                    unknown_key_problem(kind, path), source=where, key=bracketed(path)
                )
            key, spec = field.encode_name, field.type
            if key not in node and isinstance(unwrap_optional(spec), mi.DictType):
                # Overriding one entry keeps the default entries beside it.
                node[key] = _default_as_toml(field)
        elif isinstance(spec, mi.DictType):
            key = _match_dict_key(node, segment)
            spec = spec.value_type
        else:
            raise ConfigError("this key has no sub-keys", source=where, key=bracketed(path))
        path.append(key)
        if position == len(segments) - 1:
            node[key] = _env_value(spec, text, where, bracketed(path))
            return bracketed(path)
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError("must be a table", source=source, key=bracketed(path), value=child)
        node = child
    raise AssertionError("unreachable: segments is never empty")


def _default_as_toml(field: mi.Field) -> Any:
    default = field.default_factory() if field.default is msgspec.NODEFAULT else field.default
    return msgspec.to_builtins(default, enc_hook=str)


def _match_dict_key(table: dict[str, Any], segment: str) -> str:
    # Environment names cannot hold '-' or lower case, so match existing keys loosely.
    wanted = _normalize(segment)
    for key in table:
        if _normalize(key) == wanted:
            return key
    return wanted


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _env_value(spec: mi.Type, text: str, where: str, key: str) -> Any:
    spec = unwrap_optional(spec)
    if isinstance(spec, mi.BoolType):
        lowered = text.strip().lower()
        if lowered in _TRUE | _FALSE:
            return lowered in _TRUE
        raise ConfigError("expected true or false", source=where, key=key, value=text)
    if isinstance(spec, mi.IntType):
        if re.fullmatch(r"\s*[+-]?[0-9]{1,30}\s*", text):
            return int(text)
        raise ConfigError("expected an integer", source=where, key=key, value=text)
    if isinstance(spec, mi.FloatType):
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
        raise ConfigError("expected a finite number", source=where, key=key, value=text)
    if isinstance(spec, mi.ListType | mi.VarTupleType | mi.TupleType):
        if text.lstrip().startswith("["):
            return _toml_value(text, where, key)
        items = [item.strip() for item in text.split(",")] if text.strip() else []
        if isinstance(spec, mi.TupleType):
            if len(items) != len(spec.item_types):
                raise ConfigError(
                    f"expected {len(spec.item_types)} comma-separated values",
                    source=where,
                    key=key,
                    value=text,
                )
            return [
                _env_value(item_type, item, where, key)
                for item_type, item in zip(spec.item_types, items, strict=True)
            ]
        return [_env_value(spec.item_type, item, where, key) for item in items]
    if isinstance(spec, mi.DictType | mi.StructType):
        return _toml_value(text, where, key)
    return text


def _toml_value(text: str, where: str, key: str) -> Any:
    try:
        parsed = tomllib.loads(f"value = {text}")
    except (tomllib.TOMLDecodeError, RecursionError):
        parsed = {}
    if set(parsed) != {"value"}:
        raise ConfigError(
            'expected a TOML value (e.g. ["a", "b"] or { key = 1 })',
            source=where,
            key=key,
            value=text,
        )
    return parsed["value"]
