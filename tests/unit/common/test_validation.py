"""msgspec validation errors become InvalidValue errors naming the offending field."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from bai.common.errors import InvalidValue
from bai.common.validation import (
    NO_VALUE,
    InvalidField,
    bracketed,
    dotted,
    invalid_value,
    value_at,
    violation_of,
)


class Mount(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    path: str = "/home/work"


class Config(msgspec.Struct):
    cpu: int = 1


class Body(msgspec.Struct, forbid_unknown_fields=True):
    key: str
    mounts: list[Mount] = []
    config: Config = msgspec.field(default_factory=Config)
    resources: dict[str, int] = {}


def rejected(document: Any) -> msgspec.ValidationError:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert(document, Body)
    return info.value


def test_nested_field() -> None:
    document = {"key": "k", "config": {"cpu": "x"}}
    found = violation_of(rejected(document))
    assert found.path == found.location == ("config", "cpu")
    assert found.problem == "Expected `int`, got `str`"
    assert found.missing is None and found.unknown is None
    error = invalid_value(rejected(document), document, where="the body", error=InvalidField)
    assert isinstance(error, InvalidValue)
    assert (error.field, error.problem, error.value) == ("config.cpu", found.problem, "x")
    assert str(error) == "config.cpu: Expected `int`, got `str` (got 'x')"


def test_list_index() -> None:
    document = {"key": "k", "mounts": [{"name": "a"}, {"name": 5}]}
    found = violation_of(rejected(document))
    assert found.path == ("mounts", 1, "name")
    assert dotted(found.path) == "mounts.1.name"
    assert bracketed(found.path) == "mounts[1].name"
    assert value_at(document, found.path) == 5
    error = invalid_value(
        rejected(document), document, where="the body", error=InvalidField, notation=bracketed
    )
    assert error.field == "mounts[1].name"
    assert str(error).endswith("(got 5)")


def test_missing_required_field() -> None:
    document = {"key": "k", "mounts": [{"path": "/x"}]}
    found = violation_of(rejected(document))
    assert found.location == ("mounts", 0)
    assert found.missing == "name" and found.unknown is None
    assert found.path == ("mounts", 0, "name")
    error = invalid_value(rejected(document), document, where="the body", error=InvalidField)
    assert (error.field, error.problem, error.value) == ("mounts.0.name", "is required", None)
    assert str(error) == "mounts.0.name: is required"


def test_missing_top_level_field() -> None:
    error = invalid_value(rejected({}), {}, where="the body", error=InvalidField)
    assert (error.field, str(error)) == ("key", "key: is required")


def test_unknown_field_echoes_its_value() -> None:
    document = {"key": "k", "mounts": [{"name": "a", "size": 3}]}
    found = violation_of(rejected(document))
    assert found.unknown == "size" and found.path == ("mounts", 0, "size")
    error = invalid_value(rejected(document), document, where="the body", error=InvalidField)
    assert error.field == "mounts.0.size"
    assert str(error) == "mounts.0.size: is not a known field (got 3)"


def test_unnamed_dict_key() -> None:
    document = {"key": "k", "resources": {"cpu": "x"}}
    found = violation_of(rejected(document))
    assert found.path == ("resources", None)
    assert dotted(found.path) == "resources.*"
    assert bracketed(found.path) == "resources[...]"
    assert value_at(document, found.path) is NO_VALUE
    error = invalid_value(rejected(document), document, where="the body", error=InvalidField)
    assert error.field == "resources.*" and "(got" not in str(error)


def test_the_whole_document_has_no_field() -> None:
    error = invalid_value(rejected([1, 2]), [1, 2], where="the body", error=InvalidField)
    assert error.field is None
    assert str(error) == "the body: Expected `object`, got `array`"


def test_unknown_document_echoes_nothing() -> None:
    error = invalid_value(rejected({"key": 1}), where="the body", error=InvalidField)
    assert error.field == "key" and str(error) == "key: Expected `str`, got `int`"


def test_value_at_does_not_confuse_keys_and_indices() -> None:
    assert value_at({"a": [{"b": 1}]}, ("a", 0, "b")) == 1
    assert value_at({"a": {"0": 1}}, ("a", 0)) is NO_VALUE
    assert value_at({"a": [1]}, ("a", "0")) is NO_VALUE
    assert value_at({"a": [1]}, ("a", 1)) is NO_VALUE
    assert value_at({"a": 1}, ()) == {"a": 1}


def test_the_error_class_is_the_callers() -> None:
    class Mine(InvalidField):
        pass

    error = invalid_value(rejected({"key": 1}), {"key": 1}, where="the body", error=Mine)
    assert type(error) is Mine and error.field == "key"
