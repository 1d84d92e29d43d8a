"""The interface every compute plugin implements, and the device record plugins report.

A compute plugin turns one kind of hardware (CPU cores, memory, GPUs, mocked
accelerators) into resource slots.  The agent's life with a plugin:

1. construct it (cheap, no probing) and ``await plugin.init()``, which detects
   the devices; blocking probes run in a worker thread under a deadline;
2. read :meth:`ComputePlugin.slot_types`, :meth:`ComputePlugin.devices`,
   :meth:`ComputePlugin.available_slots` and :meth:`ComputePlugin.info`
   (plain, synchronous, never touching the hardware again) for heartbeats;
3. build one :class:`~bai.agent.alloc.AllocMap` with
   :meth:`ComputePlugin.create_alloc_map` and allocate kernels from it;
4. for each kernel, merge :meth:`ComputePlugin.environ` of its allocation into
   the kernel's environment;
5. ``await plugin.cleanup()`` at shutdown.

``key`` is the plugin's device name, the prefix of each of its slots
(``cuda`` for ``cuda.device``/``cuda.shares``, ``cpu`` for ``cpu``); it keys
the agent's maps and allocations.  ``name`` is how ``allow-compute-plugins``
in agent.toml refers to the plugin class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

from bai.agent.alloc import Allocation, AllocMap, DeviceSlot
from bai.common.errors import InvalidValue
from bai.common.slots import ResourceSlot
from bai.common.types import SlotTypes

__all__ = ["ComputePlugin", "Device", "PluginError"]


class PluginError(InvalidValue):
    """A compute plugin's configuration was rejected; the message names the file, key and value."""


def reject_unknown_keys(table: Mapping[Any, Any], allowed: Collection[str], field: str) -> None:
    """Raise :class:`PluginError` for the first key of *table* (sorted) not in *allowed*."""
    unknown = sorted(str(key) for key in set(table) - set(allowed))
    if unknown:
        raise PluginError(
            f"unknown key (expected {', '.join(sorted(allowed))})", value=unknown[0], field=field
        )


@dataclass(frozen=True)
class Device:
    """One device a plugin found, with what the manager's UI and the scheduler may want to know.

    ``slot_name``/``slot_type``/``capacity`` say what the device contributes to
    allocation (see :class:`~bai.agent.alloc.DeviceSlot`); the rest is
    descriptive: ``memory_size`` in bytes and ``processing_units`` (cores,
    streaming multiprocessors) where they apply (0 otherwise), ``numa_node``
    when known, ``extra`` for plugin-specific facts (JSON-compatible).
    """

    device_id: str
    slot_name: str
    slot_type: SlotTypes
    capacity: Decimal
    model_name: str = ""
    memory_size: int = 0
    processing_units: int = 0
    numa_node: int | None = None
    hw_location: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def alloc_slot(self) -> DeviceSlot:
        """The allocation map's view of this device."""
        return DeviceSlot(self.device_id, self.slot_name, self.slot_type, self.capacity)

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible description (capacity as a decimal string)."""
        return {
            "device_id": self.device_id,
            "slot_name": self.slot_name,
            "slot_type": self.slot_type.value,
            "capacity": ResourceSlot({self.slot_name: self.capacity}).to_json()[self.slot_name],
            "model_name": self.model_name,
            "memory_size": self.memory_size,
            "processing_units": self.processing_units,
            "numa_node": self.numa_node,
            "hw_location": self.hw_location,
            **({"extra": dict(self.extra)} if self.extra else {}),
        }


class ComputePlugin(ABC):
    """One source of resource slots on an agent.

    Subclasses set ``name`` and ``version``, set ``self.key`` in their
    constructor (or ``init``), and implement :meth:`init`,
    :meth:`slot_types`, :meth:`devices` and :meth:`create_alloc_map`.  Until
    :meth:`init` returns, the other methods may report nothing.
    """

    #: The name ``allow-compute-plugins`` uses for this plugin class.
    name: ClassVar[str]
    #: Reported in :meth:`info`.
    version: ClassVar[str] = "1.0"

    #: Device name: the prefix of every slot this plugin declares.
    key: str

    @abstractmethod
    async def init(self) -> None:
        """Detect the devices.  Blocking probes run in a thread under a deadline.

        A missing device or driver is not an error (the plugin reports no
        devices); a broken configuration raises :class:`PluginError`.
        """

    async def cleanup(self) -> None:  # noqa: B027 - most plugins hold nothing to release
        """Release what :meth:`init` acquired."""

    @abstractmethod
    def slot_types(self) -> dict[str, SlotTypes]:
        """Every slot this plugin declares, even those without devices right now."""

    @abstractmethod
    def devices(self) -> Sequence[Device]:
        """The devices found by :meth:`init`, in a stable order."""

    def available_slots(self) -> ResourceSlot:
        """What the plugin offers kernels: device capacities summed per slot.

        Reservations for the host are already taken out (the cpu and mem
        plugins leave reserved cores and bytes out of their devices), and every
        declared slot appears, with zero when it has no device.
        """
        totals: dict[str, Decimal] = dict.fromkeys(self.slot_types(), Decimal(0))
        for device in self.devices():
            totals[device.slot_name] = totals.get(device.slot_name, Decimal(0)) + device.capacity
        return ResourceSlot(totals)

    @abstractmethod
    def create_alloc_map(self) -> AllocMap:
        """A fresh, empty allocation map over :meth:`devices`."""

    def environ(self, allocation: Allocation) -> dict[str, str]:
        """Environment variables a kernel holding *allocation* of this plugin needs."""
        return {}

    def extra_info(self) -> dict[str, Any]:
        """Plugin-specific facts for :meth:`info` (driver versions, attributes)."""
        return {}

    def info(self) -> dict[str, Any]:
        """A JSON-compatible summary for heartbeats and ``gather_hwinfo``."""
        return {
            "name": self.name,
            "version": self.version,
            "key": self.key,
            "slot_types": {slot: kind.value for slot, kind in self.slot_types().items()},
            "available_slots": self.available_slots().to_json(),
            "devices": [device.to_json() for device in self.devices()],
            **self.extra_info(),
        }
