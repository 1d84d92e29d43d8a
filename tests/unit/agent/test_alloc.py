"""Allocation maps: discrete and fractional placement, exclusivity, all-or-nothing, restore."""

from __future__ import annotations

import json
from decimal import Decimal as D
from typing import Any

import pytest

from bai.agent.alloc import (
    AllocMap,
    DeviceSlot,
    DiscreteAllocMap,
    FractionAllocMap,
    FragmentedResource,
    InsufficientResource,
    InvalidAllocation,
    ResourceAllocator,
    allocation_from_json,
    allocation_to_json,
    allocation_total,
)
from bai.common.slots import ResourceSlot
from bai.common.types import SlotTypes

CUDA_EXCLUSIVE = ("cuda.device", "cuda.shares", "cuda.device:*-mig")


def cores(count: int) -> DiscreteAllocMap:
    return DiscreteAllocMap(
        DeviceSlot(str(core), "cpu", SlotTypes.COUNT, D(1)) for core in range(count)
    )


def memory(size: int) -> DiscreteAllocMap:
    return DiscreteAllocMap([DeviceSlot("root", "mem", SlotTypes.BYTES, D(size))])


def gpus(count: int) -> DiscreteAllocMap:
    return DiscreteAllocMap(
        [DeviceSlot(f"gpu{i}", "cuda.device", SlotTypes.COUNT, D(1)) for i in range(count)],
        exclusive_slot_types=CUDA_EXCLUSIVE,
    )


def shares(*capacities: str, mig: int = 0) -> FractionAllocMap:
    devices = [
        DeviceSlot(f"gpu{i}", "cuda.shares", SlotTypes.COUNT, D(cap))
        for i, cap in enumerate(capacities)
    ]
    devices += [
        DeviceSlot(f"MIG-{i}", "cuda.device:10g-mig", SlotTypes.UNIQUE, D(1)) for i in range(mig)
    ]
    return FractionAllocMap(devices, exclusive_slot_types=CUDA_EXCLUSIVE)


def state(alloc_map: AllocMap) -> Any:
    return (alloc_map.snapshot(), alloc_map.device_usage())


# ------------------------------------------------------------------ discrete


def test_cpu_cores_are_picked_lowest_free_first_and_named() -> None:
    m = cores(4)
    assert m.allocate("k1", {"cpu": 2}) == {"cpu": {"0": D(1), "1": D(1)}}
    assert m.allocate("k2", {"cpu": D(1)}) == {"cpu": {"2": D(1)}}
    m.free("k1")
    assert m.allocate("k3", {"cpu": 3}) == {"cpu": {"0": D(1), "1": D(1), "3": D(1)}}
    assert m.available() == ResourceSlot({"cpu": 0})


def test_discrete_slots_take_whole_units_only() -> None:
    m = cores(4)
    with pytest.raises(InvalidAllocation, match="whole units") as info:
        m.allocate("k", {"cpu": D("1.5")})
    assert info.value.field == "cpu"
    assert m.owners() == []


def test_running_out_names_slot_requested_and_free() -> None:
    m = cores(2)
    m.allocate("k1", {"cpu": 1})
    with pytest.raises(InsufficientResource) as info:
        m.allocate("k2", {"cpu": 3})
    assert (info.value.slot, info.value.requested, info.value.free) == ("cpu", D(3), D(1))
    assert str(info.value) == "insufficient cpu: requested 3, free 1"


def test_pooled_memory_is_allocated_in_bytes() -> None:
    m = memory(4 * 1024**3)
    assert m.allocate("k", {"mem": 1024**3}) == {"mem": {"root": D(1024**3)}}
    assert m.available() == ResourceSlot({"mem": 3 * 1024**3})
    with pytest.raises(InsufficientResource):
        m.allocate("k2", {"mem": 3 * 1024**3 + 1})


def test_whole_gpus_spread_over_the_least_loaded_devices() -> None:
    m = gpus(3)
    first = m.allocate("a", {"cuda.device": 1})
    second = m.allocate("b", {"cuda.device": 2})
    assert first == {"cuda.device": {"gpu0": D(1)}}
    assert second == {"cuda.device": {"gpu1": D(1), "gpu2": D(1)}}


def test_zero_amounts_are_ignored_and_unoffered_slots_have_nothing_free() -> None:
    m = cores(2)
    assert m.allocate("k", {"cpu": 1, "tpu.device": 0}) == {"cpu": {"0": D(1)}}
    with pytest.raises(InsufficientResource, match="not offered") as info:
        m.allocate("k2", {"tpu.device": 1})
    assert info.value.free == 0


@pytest.mark.parametrize("amount", [D(-1), D("Infinity"), D("NaN"), True, 1.0, "1", None], ids=repr)
def test_malformed_amounts_are_rejected_without_change(amount: Any) -> None:
    m = cores(2)
    with pytest.raises(InvalidAllocation):
        m.allocate("k", {"cpu": amount})
    assert m.owners() == [] and m.allocated() == ResourceSlot({"cpu": 0})


def test_an_owner_holds_at_most_one_allocation() -> None:
    m = cores(4)
    m.allocate("k", {"cpu": 1})
    with pytest.raises(InvalidAllocation, match="already holds"):
        m.allocate("k", {"cpu": 1})
    with pytest.raises(InvalidAllocation, match="owner"):
        m.allocate("", {"cpu": 1})
    assert m.allocated() == ResourceSlot({"cpu": 1})


def test_free_returns_exactly_what_was_given_and_unknown_owners_free_nothing() -> None:
    m = cores(4)
    given = m.allocate("k", {"cpu": 2})
    assert m.allocation_of("k") == given
    assert m.free("k") == given
    assert m.free("k") == {}
    assert m.allocation_of("k") is None
    assert m.available() == m.capacity() == ResourceSlot({"cpu": 4})


def test_declared_slots_without_devices_report_zero_and_refuse_requests() -> None:
    m = DiscreteAllocMap([], slot_types={"cuda.device": SlotTypes.COUNT})
    assert m.capacity() == ResourceSlot({"cuda.device": 0})
    assert "cuda.device" in m.capacity()
    with pytest.raises(InsufficientResource):
        m.allocate("k", {"cuda.device": 1})


def test_a_device_listed_twice_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="twice"):
        DiscreteAllocMap([DeviceSlot("0", "cpu", SlotTypes.COUNT, D(1))] * 2)


# ---------------------------------------------------------------- fractional


def test_fractional_requests_round_down_to_the_quantum() -> None:
    m = shares("1")
    assert m.allocate("k", {"cuda.shares": D("0.555")}) == {"cuda.shares": {"gpu0": D("0.55")}}
    assert m.available() == ResourceSlot({"cuda.shares": D("0.45"), "cuda.device:10g-mig": 0})


def test_fractional_device_capacity_rounds_down_to_the_quantum() -> None:
    m = shares("2.559")
    assert m.capacity() == ResourceSlot({"cuda.shares": D("2.55")})


def test_a_request_below_one_quantum_is_rejected() -> None:
    m = shares("1")
    with pytest.raises(InvalidAllocation, match=r"multiples of 0\.01"):
        m.allocate("k", {"cuda.shares": D("0.009")})
    assert m.owners() == []


def test_small_requests_go_to_the_fullest_device_that_fits() -> None:
    m = shares("1", "1", "1")
    m.allocate("a", {"cuda.shares": D("0.5")})
    m.allocate("b", {"cuda.shares": D("0.3")})
    assert m.allocation_of("b") == {"cuda.shares": {"gpu0": D("0.3")}}
    m.allocate("c", {"cuda.shares": D("0.5")})
    assert m.allocation_of("c") == {"cuda.shares": {"gpu1": D("0.5")}}


def test_a_request_that_fits_one_device_is_never_split() -> None:
    m = shares("1", "1")
    m.allocate("a", {"cuda.shares": D("0.6")})
    m.allocate("b", {"cuda.shares": D("0.6")})
    with pytest.raises(FragmentedResource) as info:
        m.allocate("c", {"cuda.shares": D("0.5")})
    assert info.value.free == D("0.8")
    assert isinstance(info.value, InsufficientResource)


def test_requests_larger_than_a_device_spread_over_the_freest_devices() -> None:
    m = shares("1", "1", "1")
    m.allocate("a", {"cuda.shares": D("0.5")})
    placed = m.allocate("b", {"cuda.shares": D("1.5")})
    assert placed == {"cuda.shares": {"gpu1": D(1), "gpu2": D("0.5")}}
    with pytest.raises(InsufficientResource) as info:
        m.allocate("c", {"cuda.shares": D("1.01")})
    assert info.value.free == D(1)


def test_mig_slices_are_unique_whole_units_in_a_fractional_map() -> None:
    m = shares("1", mig=2)
    assert m.allocate("a", {"cuda.device:10g-mig": 1}) == {"cuda.device:10g-mig": {"MIG-0": D(1)}}
    with pytest.raises(InvalidAllocation, match="whole units"):
        m.allocate("b", {"cuda.device:10g-mig": D("0.5")})


@pytest.mark.parametrize(
    "request_",
    [
        {"cuda.shares": D("0.5"), "cuda.device": D(1)},
        {"cuda.shares": D("0.5"), "cuda.device:10g-mig": D(1)},
    ],
)
def test_one_kernel_cannot_mix_whole_and_fractional_gpus(request_: dict[str, D]) -> None:
    m = shares("1", mig=1)
    before = state(m)
    with pytest.raises(InvalidAllocation, match="cannot mix"):
        m.allocate("k", request_)
    assert state(m) == before


def test_mixing_is_rejected_even_on_a_map_without_the_other_slot() -> None:
    m = gpus(2)
    with pytest.raises(InvalidAllocation, match="cannot mix"):
        m.allocate("k", {"cuda.device": 1, "cuda.shares": D("0.5")})


def test_a_failed_multi_slot_request_changes_nothing() -> None:
    m = DiscreteAllocMap(
        [
            DeviceSlot("0", "cpu", SlotTypes.COUNT, D(1)),
            DeviceSlot("1", "cpu", SlotTypes.COUNT, D(1)),
            DeviceSlot("root", "mem", SlotTypes.BYTES, D(100)),
        ]
    )
    m.allocate("a", {"mem": 50})
    before = state(m)
    with pytest.raises(InsufficientResource, match="mem"):
        m.allocate("b", {"cpu": 2, "mem": 51})
    assert state(m) == before


# ------------------------------------------------------------ restore, apply


def test_snapshot_survives_json_and_restores_on_a_fresh_map() -> None:
    m = shares("1", "2", mig=1)
    m.allocate("a", {"cuda.shares": D("0.25")})
    m.allocate("b", {"cuda.shares": D("2.5")})
    m.allocate("c", {"cuda.device:10g-mig": 1})
    text = json.dumps(m.snapshot())
    fresh = shares("1", "2", mig=1)
    fresh.restore(json.loads(text))
    assert state(fresh) == state(m)
    assert fresh.allocation_of("b") == m.allocation_of("b")
    assert fresh.free("a") == {"cuda.shares": {"gpu0": D("0.25")}}


@pytest.mark.parametrize(
    ("snapshot", "error", "match"),
    [
        (
            {"version": 1, "kind": "fractional", "owners": {"x": {"cuda.shares": {"gpu9": "0.5"}}}},
            InvalidAllocation,
            "no device",
        ),
        (
            {"version": 1, "kind": "fractional", "owners": {"x": {"cuda.shares": {"gpu0": "1.5"}}}},
            InsufficientResource,
            "gpu0",
        ),
        (
            {
                "version": 1,
                "kind": "fractional",
                "owners": {"x": {"cuda.shares": {"gpu0": "0.005"}}},
            },
            InvalidAllocation,
            "whole units of 0.01",
        ),
        ({"version": 1, "kind": "discrete", "owners": {}}, InvalidAllocation, "discrete"),
        ({"version": 2, "kind": "fractional", "owners": {}}, InvalidAllocation, "version"),
        ({"version": 1, "kind": "fractional", "owners": []}, InvalidAllocation, "owners"),
        (
            {"version": 1, "kind": "fractional", "owners": {"x": {"cuda.shares": {"gpu0": "-1"}}}},
            InvalidAllocation,
            "non-negative",
        ),
        ("garbage", InvalidAllocation, "object"),
    ],
)
def test_a_bad_snapshot_is_rejected_and_the_map_kept(
    snapshot: object, error: type[Exception], match: str
) -> None:
    m = shares("1", "1")
    m.allocate("a", {"cuda.shares": D("0.7")})
    before = state(m)
    with pytest.raises(error, match=match):
        m.restore(snapshot)
    assert state(m) == before


def test_two_owners_overfilling_a_device_in_a_snapshot_are_rejected() -> None:
    snapshot = {
        "version": 1,
        "kind": "discrete",
        "owners": {"a": {"cpu": {"0": "1"}}, "b": {"cpu": {"0": "1"}}},
    }
    m = cores(2)
    with pytest.raises(InsufficientResource):
        m.restore(snapshot)
    assert m.owners() == []


def test_apply_records_a_recovered_kernel_and_checks_room() -> None:
    m = cores(2)
    m.apply("old", {"cpu": {"1": D(1)}})
    assert m.allocate("new", {"cpu": 1}) == {"cpu": {"0": D(1)}}
    with pytest.raises(InsufficientResource):
        m.apply("again", {"cpu": {"1": D(1)}})
    with pytest.raises(InvalidAllocation, match="whole units"):
        m.apply("half", {"cpu": {"0": D("0.5")}})
    assert m.owners() == ["old", "new"]


def test_allocation_json_helpers_round_trip_and_reject_garbage() -> None:
    allocation = {"cuda.shares": {"gpu0": D("0.25"), "gpu1": D(2)}, "mem": {"root": D(2**40)}}
    data = allocation_to_json(allocation)
    assert data == {"cuda.shares": {"gpu0": "0.25", "gpu1": "2"}, "mem": {"root": "1099511627776"}}
    assert allocation_from_json(json.loads(json.dumps(data))) == allocation
    assert allocation_total(allocation) == ResourceSlot({"cuda.shares": D("2.25"), "mem": D(2**40)})
    garbage: tuple[object, ...] = (
        [],
        {"cpu": []},
        {"cpu": {"0": "x"}},
        {"cpu": {"0": True}},
        {"": {}},
        {"cpu": {"": "1"}},
    )
    for bad in garbage:
        with pytest.raises(InvalidAllocation):
            allocation_from_json(bad)


# --------------------------------------------------------- ResourceAllocator


def agent() -> ResourceAllocator:
    return ResourceAllocator({"cpu": cores(4), "mem": memory(1000), "cuda": shares("1", "1")})


def test_the_allocator_routes_slots_by_device_name() -> None:
    allocator = agent()
    placed = allocator.allocate("k", ResourceSlot({"cpu": 2, "mem": 300, "cuda.shares": D("0.5")}))
    assert placed == {
        "cpu": {"cpu": {"0": D(1), "1": D(1)}},
        "mem": {"mem": {"root": D(300)}},
        "cuda": {"cuda.shares": {"gpu0": D("0.5")}},
    }
    assert allocator.allocated() == ResourceSlot({"cpu": 2, "mem": 300, "cuda.shares": D("0.5")})
    assert allocator.available() == ResourceSlot({"cpu": 2, "mem": 700, "cuda.shares": D("1.5")})
    assert allocator.allocation_of("k") == placed
    assert allocator.free("k") == placed
    assert allocator.allocated() == ResourceSlot()


def test_the_allocator_is_all_or_nothing_across_plugins() -> None:
    allocator = agent()
    allocator.allocate("a", {"cpu": 1, "mem": 100})
    before = allocator.snapshot()
    with pytest.raises(InsufficientResource, match=r"cuda\.shares"):
        allocator.allocate("b", {"cpu": 2, "mem": 100, "cuda.shares": D(3)})
    with pytest.raises(InsufficientResource, match="not offered"):
        allocator.allocate("b", {"cpu": 2, "tpu.device": 1})
    with pytest.raises(InvalidAllocation):
        allocator.allocate("a", {"cpu": 1})
    assert allocator.snapshot() == before
    assert allocator.owners() == ["a"]


def test_the_allocator_restores_every_map_after_a_restart() -> None:
    allocator = agent()
    allocator.allocate("a", {"cpu": 1, "mem": 100, "cuda.shares": D("1.2")})
    allocator.allocate("b", {"cpu": 2, "mem": 1})
    saved = json.loads(json.dumps(allocator.snapshot()))
    restarted = agent()
    restarted.restore(saved)
    assert restarted.snapshot() == allocator.snapshot()
    assert restarted.allocated() == allocator.allocated()
    broken = {**saved, "tpu": saved["cpu"]}
    with pytest.raises(InvalidAllocation, match="device name"):
        restarted.restore(broken)
    assert restarted.snapshot() == allocator.snapshot()


def test_a_failing_map_rolls_back_the_maps_restored_before_it() -> None:
    allocator = agent()
    allocator.allocate("a", {"cpu": 1})
    before = allocator.snapshot()
    bad = {
        **before,
        "cuda": {
            "version": 1,
            "kind": "fractional",
            "owners": {"x": {"cuda.shares": {"gpu0": "5"}}},
        },
    }
    bad["cpu"] = {"version": 1, "kind": "discrete", "owners": {"z": {"cpu": {"3": "1"}}}}
    with pytest.raises(InsufficientResource):
        allocator.restore(bad)
    assert allocator.snapshot() == before


def test_the_allocator_applies_recovered_kernels_all_or_nothing() -> None:
    allocator = agent()
    allocator.apply("old", {"cpu": {"cpu": {"3": D(1)}}, "mem": {"mem": {"root": D(10)}}})
    assert allocator.allocated() == ResourceSlot({"cpu": 1, "mem": 10})
    with pytest.raises(InsufficientResource):
        allocator.apply("bad", {"cpu": {"cpu": {"2": D(1)}}, "mem": {"mem": {"root": D(991)}}})
    with pytest.raises(InvalidAllocation, match="device name"):
        allocator.apply("bad", {"tpu": {}})
    assert allocator.owners() == ["old"]
    assert allocator.allocated() == ResourceSlot({"cpu": 1, "mem": 10})


@pytest.mark.parametrize("capacity", [D(-1), D("Infinity"), D("NaN")])
def test_a_device_needs_a_finite_non_negative_capacity(capacity: D) -> None:
    with pytest.raises(ValueError, match="capacity"):
        DiscreteAllocMap([DeviceSlot("0", "cpu", SlotTypes.COUNT, capacity)])
