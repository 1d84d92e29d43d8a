"""The intrinsic ``mem`` plugin: the host's memory as one pooled device, minus ``reserved-mem``.

Capacity is ``MemTotal`` or the agent's cgroup memory limit when lower (see
:mod:`bai.agent.plugins.hostres`), minus the bytes reserved for the host, and
never below zero.  Memory is one device, ``root``, allocated in whole bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar

import trio

from bai.agent.alloc import AllocMap, DiscreteAllocMap
from bai.agent.plugins import hostres
from bai.agent.plugins.base import ComputePlugin, Device
from bai.common.slots import BinarySize
from bai.common.types import SlotTypes

__all__ = ["MemPlugin"]

log = logging.getLogger(__name__)

#: The host probes read a few small files; anything slower means a hung filesystem.
PROBE_TIMEOUT = 10.0
#: The id of the one memory device.
DEVICE_ID = "root"


class MemPlugin(ComputePlugin):
    """Offers the ``mem`` slot (``BYTES``)."""

    name: ClassVar[str] = "mem"
    key = "mem"

    def __init__(self, reserved_mem: int = 0) -> None:
        if reserved_mem < 0:
            raise ValueError(f"reserved_mem cannot be negative, got {reserved_mem}")
        self.reserved_mem = reserved_mem
        self._host_mem = 0
        self._devices: list[Device] = []

    async def init(self) -> None:
        """Measure the memory this process may use."""
        with trio.fail_after(PROBE_TIMEOUT):
            self._host_mem = await trio.to_thread.run_sync(_probe, abandon_on_cancel=True)
        offered = max(0, self._host_mem - self.reserved_mem)
        if offered == 0:
            log.warning(
                "the host has %s of memory and reserved-mem is %s: no mem left for kernels",
                BinarySize(self._host_mem),
                BinarySize(self.reserved_mem),
            )
        self._devices = [
            Device(
                device_id=DEVICE_ID,
                slot_name="mem",
                slot_type=SlotTypes.BYTES,
                capacity=Decimal(offered),
                memory_size=offered,
            )
        ]

    def slot_types(self) -> dict[str, SlotTypes]:
        return {"mem": SlotTypes.BYTES}

    def devices(self) -> Sequence[Device]:
        return tuple(self._devices)

    def create_alloc_map(self) -> AllocMap:
        return DiscreteAllocMap(
            (device.alloc_slot() for device in self._devices), slot_types=self.slot_types()
        )

    def extra_info(self) -> dict[str, Any]:
        return {"host_mem": self._host_mem, "reserved_mem": self.reserved_mem}


def _probe() -> int:
    total = hostres.mem_total()
    limit = hostres.cgroup_memory_limit()
    return total if limit is None else min(total, limit)
