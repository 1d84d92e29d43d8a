"""How ``/config/set`` flattens object values and ``/config/get`` with prefix nests them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bai.common.errors import InvalidValue
from bai.manager.api.shared_config import MAX_SET_KEYS, flatten_config
from bai.manager.models.shared_config import nest_config


def test_scalars_are_stored_at_the_key() -> None:
    assert flatten_config("a/b", "v") == {"a/b": "v"}
    assert flatten_config("a", [1, {"x": 2}]) == {"a": [1, {"x": 2}]}
    assert flatten_config("a", None) == {"a": None}


def test_objects_become_one_key_per_leaf() -> None:
    assert flatten_config("k", {"a": {"b": 1, "c": "x"}, "": 0, "d": []}) == {
        "k/a/b": 1,
        "k/a/c": "x",
        "k": 0,
        "k/d": [],
    }


def test_an_empty_object_writes_nothing() -> None:
    assert flatten_config("k", {}) == {}


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"a b": 1}, "value.a b"),
        ({"a": {"x//y": 1}}, "value.a.x//y"),
        ({"a/": 1}, "value.a/"),
    ],
)
def test_members_that_make_bad_keys_are_named(value: Any, field: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        flatten_config("k", value)
    assert caught.value.field == field


def test_too_many_keys_are_refused() -> None:
    with pytest.raises(InvalidValue, match=str(MAX_SET_KEYS)):
        flatten_config("k", {f"n{i}": i for i in range(MAX_SET_KEYS + 1)})
    assert len(flatten_config("k", {f"n{i}": i for i in range(MAX_SET_KEYS)})) == MAX_SET_KEYS


def test_deep_objects_do_not_exhaust_the_stack() -> None:
    value: Any = 1
    for _ in range(5000):
        value = {"a": value}
    with pytest.raises(InvalidValue):
        flatten_config("k", value)


def test_nesting_is_relative_to_the_prefix() -> None:
    items = {"k": 0, "k/a/b": 1, "k/a/c": "x", "k/d": [1]}
    assert nest_config("k", items) == {"": 0, "a": {"b": 1, "c": "x"}, "d": [1]}


def test_a_key_with_children_keeps_its_value_under_the_empty_name() -> None:
    assert nest_config("k", {"k/a": 1, "k/a/b": 2}) == {"a": {"": 1, "b": 2}}
    # Same result whatever order the keys come in.
    assert nest_config("k", {"k/a/b": 2, "k/a": 1}) == {"a": {"": 1, "b": 2}}


def test_stored_objects_are_values_not_subtrees() -> None:
    assert nest_config("k", {"k/a": {"x": 1}, "k/a/b": 2}) == {"a": {"": {"x": 1}, "b": 2}}


_segment = st.text(alphabet="abcxyz-_.", min_size=1, max_size=4)
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)
_tree = st.recursive(
    _leaf,
    lambda children: st.dictionaries(_segment, children, min_size=1, max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(_segment, _tree, min_size=1, max_size=3))
def test_what_get_returns_sets_back_the_same_keys(value: dict[str, Any]) -> None:
    flat = flatten_config("root", value)
    assert flatten_config("root", nest_config("root", flat)) == flat
