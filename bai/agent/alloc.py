"""Allocation maps: which kernel holds how much of which device.

Every compute plugin describes its devices as :class:`DeviceSlot` records (one
device offers exactly one resource slot, e.g. a CPU core offers ``cpu`` with
capacity 1, a GPU offers ``cuda.device`` with capacity 1 or ``cuda.shares``
with its fractional capacity) and gets an :class:`AllocMap` over them.  The
agent keeps one map per plugin and drives them all through one
:class:`ResourceAllocator`, which routes each requested slot to the map of its
device name (the part of the slot name before the first dot).

An :data:`Allocation` is ``{slot name: {device id: Decimal amount}}`` with only
non-zero amounts; allocations belong to an *owner* (the kernel id as a string),
so freeing takes the owner, never amounts a caller might get wrong.

Guarantees of every map:

* No device is ever allocated beyond its capacity.
* All or nothing: a call that raises leaves the map exactly as it was, for a
  request naming several slots as much as for one.
* ``free(owner)`` releases exactly what ``allocate(owner, ...)`` (or
  :meth:`AllocMap.apply`) gave that owner, and returns it.
* ``restore(snapshot())`` on a map over the same devices reproduces every
  owner's allocation; snapshots are JSON-compatible (amounts are decimal
  strings), so they survive an agent restart on disk.
* A request may name at most one of the map's *exclusive slot types*
  (``fnmatch`` patterns such as ``cuda.device``, ``cuda.shares`` and
  ``cuda.device:*-mig``): one kernel cannot mix whole and fractional GPUs.
  Mixing raises :class:`InvalidAllocation`.
* Running out raises :class:`InsufficientResource` naming the slot, the
  amount requested and the amount free.

The two kinds of map differ in units and placement:

* :class:`DiscreteAllocMap` hands out whole units only (a request for 1.5
  ``cpu`` is rejected).  Units are taken from the devices with the most free
  units first, ties going to the earlier device, so CPU cores are picked
  lowest id first and GPUs are spread over the least loaded devices.
* :class:`FractionAllocMap` hands out ``COUNT`` slots in multiples of its
  quantum (0.01 by default); requests and device capacities are rounded down
  to the quantum, and a non-zero request below one quantum is rejected.  A
  request no larger than the biggest device must fit on ONE device: it goes
  to the device with the least free amount that still holds it (best fit,
  keeping whole devices free for large requests); when none does it raises
  :class:`FragmentedResource`.  A larger request is spread over the devices
  with the most free amount first.  ``UNIQUE`` and ``BYTES`` slots are
  allocated in whole units as in the discrete map.
"""

from __future__ import annotations

import decimal
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fnmatch import fnmatchcase
from fractions import Fraction
from typing import Any, ClassVar, Final

from bai.common.errors import BaiError, InvalidValue
from bai.common.slots import ResourceSlot
from bai.common.types import SlotTypes

__all__ = [
    "DEFAULT_QUANTUM",
    "AllocMap",
    "Allocation",
    "AllocationError",
    "DeviceSlot",
    "DiscreteAllocMap",
    "FractionAllocMap",
    "FragmentedResource",
    "InsufficientResource",
    "InvalidAllocation",
    "ResourceAllocator",
    "allocation_from_json",
    "allocation_to_json",
    "allocation_total",
    "device_name_of",
]

#: ``{slot name: {device id: amount}}``; only non-zero amounts appear.
Allocation = Mapping[str, Mapping[str, Decimal]]

#: The smallest fraction a fractional map hands out.
DEFAULT_QUANTUM: Final = Decimal("0.01")
#: Snapshots carry this version; other versions are rejected on restore.
SNAPSHOT_VERSION: Final = 1
#: Longer owner ids are rejected (kernel ids are 36 characters).
MAX_OWNER_LENGTH: Final = 256


class AllocationError(BaiError):
    """Base class of every error an allocation map raises on purpose."""


class InvalidAllocation(AllocationError, InvalidValue):
    """A request or a stored allocation the map cannot accept at all.

    Raised for malformed amounts (negative, infinite, not a whole unit where
    one is needed, below the quantum), a mix of exclusive slot types, unknown
    devices in an allocation being applied or restored, and an owner that
    already holds an allocation.
    """


class InsufficientResource(AllocationError):
    """Not enough of one slot is free.

    ``slot``, ``requested`` and ``free`` name the slot and both amounts; the
    message says the same for people.
    """

    def __init__(self, slot: str, requested: Decimal, free: Decimal, detail: str = "") -> None:
        self.slot = slot
        self.requested = requested
        self.free = free
        text = f"insufficient {slot}: requested {_text(requested)}, free {_text(free)}"
        super().__init__(f"{text} ({detail})" if detail else text)


class FragmentedResource(InsufficientResource):
    """Enough of a fractional slot is free in total, but not on any single device."""


@dataclass(frozen=True)
class DeviceSlot:
    """One device as an allocation map sees it: which slot it offers and how much.

    ``capacity`` is in the slot's unit (1 for a core or a whole GPU, the share
    count for ``*.shares``, bytes for ``mem``).
    """

    device_id: str
    slot_name: str
    slot_type: SlotTypes
    capacity: Decimal


def device_name_of(slot_name: str) -> str:
    """Return the device name of a slot: ``"cuda"`` for ``"cuda.shares"``, ``"cpu"`` for ``cpu``."""
    return slot_name.partition(".")[0]


def _text(amount: Decimal) -> str:
    """Return *amount* as a plain decimal string without exponent or trailing zeros."""
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def allocation_to_json(allocation: Allocation) -> dict[str, dict[str, str]]:
    """Return *allocation* with amounts as exact decimal strings."""
    return {
        slot: {device: _text(amount) for device, amount in per_device.items()}
        for slot, per_device in allocation.items()
    }


def allocation_from_json(data: object) -> dict[str, dict[str, Decimal]]:
    """Parse the output of :func:`allocation_to_json` (ints are accepted too).

    Raises :class:`InvalidAllocation` naming the offending value for anything
    but a ``{str: {str: non-negative finite decimal}}`` object.  Zero amounts
    are dropped.
    """
    if not isinstance(data, Mapping):
        raise InvalidAllocation("an allocation must be an object", value=data)
    out: dict[str, dict[str, Decimal]] = {}
    for slot, per_device in data.items():
        if not isinstance(slot, str) or not slot:
            raise InvalidAllocation("a slot name must be a non-empty string", value=slot)
        if not isinstance(per_device, Mapping):
            raise InvalidAllocation(
                "a slot's allocation must be an object", value=per_device, field=slot
            )
        parsed: dict[str, Decimal] = {}
        for device, raw in per_device.items():
            if not isinstance(device, str) or not device:
                raise InvalidAllocation(
                    "a device id must be a non-empty string", value=device, field=slot
                )
            amount = _json_amount(raw, f"{slot}.{device}")
            if amount:
                parsed[device] = amount
        if parsed:
            out[slot] = parsed
    return out


def _json_amount(raw: object, field: str) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        raise InvalidAllocation("an amount must be a decimal string", value=raw, field=field)
    if isinstance(raw, str) and len(raw) > 64:
        raise InvalidAllocation("an amount is at most 64 characters", value=raw, field=field)
    try:
        amount = Decimal(raw)
    except decimal.InvalidOperation:
        raise InvalidAllocation("not a decimal amount", value=raw, field=field) from None
    if not amount.is_finite() or amount < 0:
        raise InvalidAllocation("an amount must be finite and non-negative", value=raw, field=field)
    return amount


def allocation_total(allocation: Allocation) -> ResourceSlot:
    """Return the amount of each slot an allocation holds, summed over its devices."""
    return ResourceSlot(
        {slot: sum(per_device.values(), Decimal(0)) for slot, per_device in allocation.items()}
    )


def _request_amount(slot: str, raw: object) -> Decimal:
    """Check one requested amount: an int or Decimal, finite and non-negative."""
    if isinstance(raw, bool) or not isinstance(raw, int | Decimal):
        raise InvalidAllocation("an amount must be an int or a Decimal", value=raw, field=slot)
    amount = Decimal(raw)
    if not amount.is_finite() or amount < 0:
        raise InvalidAllocation("an amount must be finite and non-negative", value=raw, field=slot)
    return amount


def _check_owner(owner: object) -> str:
    if not isinstance(owner, str) or not owner or len(owner) > MAX_OWNER_LENGTH:
        raise InvalidAllocation(
            f"an owner must be a non-empty string of at most {MAX_OWNER_LENGTH} characters",
            value=owner,
        )
    return owner


# Internally every amount is an int number of the slot's unit ("ticks"), so the
# bookkeeping is exact and cheap; Decimals appear only at the interface.
_Ticks = dict[str, dict[str, int]]


class AllocMap:
    """The allocation state of one compute plugin's devices.

    Use :class:`DiscreteAllocMap` or :class:`FractionAllocMap`; this base
    class holds everything they share and is what the agent codes against.
    Each device id must be unique and each device offers one slot.
    *slot_types* declares slots up front (a plugin's slots even when it found
    no device), so :meth:`capacity` reports them as zero.
    """

    #: ``"discrete"`` or ``"fractional"``; stored in snapshots.
    kind: ClassVar[str]

    def __init__(
        self,
        devices: Iterable[DeviceSlot],
        *,
        exclusive_slot_types: Collection[str] = (),
        slot_types: Mapping[str, SlotTypes] | None = None,
    ) -> None:
        self._devices: dict[str, DeviceSlot] = {}
        # Declared slots without a device still show up, with zero capacity.
        self._slot_types: dict[str, SlotTypes] = dict(slot_types or {})
        # slot -> device -> ticks of capacity, devices in the plugin's order.
        self._capacity: _Ticks = {slot: {} for slot in self._slot_types}
        self._used: _Ticks = {slot: {} for slot in self._slot_types}
        self._owners: dict[str, _Ticks] = {}
        self._exclusive = tuple(exclusive_slot_types)
        for device in devices:
            if device.device_id in self._devices:
                raise ValueError(f"device {device.device_id!r} is listed twice")
            if not device.capacity.is_finite() or device.capacity < 0:
                raise ValueError(f"device {device.device_id!r} has capacity {device.capacity}")
            known_type = self._slot_types.setdefault(device.slot_name, device.slot_type)
            if known_type is not device.slot_type:
                raise ValueError(f"slot {device.slot_name!r} has devices of two slot types")
            self._devices[device.device_id] = device
            ticks = self._floor_ticks(device.slot_name, device.capacity)
            if device.slot_type is SlotTypes.UNIQUE:
                ticks = min(ticks, 1)
            self._capacity.setdefault(device.slot_name, {})[device.device_id] = ticks
            self._used.setdefault(device.slot_name, {})[device.device_id] = 0

    # ----------------------------------------------------------------- units

    def unit(self, slot: str) -> Decimal:
        """The smallest amount of *slot* this map hands out."""
        return Decimal(1)

    def _floor_ticks(self, slot: str, amount: Decimal) -> int:
        ratio = Fraction(amount) / Fraction(self.unit(slot))
        return ratio.numerator // ratio.denominator

    def _amount(self, slot: str, ticks: int) -> Decimal:
        with decimal.localcontext(prec=200):
            return +(Decimal(ticks) * self.unit(slot))

    def _request_ticks(self, slot: str, amount: Decimal) -> int:
        """Convert a requested amount into ticks, or raise InvalidAllocation."""
        ratio = Fraction(amount) / Fraction(self.unit(slot))
        if ratio.denominator != 1:
            raise InvalidAllocation(
                f"{slot} is allocated in whole units of {_text(self.unit(slot))}",
                value=amount,
                field=slot,
            )
        return ratio.numerator

    # ----------------------------------------------------------------- views

    def slot_types(self) -> dict[str, SlotTypes]:
        """The slots this map allocates, with their types."""
        return dict(self._slot_types)

    def devices(self) -> tuple[DeviceSlot, ...]:
        """The devices this map was built over, in order."""
        return tuple(self._devices.values())

    @property
    def exclusive_slot_types(self) -> tuple[str, ...]:
        """The patterns of slot names one request may not mix."""
        return self._exclusive

    def capacity(self) -> ResourceSlot:
        """The total of every slot (what the agent reports as available when idle)."""
        return self._totals(self._capacity)

    def allocated(self) -> ResourceSlot:
        """The amount of every slot held by some owner."""
        return self._totals(self._used)

    def available(self) -> ResourceSlot:
        """The amount of every slot still free: ``capacity() - allocated()``."""
        return self.capacity() - self.allocated()

    def device_usage(self) -> dict[str, dict[str, Decimal]]:
        """``{slot: {device id: amount held}}`` for every device, zeros included."""
        return {
            slot: {device: self._amount(slot, ticks) for device, ticks in per_device.items()}
            for slot, per_device in self._used.items()
        }

    def owners(self) -> list[str]:
        """The owners holding an allocation, oldest first."""
        return list(self._owners)

    def allocation_of(self, owner: str) -> Allocation | None:
        """What *owner* holds, or None if it holds nothing here."""
        held = self._owners.get(owner)
        return None if held is None else self._decimals(held)

    def _totals(self, ticks: _Ticks) -> ResourceSlot:
        return ResourceSlot(
            {
                slot: self._amount(slot, sum(per_device.values()))
                for slot, per_device in ticks.items()
            }
        )

    def _decimals(self, ticks: _Ticks) -> dict[str, dict[str, Decimal]]:
        return {
            slot: {device: self._amount(slot, t) for device, t in per_device.items()}
            for slot, per_device in ticks.items()
        }

    # ------------------------------------------------------------- mutation

    def allocate(self, owner: str, requested: Mapping[str, Decimal | int]) -> Allocation:
        """Give *owner* the *requested* amount of each slot and return the placement.

        Zero amounts are ignored, so a request may carry every slot of the
        agent.  A non-zero slot this map does not offer raises
        :class:`InsufficientResource` with ``free == 0``.  Raises
        :class:`InvalidAllocation` for malformed amounts, a mix of exclusive
        slot types, or an owner already holding an allocation here; nothing
        changes when anything is raised.
        """
        owner = _check_owner(owner)
        if owner in self._owners:
            raise InvalidAllocation("this owner already holds an allocation", value=owner)
        wanted = self._parse_request(requested)
        placement: _Ticks = {}
        for slot, ticks in wanted.items():
            placement[slot] = self._place(slot, ticks, self._free_of(slot))
        self._commit(owner, placement)
        return self._decimals(placement)

    def free(self, owner: str) -> Allocation:
        """Release everything *owner* holds and return it; an unknown owner frees nothing."""
        held = self._owners.pop(owner, None)
        if held is None:
            return {}
        for slot, per_device in held.items():
            used = self._used[slot]
            for device, ticks in per_device.items():
                used[device] -= ticks
        return self._decimals(held)

    def apply(self, owner: str, allocation: Allocation) -> None:
        """Record that *owner* already holds *allocation* (a kernel found again after a restart).

        Raises :class:`InvalidAllocation` for unknown slots or devices, amounts
        that are not whole units, an exclusive mix or an owner already holding
        something, and :class:`InsufficientResource` when a device lacks the
        room; nothing changes when anything is raised.
        """
        owner = _check_owner(owner)
        if owner in self._owners:
            raise InvalidAllocation("this owner already holds an allocation", value=owner)
        placement = self._parse_placement(allocation)
        for slot, per_device in placement.items():
            free = self._free_of(slot)
            for device, ticks in per_device.items():
                if ticks > free[device]:
                    raise InsufficientResource(
                        slot,
                        self._amount(slot, ticks),
                        self._amount(slot, free[device]),
                        f"on device {device}",
                    )
        self._commit(owner, placement)

    def snapshot(self) -> dict[str, Any]:
        """Return every owner's allocation as JSON-compatible data."""
        return {
            "version": SNAPSHOT_VERSION,
            "kind": self.kind,
            "owners": {
                owner: allocation_to_json(self._decimals(held))
                for owner, held in self._owners.items()
            },
        }

    def restore(self, state: object) -> None:
        """Replace all allocations by those of a :meth:`snapshot`.

        The snapshot must come from a map of the same kind; every owner's
        allocation is checked as by :meth:`apply`, and on any error the map
        keeps its current state.
        """
        if not isinstance(state, Mapping):
            raise InvalidAllocation("a snapshot must be an object", value=state)
        if state.get("version") != SNAPSHOT_VERSION:
            raise InvalidAllocation(
                f"unsupported snapshot version (expected {SNAPSHOT_VERSION})",
                value=state.get("version"),
                field="version",
            )
        if state.get("kind") != self.kind:
            raise InvalidAllocation(
                f"the snapshot is of a {state.get('kind')} map, this map is {self.kind}",
                value=state.get("kind"),
                field="kind",
            )
        owners = state.get("owners")
        if not isinstance(owners, Mapping):
            raise InvalidAllocation("owners must be an object", value=owners, field="owners")
        scratch = self._empty_like()
        for owner, allocation in owners.items():
            scratch.apply(owner, allocation_from_json(allocation))
        self._used = scratch._used
        self._owners = scratch._owners

    def _empty_like(self) -> AllocMap:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._used = {
            slot: dict.fromkeys(per_device, 0) for slot, per_device in self._used.items()
        }
        clone._owners = {}
        return clone

    # ------------------------------------------------------------- internals

    def _free_of(self, slot: str) -> dict[str, int]:
        used = self._used[slot]
        return {device: cap - used[device] for device, cap in self._capacity[slot].items()}

    def _commit(self, owner: str, placement: _Ticks) -> None:
        held: _Ticks = {}
        for slot, per_device in placement.items():
            used = self._used[slot]
            nonzero = {device: ticks for device, ticks in per_device.items() if ticks}
            for device, ticks in nonzero.items():
                used[device] += ticks
            if nonzero:
                held[slot] = nonzero
        self._owners[owner] = held

    def _check_exclusive(self, slots: Iterable[str]) -> None:
        if not self._exclusive:
            return
        mixed = [s for s in slots if any(fnmatchcase(s, p) for p in self._exclusive)]
        if len(mixed) > 1:
            raise InvalidAllocation(
                "one kernel cannot mix the slot types " + " and ".join(mixed), value=mixed
            )

    def _parse_request(self, requested: Mapping[str, Decimal | int]) -> dict[str, int]:
        if not isinstance(requested, Mapping):
            raise InvalidAllocation("a request must map slot names to amounts", value=requested)
        amounts: dict[str, Decimal] = {}
        for slot, raw in requested.items():
            amount = _request_amount(slot, raw)
            if amount:
                amounts[slot] = amount
        self._check_exclusive(amounts)
        wanted: dict[str, int] = {}
        for slot, amount in amounts.items():
            if slot not in self._slot_types:
                raise InsufficientResource(slot, amount, Decimal(0), "not offered by this agent")
            wanted[slot] = self._request_ticks(slot, amount)
        return wanted

    def _parse_placement(self, allocation: Allocation) -> _Ticks:
        if not isinstance(allocation, Mapping):
            raise InvalidAllocation("an allocation must be an object", value=allocation)
        placement: _Ticks = {}
        for slot, per_device in allocation.items():
            if slot not in self._slot_types:
                raise InvalidAllocation("this map has no such slot", value=slot)
            if not isinstance(per_device, Mapping):
                raise InvalidAllocation(
                    "a slot's allocation must be an object", value=per_device, field=slot
                )
            ticks_of: dict[str, int] = {}
            for device, raw in per_device.items():
                if device not in self._capacity[slot]:
                    raise InvalidAllocation(
                        f"no device of slot {slot} has this id", value=device, field=slot
                    )
                amount = _json_amount(raw, f"{slot}.{device}")
                ticks = Fraction(amount) / Fraction(self.unit(slot))
                if ticks.denominator != 1:
                    raise InvalidAllocation(
                        f"{slot} is allocated in whole units of {_text(self.unit(slot))}",
                        value=raw,
                        field=f"{slot}.{device}",
                    )
                if ticks:
                    ticks_of[device] = ticks.numerator
            if ticks_of:
                placement[slot] = ticks_of
        self._check_exclusive(placement)
        return placement

    def _place(self, slot: str, ticks: int, free: dict[str, int]) -> dict[str, int]:
        """Choose devices for *ticks* units of *slot* given each device's free ticks."""
        return self._place_spread(slot, ticks, free)

    def _place_spread(self, slot: str, ticks: int, free: dict[str, int]) -> dict[str, int]:
        """Take units from the devices with the most free first (earlier device on ties)."""
        total = sum(free.values())
        if ticks > total:
            raise InsufficientResource(slot, self._amount(slot, ticks), self._amount(slot, total))
        order = sorted(free, key=lambda device: -free[device])
        placement: dict[str, int] = {}
        remaining = ticks
        for device in order:
            if remaining == 0:
                break
            take = min(free[device], remaining)
            if take:
                placement[device] = take
                remaining -= take
        return placement


class DiscreteAllocMap(AllocMap):
    """Whole units only: CPU cores, pooled memory bytes, whole accelerators, MIG slices."""

    kind: ClassVar[str] = "discrete"


class FractionAllocMap(AllocMap):
    """Fractional ``COUNT`` slots in multiples of *quantum* (see the module docstring).

    Requested amounts are rounded down to the quantum; a non-zero request
    smaller than one quantum raises :class:`InvalidAllocation`.
    """

    kind: ClassVar[str] = "fractional"

    def __init__(
        self,
        devices: Iterable[DeviceSlot],
        *,
        exclusive_slot_types: Collection[str] = (),
        slot_types: Mapping[str, SlotTypes] | None = None,
        quantum: Decimal = DEFAULT_QUANTUM,
    ) -> None:
        if not quantum.is_finite() or quantum <= 0:
            raise ValueError(f"the quantum must be a positive finite decimal, got {quantum}")
        self._quantum = quantum
        super().__init__(devices, exclusive_slot_types=exclusive_slot_types, slot_types=slot_types)

    @property
    def quantum(self) -> Decimal:
        """The smallest fraction handed out for ``COUNT`` slots."""
        return self._quantum

    def unit(self, slot: str) -> Decimal:
        if self._slot_types.get(slot) is SlotTypes.COUNT:
            return self._quantum
        return Decimal(1)

    def _request_ticks(self, slot: str, amount: Decimal) -> int:
        if self._slot_types[slot] is not SlotTypes.COUNT:
            return super()._request_ticks(slot, amount)
        ticks = self._floor_ticks(slot, amount)
        if ticks == 0:
            raise InvalidAllocation(
                f"{slot} is allocated in multiples of {_text(self._quantum)}",
                value=amount,
                field=slot,
            )
        return ticks

    def _place(self, slot: str, ticks: int, free: dict[str, int]) -> dict[str, int]:
        if self._slot_types[slot] is not SlotTypes.COUNT:
            return self._place_spread(slot, ticks, free)
        largest = max(self._capacity[slot].values(), default=0)
        if ticks > largest:
            return self._place_spread(slot, ticks, free)
        fitting = [device for device, room in free.items() if room >= ticks]
        if not fitting:
            total = sum(free.values())
            amount, free_total = self._amount(slot, ticks), self._amount(slot, total)
            if ticks <= total:
                raise FragmentedResource(
                    slot, amount, free_total, "no single device has that much free"
                )
            raise InsufficientResource(slot, amount, free_total)
        best = min(fitting, key=lambda device: free[device])
        return {best: ticks}


class ResourceAllocator:
    """All of an agent's allocation maps, used as one.

    *maps* is keyed by device name (the plugin's key: ``"cpu"``, ``"mem"``,
    ``"cuda"``, a mock's slot name); each requested slot goes to the map of
    its :func:`device_name_of`.  Every operation has the guarantees of
    :class:`AllocMap` across all maps at once: a request that fails on one map
    leaves every map unchanged.
    """

    def __init__(self, maps: Mapping[str, AllocMap]) -> None:
        self._maps = dict(maps)

    @property
    def maps(self) -> Mapping[str, AllocMap]:
        """The maps by device name."""
        return dict(self._maps)

    def slot_types(self) -> dict[str, SlotTypes]:
        """Every slot of every map, with its type."""
        merged: dict[str, SlotTypes] = {}
        for alloc_map in self._maps.values():
            merged.update(alloc_map.slot_types())
        return merged

    def capacity(self) -> ResourceSlot:
        """The agent's total of every slot."""
        return sum((m.capacity() for m in self._maps.values()), ResourceSlot())

    def allocated(self) -> ResourceSlot:
        """The occupied amount of every slot (what heartbeats report as occupied)."""
        return sum((m.allocated() for m in self._maps.values()), ResourceSlot())

    def available(self) -> ResourceSlot:
        """The free amount of every slot."""
        return sum((m.available() for m in self._maps.values()), ResourceSlot())

    def owners(self) -> list[str]:
        """Every owner holding something in some map."""
        seen: dict[str, None] = {}
        for alloc_map in self._maps.values():
            seen.update(dict.fromkeys(alloc_map.owners()))
        return list(seen)

    def allocation_of(self, owner: str) -> dict[str, Allocation]:
        """What *owner* holds, by device name (maps where it holds nothing are left out)."""
        out: dict[str, Allocation] = {}
        for key, alloc_map in self._maps.items():
            held = alloc_map.allocation_of(owner)
            if held is not None:
                out[key] = held
        return out

    def _split(self, requested: Mapping[str, Decimal | int]) -> dict[str, dict[str, Decimal]]:
        if not isinstance(requested, Mapping):
            raise InvalidAllocation("a request must map slot names to amounts", value=requested)
        parts: dict[str, dict[str, Decimal]] = {key: {} for key in self._maps}
        for slot, raw in requested.items():
            if not isinstance(slot, str):
                raise InvalidAllocation("a slot name must be a string", value=slot)
            amount = _request_amount(slot, raw)
            if not amount:
                continue
            key = device_name_of(slot)
            if key not in parts:
                raise InsufficientResource(slot, amount, Decimal(0), "not offered by this agent")
            parts[key][slot] = amount
        return parts

    def allocate(self, owner: str, requested: Mapping[str, Decimal | int]) -> dict[str, Allocation]:
        """Allocate *requested* (e.g. a kernel's ResourceSlot) over all maps, all or nothing.

        Returns the placement by device name, with an entry for every map
        (empty where nothing was asked of it; such a map keeps no record of
        the owner).  Raises as :meth:`AllocMap.allocate` does.
        """
        owner = _check_owner(owner)
        if any(owner in m.owners() for m in self._maps.values()):
            raise InvalidAllocation("this owner already holds an allocation", value=owner)
        parts = self._split(requested)
        done: list[AllocMap] = []
        result: dict[str, Allocation] = {}
        try:
            for key, part in parts.items():
                alloc_map = self._maps[key]
                if not part:
                    # A map asked for nothing keeps no record of the owner.
                    result[key] = {}
                    continue
                result[key] = alloc_map.allocate(owner, part)
                done.append(alloc_map)
        except BaseException:
            for alloc_map in done:
                alloc_map.free(owner)
            raise
        return result

    def apply(self, owner: str, allocations: Mapping[str, Allocation]) -> None:
        """Record an allocation found again after a restart, all or nothing.

        *allocations* is by device name as :meth:`allocate` returns it; the
        checks are those of :meth:`AllocMap.apply`.
        """
        owner = _check_owner(owner)
        if not isinstance(allocations, Mapping):
            raise InvalidAllocation("allocations must be an object", value=allocations)
        unknown = [key for key in allocations if key not in self._maps]
        if unknown:
            raise InvalidAllocation("no compute plugin has this device name", value=unknown[0])
        if any(owner in m.owners() for m in self._maps.values()):
            raise InvalidAllocation("this owner already holds an allocation", value=owner)
        done: list[AllocMap] = []
        try:
            for key, allocation in allocations.items():
                self._maps[key].apply(owner, allocation)
                done.append(self._maps[key])
        except BaseException:
            for alloc_map in done:
                alloc_map.free(owner)
            raise

    def free(self, owner: str) -> dict[str, Allocation]:
        """Release everything *owner* holds in every map; returns it by device name."""
        freed: dict[str, Allocation] = {}
        for key, alloc_map in self._maps.items():
            held = alloc_map.free(owner)
            if held:
                freed[key] = held
        return freed

    def snapshot(self) -> dict[str, Any]:
        """Every map's :meth:`AllocMap.snapshot`, by device name."""
        return {key: alloc_map.snapshot() for key, alloc_map in self._maps.items()}

    def restore(self, state: object) -> None:
        """Restore every map from :meth:`snapshot` output, all or nothing.

        A map the snapshot does not mention is emptied; a device name the
        agent no longer has raises :class:`InvalidAllocation`.
        """
        if not isinstance(state, Mapping):
            raise InvalidAllocation("a snapshot must be an object", value=state)
        unknown = [key for key in state if key not in self._maps]
        if unknown:
            raise InvalidAllocation("no compute plugin has this device name", value=unknown[0])
        previous = {key: alloc_map.snapshot() for key, alloc_map in self._maps.items()}
        empty = {"version": SNAPSHOT_VERSION, "owners": {}}
        try:
            for key, alloc_map in self._maps.items():
                alloc_map.restore(state.get(key, {**empty, "kind": alloc_map.kind}))
        except BaseException:
            for key, alloc_map in self._maps.items():
                alloc_map.restore(previous[key])
            raise
