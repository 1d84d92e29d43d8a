"""The limits arithmetic enqueue, the dispatcher and check-presets share (bai.manager.policy)."""

from __future__ import annotations

from decimal import Decimal

from bai.common.slots import ResourceSlot
from bai.common.types import SlotTypes
from bai.manager.policy import (
    cap_limits,
    excess,
    free_capacity,
    keypair_limits,
    least,
    restrict,
    slot_types_of,
    subtract,
    usable_groups,
)

INF = Decimal("Infinity")


def test_known_slots_join_what_plugins_declare_and_capacities_report() -> None:
    plugins = [
        {"cuda": {"slot_types": {"cuda.mem": "bytes", "cpu": "bytes", "bad": "nonsense"}}},
        "not a map",
        {"x": {"slot_types": "not a map"}},
    ]
    known = slot_types_of(plugins, [{"cpu": 1, "tpu.device": 1, "zz": 1}])
    # Intrinsic first (their type is never redeclared), then the others by name.
    assert list(known) == ["cpu", "mem", "cuda.mem", "tpu.device", "zz"]
    assert known["cpu"] is SlotTypes.COUNT
    assert known["cuda.mem"] is SlotTypes.BYTES
    assert known["tpu.device"] is SlotTypes.COUNT
    assert known["zz"] is SlotTypes.COUNT
    assert slot_types_of([]) == {"cpu": SlotTypes.COUNT, "mem": SlotTypes.BYTES}


def test_keypair_limits_fill_what_the_policy_leaves_out() -> None:
    named = ResourceSlot({"cpu": 4, "x.device": 1})
    limited = keypair_limits(named, "LIMITED", ["cpu", "mem"])
    assert limited == ResourceSlot({"cpu": 4, "mem": 0, "x.device": 1})
    unlimited = keypair_limits(named, "UNLIMITED", ["cpu", "mem"])
    assert unlimited == ResourceSlot({"cpu": 4, "mem": INF, "x.device": 1})


def test_caps_limit_only_what_they_name() -> None:
    assert cap_limits(None, ["cpu"]) is None
    assert cap_limits(ResourceSlot(), ["cpu"]) is None
    assert cap_limits(ResourceSlot({"mem": 5}), ["cpu", "mem"]) == ResourceSlot(
        {"cpu": INF, "mem": 5}
    )


def test_excess_lists_each_slot_over_its_limit() -> None:
    total = ResourceSlot({"cpu": 3, "mem": 1})
    assert excess(total, ResourceSlot({"cpu": 2, "mem": 1})) == "cpu (requesting 3, limit 2)"


def test_remaining_capacity() -> None:
    known = ["cpu", "mem"]
    limits = restrict(known, ResourceSlot({"cpu": 4, "gpu": 1}), INF)
    assert limits == {"cpu": Decimal(4), "mem": INF}
    used = restrict(known, {"cpu": Decimal(5)}, Decimal(0))
    assert subtract(limits, used) == {"cpu": Decimal(0), "mem": INF}
    free = free_capacity({"cpu": Decimal(8), "mem": Decimal(2)}, {"cpu": Decimal(9)})
    assert free == {"cpu": Decimal(0), "mem": Decimal(2)}
    assert least({"cpu": Decimal(1), "mem": INF}, {"cpu": Decimal(3), "mem": Decimal(7)}) == {
        "cpu": Decimal(1),
        "mem": Decimal(7),
    }


def test_usable_groups() -> None:
    allowed = {"b": True, "a": True, "private": False}
    assert usable_groups(allowed, None, public_only=False) == ["a", "b", "private"]
    assert usable_groups(allowed, None, public_only=True) == ["a", "b"]
    assert usable_groups(allowed, "private", public_only=True) == ["private"]
    assert usable_groups(allowed, "elsewhere", public_only=False) is None
    assert usable_groups({}, None, public_only=False) == []
