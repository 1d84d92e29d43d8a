"""Pure resource-policy arithmetic: the slots the cluster knows, what policies allow, what is left.

Enqueue (:mod:`bai.manager.sessions.enqueue`), the dispatcher
(:mod:`bai.manager.scheduler.dispatcher`) and ``/resource/check-presets``
(:mod:`bai.manager.api.resource`) read their rows and apply these rules, so
that they cannot disagree on what a keypair, a project or a domain may still
use, nor on which resource groups a request may use.  No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Final

from bai.common.slots import (
    DEFAULT_SLOT_TYPES,
    INTRINSIC_SLOT_TYPES,
    DefaultForUnspecified,
    ResourceSlot,
)
from bai.common.types import SlotTypes

__all__ = [
    "Slots",
    "add",
    "cap_limits",
    "excess",
    "fits",
    "free_capacity",
    "keypair_limits",
    "least",
    "restrict",
    "slot_types_of",
    "subtract",
    "usable_groups",
]

#: Amounts per slot name, over exactly the slots one answer lists.
Slots = dict[str, Decimal]

_ZERO: Final = Decimal(0)
_INFINITY: Final = Decimal("Infinity")


def slot_types_of(
    plugin_infos: Iterable[Any], reported: Iterable[Iterable[str]] = ()
) -> dict[str, SlotTypes]:
    """The slots some agents give the cluster, by type: the intrinsic ``cpu`` and ``mem``
    first, then (sorted) every other slot their compute plugins declare (*plugin_infos*,
    each agent's ``compute_plugins``) or their capacity names (*reported*, each agent's
    ``available_slots``), typed as a plugin declares it, else as in ``DEFAULT_SLOT_TYPES``
    (``count`` for slots it does not list)."""
    declared: dict[str, SlotTypes] = {}
    for plugins in plugin_infos:
        if not isinstance(plugins, Mapping):
            continue
        for info in plugins.values():
            kinds = info.get("slot_types") if isinstance(info, Mapping) else None
            if not isinstance(kinds, Mapping):
                continue
            for slot, kind in kinds.items():
                try:
                    declared.setdefault(str(slot), SlotTypes(kind))
                except ValueError:
                    continue
    names = set(declared) | {str(name) for slots in reported for name in slots}
    known: dict[str, SlotTypes] = dict(INTRINSIC_SLOT_TYPES)
    for name in sorted(names - set(known)):
        known[name] = (
            declared[name] if name in declared else DEFAULT_SLOT_TYPES.get(name, SlotTypes.COUNT)
        )
    return known


def keypair_limits(
    total_resource_slots: ResourceSlot,
    default_for_unspecified: DefaultForUnspecified | str,
    slot_names: Iterable[str],
) -> ResourceSlot:
    """A keypair policy's limit for each of *slot_names* (and every slot the policy names).

    A slot the policy does not name is 0 under ``LIMITED`` and infinite under
    ``UNLIMITED``.
    """
    named = dict(total_resource_slots.items())
    unlimited = DefaultForUnspecified(default_for_unspecified) is DefaultForUnspecified.UNLIMITED
    fill = _INFINITY if unlimited else _ZERO
    return ResourceSlot({**{slot: fill for slot in slot_names}, **named})


def cap_limits(cap: object, slot_names: Iterable[str]) -> ResourceSlot | None:
    """A project's or domain's ``total_resource_slots`` as limits (None when it caps nothing).

    A cap limits only the slots it names; the others of *slot_names* are infinite.
    """
    if not isinstance(cap, ResourceSlot) or not len(cap):
        return None
    return ResourceSlot({**{slot: _INFINITY for slot in slot_names}, **dict(cap.items())})


def excess(total: ResourceSlot, limit: ResourceSlot) -> str:
    """The slots of *total* over *limit*, each with both amounts, for an error message."""
    parts = [
        f"{key} (requesting {total.get(key, _ZERO)}, limit {limit.get(key, _ZERO)})"
        for key in sorted(set(total) | set(limit))
        if total.get(key, _ZERO) > limit.get(key, _ZERO)
    ]
    return ", ".join(parts)


def usable_groups(
    allowed: Mapping[str, bool], requested: str | None, *, public_only: bool
) -> list[str] | None:
    """The resource groups a request considers, from *allowed* (name -> whether it is public).

    The *requested* one when it is allowed (None when it is not); otherwise
    every allowed one by name, only the public ones with *public_only*.
    """
    if requested is not None:
        return [requested] if requested in allowed else None
    return sorted(name for name, public in allowed.items() if public or not public_only)


def restrict(known: Iterable[str], slots: Mapping[str, Decimal] | None, fill: Decimal) -> Slots:
    """*slots* restricted to the *known* slots, *fill* for those it lacks."""
    return {name: slots[name] if slots and name in slots else fill for name in known}


def add(a: Slots, b: Mapping[str, Decimal]) -> Slots:
    """*a* plus *b*, over the slots of *a*."""
    return {name: a[name] + b.get(name, _ZERO) for name in a}


def subtract(a: Slots, b: Slots) -> Slots:
    """What is left of *a* after *b*, never below 0."""
    return {name: max(_ZERO, a[name] - b[name]) for name in a}


def least(*each: Slots) -> Slots:
    """The least amount of each slot over *each*."""
    return {name: min(slots[name] for slots in each) for name in each[0]}


def fits(request: Mapping[str, Decimal], room: Mapping[str, Decimal]) -> bool:
    """Whether *request* fits in *room* (a slot *room* lacks has no room)."""
    return all(amount <= room.get(name, _ZERO) for name, amount in request.items())


def free_capacity(available: Mapping[str, Decimal], occupied: Mapping[str, Decimal]) -> Slots:
    """An agent's free capacity: what it has minus what its kernels occupy, never below 0."""
    return {
        name: max(_ZERO, amount - occupied.get(name, _ZERO)) for name, amount in available.items()
    }
