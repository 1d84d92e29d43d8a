"""The pure checks of a create request (:mod:`bai.manager.sessions.request`), no cluster needed.

Every refusal is an :class:`InvalidSessionRequest` that names the request's field.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from bai.common.agent_api import MAX_BOOTSTRAP_SCRIPT
from bai.common.errors import InvalidValue
from bai.common.slots import DEFAULT_SLOT_TYPES, INTRINSIC_SLOT_TYPES, ResourceSlot
from bai.common.types import ClusterMode, SessionTypes
from bai.manager.scheduler.validation import MAX_CLUSTER_SIZE, MAX_PRIORITY
from bai.manager.sessions.errors import InvalidSessionRequest, ResourceLimitExceeded
from bai.manager.sessions.model import SessionRequest
from bai.manager.sessions.request import (
    check_name,
    check_request,
    kernel_slots,
    nested_problem,
    normalized,
)

G = 2**30


def request(**changes: Any) -> SessionRequest:
    return dataclasses.replace(SessionRequest(image="python:3.11"), **changes)


def refusal(changes: dict[str, Any]) -> InvalidSessionRequest:
    with pytest.raises(InvalidSessionRequest) as caught:
        check_request(normalized(request(**changes)))
    return caught.value


# ----------------------------------------------------------------- normalized


def test_defaults_make_a_valid_interactive_single_node_request() -> None:
    plain = SessionRequest(image="python:3.11")
    assert normalized(plain) is plain
    check_request(plain)
    assert (plain.session_type, plain.cluster_mode, plain.cluster_size) == (
        SessionTypes.INTERACTIVE,
        ClusterMode.SINGLE_NODE,
        1,
    )
    assert (plain.group, plain.priority, plain.name, plain.scaling_group) == (
        "default",
        0,
        None,
        None,
    )


def test_strings_become_enums() -> None:
    given = request(session_type="batch", cluster_mode="multi-node", startup_command="true")
    result = normalized(given)
    assert result.session_type is SessionTypes.BATCH
    assert result.cluster_mode is ClusterMode.MULTI_NODE
    assert result.startup_command == "true"
    check_request(result)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"session_type": "daemon"}, "type"),
        ({"cluster_mode": "both"}, "cluster_mode"),
    ],
)
def test_unknown_enum_strings_name_their_api_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidSessionRequest) as caught:
        normalized(request(**changes))
    assert caught.value.field == field
    assert "must be one of" in caught.value.problem


# ----------------------------------------------------------------- check_name


@pytest.mark.parametrize("name", ["abcd", "my-session_1.0", "A" * 64, "0abc9"])
def test_good_names_pass(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["abc", "a" * 65, "-abcd", "abcd-", "ab cd", "ab/cd", "séance", "", None, 1234],
)
def test_bad_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidSessionRequest) as caught:
        check_name(name)
    assert caught.value.field == "name"
    assert caught.value.value == name


def test_a_uuid_is_no_name() -> None:
    text = str(uuid.uuid4())
    with pytest.raises(InvalidSessionRequest, match="must not be a UUID") as caught:
        check_name(text, "new_name")
    assert caught.value.field == "new_name"


# -------------------------------------------------------------- check_request


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"image": ""}, "image"),
        ({"image": "x" * 513}, "image"),
        ({"image": 5}, "image"),
        ({"session_type": 3}, "type"),
        ({"callback_url": "ftp://example.com/"}, "callback_url"),
        ({"callback_url": "http://:80/"}, "callback_url"),
        ({"callback_url": "http://example.com:port/"}, "callback_url"),
        ({"callback_url": "https://example.com/" + "x" * 2048}, "callback_url"),
        ({"cluster_size": 0}, "cluster_size"),
        ({"cluster_size": MAX_CLUSTER_SIZE + 1}, "cluster_size"),
        ({"cluster_size": True}, "cluster_size"),
        ({"cluster_size": "2"}, "cluster_size"),
        ({"cluster_size": 2.0}, "cluster_size"),
        ({"cluster_mode": None}, "cluster_mode"),
        ({"priority": -1}, "priority"),
        ({"priority": MAX_PRIORITY + 1}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": "1"}, "priority"),
        ({"environ": ["A=1"]}, "environ"),
        ({"environ": {"1A": "x"}}, "environ"),
        ({"environ": {"A-B": "x"}}, "environ"),
        ({"environ": {"PATH": "a\x00b"}}, "environ.PATH"),
        ({"environ": {"N": 1}}, "environ.N"),
        ({"mounts": "data"}, "mounts"),
        ({"mounts": ["data", ""]}, "mounts"),
        ({"mounts": ["x" * 257]}, "mounts"),
        ({"mounts": [1]}, "mounts"),
        ({"session_type": SessionTypes.BATCH}, "startup_command"),
        ({"session_type": SessionTypes.BATCH, "startup_command": ""}, "startup_command"),
        ({"startup_command": "a\x00b"}, "startup_command"),
        ({"startup_command": 5}, "startup_command"),
        ({"bootstrap_script": "a\x00b"}, "bootstrap_script"),
        ({"bootstrap_script": "x" * (MAX_BOOTSTRAP_SCRIPT + 1)}, "bootstrap_script"),
        ({"callback_url": b"http://x"}, "callback_url"),
        ({"tag": "t" * 65}, "tag"),
        ({"tag": 5}, "tag"),
        ({"starts_at": datetime(2030, 1, 1)}, "starts_at"),
        ({"starts_at": "2030-01-01T00:00:00Z"}, "starts_at"),
        ({"batch_timeout": 0}, "batch_timeout"),
        ({"batch_timeout": -1.5}, "batch_timeout"),
        ({"batch_timeout": 10**9 + 1}, "batch_timeout"),
        ({"batch_timeout": True}, "batch_timeout"),
        ({"batch_timeout": "60"}, "batch_timeout"),
        ({"designated_agent": ""}, "designated_agent"),
        ({"designated_agent": "a" * 65}, "designated_agent"),
        ({"designated_agent": 7}, "designated_agent"),
        ({"scaling_group": 7}, "scaling_group"),
        ({"dependencies": "other"}, "dependencies"),
        ({"dependencies": ["s"] * 65}, "dependencies"),
    ],
)
def test_each_refusal_names_its_field(changes: dict[str, Any], field: str) -> None:
    assert refusal(changes).field == field


@pytest.mark.parametrize(
    "changes",
    [
        {"image": "x" * 512},
        {"cluster_size": MAX_CLUSTER_SIZE, "cluster_mode": ClusterMode.MULTI_NODE},
        {"priority": MAX_PRIORITY},
        {"environ": {"_A1": "", "PATH": "/bin"}},
        {"mounts": ["data", "x" * 256]},
        {"session_type": SessionTypes.BATCH, "startup_command": "python main.py"},
        {"session_type": SessionTypes.INFERENCE},
        {"session_type": SessionTypes.SYSTEM},
        {"callback_url": "http://127.0.0.1:8080/hooks/session?x=1"},
        {"bootstrap_script": "x" * MAX_BOOTSTRAP_SCRIPT},
        {"tag": "t" * 64},
        {"starts_at": datetime(2030, 1, 1, tzinfo=UTC)},
        {"batch_timeout": 0.5},
        {"batch_timeout": 10**9},
        {"designated_agent": "i-agent", "scaling_group": "gpu"},
        {"dependencies": [uuid.uuid4(), "other"] * 32},
    ],
)
def test_values_at_the_limits_pass(changes: dict[str, Any]) -> None:
    check_request(normalized(request(**changes)))


def test_a_refusal_carries_the_offending_value() -> None:
    error = refusal({"cluster_size": 0})
    assert error.value == 0
    assert str(MAX_CLUSTER_SIZE) in error.problem
    assert refusal({"bootstrap_script": "x" * (MAX_BOOTSTRAP_SCRIPT + 1)}).value == (
        MAX_BOOTSTRAP_SCRIPT + 1
    )


# --------------------------------------------------------------- kernel_slots


def test_slots_are_parsed_with_the_known_types() -> None:
    slots = kernel_slots({"cpu": "2", "mem": "4g", "cuda.device": 1}, {}, DEFAULT_SLOT_TYPES)
    assert slots == ResourceSlot({"cpu": 2, "mem": 4 * G, "cuda.device": 1})


def test_the_image_minimum_fills_what_the_request_leaves_out() -> None:
    image = {"cpu": {"min": "1"}, "mem": {"min": "256m"}, "cuda.device": {"min": 1}}
    # cuda.device is not known here: its minimum is ignored.
    assert kernel_slots(None, image, INTRINSIC_SLOT_TYPES) == ResourceSlot(
        {"cpu": 1, "mem": 256 * 2**20}
    )
    assert kernel_slots({"cpu": 3}, image, INTRINSIC_SLOT_TYPES) == ResourceSlot(
        {"cpu": 3, "mem": 256 * 2**20}
    )


def test_an_unreadable_image_minimum_is_ignored() -> None:
    image = {"cpu": {"min": "bogus"}, "mem": "1g"}
    assert kernel_slots({"cpu": 2}, image, INTRINSIC_SLOT_TYPES) == ResourceSlot({"cpu": 2})


def test_below_the_image_minimum_names_the_slot() -> None:
    with pytest.raises(InvalidSessionRequest, match="at least 2") as caught:
        kernel_slots({"cpu": 1}, {"cpu": {"min": 2}}, INTRINSIC_SLOT_TYPES)
    assert caught.value.field == "resources.cpu"
    assert caught.value.value == "1"


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"gpu": 1}, "resources"),
        ({"cpu": "x"}, "resources.cpu"),
        ({"cpu": -1}, "resources.cpu"),
        ({"mem": "1.5"}, "resources.mem"),
        ({"cpu": "inf"}, "resources.cpu"),
        (5, "resources"),
    ],
)
def test_bad_resource_values_name_the_slot(resources: Any, field: str) -> None:
    with pytest.raises(InvalidSessionRequest) as caught:
        kernel_slots(resources, {}, INTRINSIC_SLOT_TYPES)
    assert caught.value.field == field


def test_nested_problems_keep_the_inner_field() -> None:
    inner = InvalidValue("too much", value=Decimal(9), field="cpu")
    nested = nested_problem(inner, ResourceLimitExceeded, "resources")
    assert isinstance(nested, ResourceLimitExceeded)
    assert (nested.field, nested.value, nested.problem) == ("resources.cpu", Decimal(9), "too much")
    plain = nested_problem(InvalidValue("bad", value=1), InvalidSessionRequest, "resources")
    assert plain.field == "resources"
