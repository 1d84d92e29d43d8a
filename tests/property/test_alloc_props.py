"""Properties of allocation maps under random allocate/free sequences."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bai.agent.alloc import (
    AllocationError,
    AllocMap,
    DeviceSlot,
    DiscreteAllocMap,
    FractionAllocMap,
    ResourceAllocator,
    allocation_total,
)
from bai.common.slots import ResourceSlot
from bai.common.types import SlotTypes

EXCLUSIVE = ("acc.device", "acc.shares", "acc.device:*-mig")
OWNERS = [f"k{i}" for i in range(5)]


@dataclass
class Op:
    """Allocate *request* to *owner*, or free *owner* when *request* is None."""

    owner: str
    request: dict[str, Decimal] | None


def amounts(max_units: int, scale: Decimal) -> st.SearchStrategy[Decimal]:
    """Amounts mostly in steps of *scale*, sometimes off the step (rounding and errors)."""
    on_step = st.integers(1, max_units).map(lambda n: Decimal(n) * scale)
    off_step = st.integers(0, max_units * 1000).map(lambda n: Decimal(n) * scale / 1000)
    return st.one_of(on_step, on_step, on_step, off_step)


def ops(slots: dict[str, tuple[int, Decimal]]) -> st.SearchStrategy[list[Op]]:
    def one_slot(slot: str) -> st.SearchStrategy[dict[str, Decimal]]:
        units, scale = slots[slot]
        return amounts(units, scale).map(lambda amount: {slot: amount})

    any_slots = st.dictionaries(
        st.sampled_from(sorted(slots)),
        st.one_of(*(amounts(units, scale) for units, scale in slots.values())),
        min_size=1,
        max_size=len(slots),
    )
    # The first slot listed is the map's main one; ask for it most often.
    main = next(iter(slots))
    single = st.sampled_from([main, *slots]).flatmap(one_slot)
    request = st.one_of(single, single, any_slots)
    # Three allocations for each free keeps the maps busy.
    maybe_request = st.one_of(request, request, request, st.none())
    op = st.builds(Op, st.sampled_from(OWNERS), maybe_request)
    return st.lists(op, max_size=30)


def devices(slot: str, slot_type: SlotTypes, capacities: list[Decimal]) -> list[DeviceSlot]:
    return [DeviceSlot(f"{slot}-{i}", slot, slot_type, cap) for i, cap in enumerate(capacities)]


@st.composite
def discrete_maps(draw: st.DrawFn) -> DiscreteAllocMap:
    cores = draw(st.integers(0, 8))
    gpus = draw(st.lists(st.integers(1, 2), min_size=1, max_size=4))
    mem = draw(st.integers(0, 20_000))
    slots = devices("cpu", SlotTypes.COUNT, [Decimal(1)] * cores)
    slots += devices("acc.device", SlotTypes.COUNT, [Decimal(g) for g in gpus])
    slots += devices("mem", SlotTypes.BYTES, [Decimal(mem)])
    return DiscreteAllocMap(slots, exclusive_slot_types=EXCLUSIVE)


@st.composite
def fraction_maps(draw: st.DrawFn) -> FractionAllocMap:
    shares = draw(st.lists(st.integers(0, 300), min_size=1, max_size=4))
    migs = draw(st.integers(0, 2))
    slots = devices("acc.shares", SlotTypes.COUNT, [Decimal(s) / 100 for s in shares])
    slots += devices("acc.device:1g-mig", SlotTypes.UNIQUE, [Decimal(1)] * migs)
    return FractionAllocMap(slots, exclusive_slot_types=EXCLUSIVE)


DISCRETE_SLOTS = {
    "cpu": (3, Decimal(1)),
    "acc.device": (3, Decimal(1)),
    "mem": (3000, Decimal(1)),
    "acc.shares": (1, Decimal("0.5")),
}
FRACTION_SLOTS = {
    "acc.shares": (250, Decimal("0.01")),
    "acc.device:1g-mig": (2, Decimal(1)),
    "acc.device": (1, Decimal(1)),
}


def check_invariants(alloc_map: AllocMap) -> None:
    usage = alloc_map.device_usage()
    for device in alloc_map.devices():
        used = usage[device.slot_name][device.device_id]
        assert Decimal(0) <= used <= device.capacity
    held: dict[str, dict[str, Decimal]] = {}
    for owner in alloc_map.owners():
        allocation = alloc_map.allocation_of(owner)
        assert allocation is not None
        for slot, per_device in allocation.items():
            for device_id, amount in per_device.items():
                assert amount > 0
                held.setdefault(slot, {})
                held[slot][device_id] = held[slot].get(device_id, Decimal(0)) + amount
    for slot, per_device in usage.items():
        for device_id, used in per_device.items():
            assert held.get(slot, {}).get(device_id, Decimal(0)) == used
    assert alloc_map.allocated() + alloc_map.available() == alloc_map.capacity()


def run(alloc_map: AllocMap, sequence: list[Op]) -> None:
    for op in sequence:
        before = alloc_map.snapshot()
        if op.request is None:
            expected = alloc_map.allocation_of(op.owner) or {}
            assert alloc_map.free(op.owner) == expected
            assert alloc_map.allocation_of(op.owner) is None
        else:
            try:
                placed = alloc_map.allocate(op.owner, op.request)
            except AllocationError:
                assert alloc_map.snapshot() == before
            else:
                assert alloc_map.allocation_of(op.owner) == placed
                total = allocation_total(placed)
                for slot, amount in op.request.items():
                    granted = total[slot] if slot in total else Decimal(0)
                    # Never more than asked; less only by rounding down to the unit.
                    assert granted <= amount
                    assert amount - granted < alloc_map.unit(slot)
        check_invariants(alloc_map)
        restored = type(alloc_map)(alloc_map.devices(), exclusive_slot_types=EXCLUSIVE)
        restored.restore(json.loads(json.dumps(alloc_map.snapshot())))
        assert restored.snapshot() == alloc_map.snapshot()
        assert restored.device_usage() == alloc_map.device_usage()


@settings(max_examples=250, deadline=None)
@given(discrete_maps(), ops(DISCRETE_SLOTS))
def test_discrete_maps_never_over_allocate_and_restore_exactly(
    alloc_map: DiscreteAllocMap, sequence: list[Op]
) -> None:
    run(alloc_map, sequence)


@settings(max_examples=250, deadline=None)
@given(fraction_maps(), ops(FRACTION_SLOTS))
def test_fraction_maps_never_over_allocate_and_restore_exactly(
    alloc_map: FractionAllocMap, sequence: list[Op]
) -> None:
    run(alloc_map, sequence)


@settings(max_examples=200, deadline=None)
@given(
    discrete_maps(),
    fraction_maps(),
    ops({**DISCRETE_SLOTS, **FRACTION_SLOTS, "tpu.device": (1, Decimal(1))}),
)
def test_the_allocator_is_all_or_nothing_across_maps(
    host: DiscreteAllocMap, accelerator: FractionAllocMap, sequence: list[Op]
) -> None:
    # One request spans three maps, as cpu, mem and an accelerator plugin would.
    allocator = ResourceAllocator(
        {
            "cpu": DiscreteAllocMap([d for d in host.devices() if d.slot_name == "cpu"]),
            "mem": DiscreteAllocMap([d for d in host.devices() if d.slot_name == "mem"]),
            "acc": accelerator,
        }
    )
    capacity = allocator.capacity()
    for op in sequence:
        before = allocator.snapshot()
        if op.request is None:
            expected = allocator.allocation_of(op.owner)
            assert allocator.free(op.owner) == expected
            continue
        try:
            placed = allocator.allocate(op.owner, op.request)
        except AllocationError:
            assert allocator.snapshot() == before
            continue
        total = ResourceSlot()
        for part in placed.values():
            total = total + allocation_total(part)
        assert total.fits_in(ResourceSlot(op.request))
        assert allocator.allocated().fits_in(capacity)
        assert allocator.allocated() + allocator.available() == capacity
    saved: Any = json.loads(json.dumps(allocator.snapshot()))
    fresh = ResourceAllocator(
        {
            key: type(m)(m.devices(), exclusive_slot_types=m.exclusive_slot_types)
            for key, m in allocator.maps.items()
        }
    )
    fresh.restore(saved)
    assert fresh.snapshot() == allocator.snapshot()
    assert fresh.allocated() == allocator.allocated()
