"""Scheduler options: parsing, validation errors, and the slot comparison order."""

from __future__ import annotations

import pytest

from bai.common.errors import InvalidValue
from bai.manager.scheduler import (
    DEFAULT_OPTIONS,
    AgentSelector,
    SchedulerConfigError,
    SchedulerOptions,
    Sequencer,
)
from bai.manager.scheduler.selectors import load_engine, slot_order


def test_defaults_are_strict_fifo_and_dispersed() -> None:
    assert SchedulerOptions.parse({}) == DEFAULT_OPTIONS
    assert DEFAULT_OPTIONS.sequencer is Sequencer.FIFO
    assert DEFAULT_OPTIONS.agent_selector is AgentSelector.DISPERSED
    assert DEFAULT_OPTIONS.num_retries_to_skip == 0
    assert DEFAULT_OPTIONS.reserve_after == 600.0


def test_parse_reads_every_key_and_round_trips() -> None:
    raw = {
        "sequencer": "fifo",
        "agent_selector": "concentrated",
        "num_retries_to_skip": 3,
        "reserve_after": 90.0,
        "resource_priority": ["cuda", "cpu", "mem"],
    }
    options = SchedulerOptions.parse(raw)
    assert options.agent_selector is AgentSelector.CONCENTRATED
    assert options.num_retries_to_skip == 3
    assert options.resource_priority == ("cuda", "cpu", "mem")
    assert options.to_json() == raw
    assert SchedulerOptions.parse(options.to_json()) == options


@pytest.mark.parametrize(
    ("raw", "field", "shown"),
    [
        ({"sequencer": "sjf"}, "sequencer", "'sjf'"),
        ({"sequencer": "FIFO"}, "sequencer", "'FIFO'"),
        ({"sequencer": 1}, "sequencer", "1"),
        ({"agent_selector": "random"}, "agent_selector", "'random'"),
        ({"num_retries_to_skip": -1}, "num_retries_to_skip", "-1"),
        ({"num_retries_to_skip": "3"}, "num_retries_to_skip", "'3'"),
        ({"num_retries_to_skip": 2.5}, "num_retries_to_skip", "2.5"),
        ({"num_retries_to_skip": True}, "num_retries_to_skip", "True"),
        ({"num_retries_to_skip": 10**9}, "num_retries_to_skip", "1000000000"),
        ({"sequencer": "drf", "num_retries_to_skip": 2}, "num_retries_to_skip", "2"),
        ({"reserve_after": -1}, "reserve_after", "-1"),
        ({"reserve_after": "soon"}, "reserve_after", "'soon'"),
        ({"reserve_after": True}, "reserve_after", "True"),
        ({"resource_priority": "cuda"}, "resource_priority", "'cuda'"),
        ({"resource_priority": ["cuda", ""]}, "resource_priority", "''"),
        ({"resource_priority": ["cuda", "cuda"]}, "resource_priority", "'cuda'"),
        ({"resource_priority": [None]}, "resource_priority", "None"),
    ],
)
def test_bad_options_name_the_field_and_value(
    raw: dict[str, object], field: str, shown: str
) -> None:
    with pytest.raises(SchedulerConfigError) as info:
        SchedulerOptions.parse(raw)
    assert isinstance(info.value, InvalidValue)
    assert info.value.field == field
    assert shown in str(info.value)


def test_resource_group_columns_in_backend_ai_layout() -> None:
    options = SchedulerOptions.from_resource_group(
        "fifo",
        {
            "allowed_session_types": ["interactive", "batch"],
            "pending_timeout": 0,
            "agent_selection_strategy": "roundrobin",
            "agent_selection_resource_priority": ["cuda", "cpu"],
            "config": {"num_retries_to_skip": 5, "reserve_after": "1h"},
        },
    )
    assert options == SchedulerOptions.parse(
        {
            "sequencer": "fifo",
            "agent_selector": "roundrobin",
            "num_retries_to_skip": 5,
            "reserve_after": 3600,
            "resource_priority": ["cuda", "cpu"],
        }
    )
    assert SchedulerOptions.from_resource_group("drf", {}).sequencer is Sequencer.DRF


@pytest.mark.parametrize(
    ("scheduler", "opts", "shown"),
    [
        ("sjf", {}, "'sjf'"),
        ("fifo", [], "[]"),
        ("fifo", {"config": {"num_retries": 1}}, "'num_retries'"),
        ("fifo", {"config": 3}, "3"),
        ("fifo", {"agent_selection_strategy": "legacy"}, "'legacy'"),
        ("fifo", {"config": {"num_retries_to_skip": -2}}, "-2"),
        ("fifo", {"max_retries": 1}, "'max_retries'"),
    ],
)
def test_bad_resource_group_columns(scheduler: str, opts: object, shown: str) -> None:
    with pytest.raises(SchedulerConfigError) as info:
        SchedulerOptions.from_resource_group(scheduler, opts)
    assert shown in str(info.value)


def test_unknown_key_and_non_mapping_are_rejected() -> None:
    with pytest.raises(SchedulerConfigError, match="unknown scheduler option"):
        SchedulerOptions.parse({"num_retries_to_skipp": 1})
    with pytest.raises(SchedulerConfigError, match="must be a mapping"):
        SchedulerOptions.parse(["fifo"])


def test_direct_construction_validates_too() -> None:
    with pytest.raises(SchedulerConfigError):
        SchedulerOptions(num_retries_to_skip=-5)
    assert SchedulerOptions(sequencer="lifo").sequencer is Sequencer.LIFO  # type: ignore[arg-type]


def test_unknown_engine_is_a_config_error() -> None:
    with pytest.raises(SchedulerConfigError, match="engine"):
        load_engine("fortran")


def test_default_slot_order_is_accelerators_then_cpu_then_mem() -> None:
    names = ["mem", "cpu", "cuda.shares", "cuda.device", "tpu.device"]
    assert slot_order(names, ()) == ["cuda.device", "cuda.shares", "tpu.device", "cpu", "mem"]


def test_configured_priority_matches_devices_and_slots() -> None:
    names = ["mem", "cpu", "cuda.shares", "cuda.device", "tpu.device", "rocm.device"]
    assert slot_order(names, ("cpu", "tpu", "cuda.shares")) == [
        "cpu",
        "tpu.device",
        "cuda.shares",
        "cuda.device",
        "mem",
        "rocm.device",
    ]
