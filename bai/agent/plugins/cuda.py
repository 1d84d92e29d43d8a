"""The ``cuda`` plugin: NVIDIA GPUs found through NVML (nvidia-ml-py).

Devices come from :func:`bai.agent.hostinfo.detect_gpus`.  A host without the
NVIDIA driver (``nvmlInit`` fails) or an NVML probe that does not answer
within :data:`PROBE_TIMEOUT` gives zero devices, never an error: the plugin
still declares its slot, with zero available, and its info says why.

Slots follow the shared accelerator settings
(:class:`~bai.agent.plugins.fractional.FractionSettings`): ``cuda.device``,
one unit per GPU, in the default discrete mode; ``cuda.shares`` in the
fractional mode, where a GPU offers ``memory / unit_mem`` shares (NVML's
device list here carries no multiprocessor count, so memory alone decides).
The two never mix in one kernel.  Device ids are the GPU UUIDs
(``GPU-...``), which ``CUDA_VISIBLE_DEVICES`` accepts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar, Final

import trio

from bai.agent.alloc import (
    DEFAULT_QUANTUM,
    Allocation,
    AllocMap,
    DiscreteAllocMap,
    FractionAllocMap,
)
from bai.agent.hostinfo import GPUInfo, detect_gpus
from bai.agent.plugins.base import ComputePlugin, Device
from bai.agent.plugins.fractional import AllocationMode, FractionSettings
from bai.common.types import SlotTypes

__all__ = ["CUDAPlugin"]

log = logging.getLogger(__name__)

#: NVML answers in well under a second; a hung driver must not hang the agent's start.
PROBE_TIMEOUT: Final = 15.0
#: The slot names this plugin may declare; one kernel may hold only one of them.
EXCLUSIVE_SLOT_TYPES: Final = ("cuda.device", "cuda.shares", "cuda.device:*-mig")


class CUDAPlugin(ComputePlugin):
    """Offers NVIDIA GPUs as ``cuda.device`` or ``cuda.shares``.

    *plugin_config* is the accelerator configuration (``allocation_mode``,
    ``unit_mem``, ``unit_proc``) as :meth:`FractionSettings.parse` reads it.
    *gpus* is an NVML probe already made (e.g. by
    :func:`bai.agent.hostinfo.detect_host`); :meth:`init` then probes no
    further.
    """

    name: ClassVar[str] = "cuda"
    key = "cuda"

    def __init__(
        self, plugin_config: Mapping[str, Any] | None = None, *, gpus: GPUInfo | None = None
    ) -> None:
        self.settings = FractionSettings.parse(plugin_config or {}, source="cuda plugin config")
        self._probed = gpus
        self._gpus = GPUInfo(detail="not probed yet")
        self._devices: list[Device] = []

    async def init(self) -> None:
        """Ask NVML for the GPUs; no driver or no answer means no devices."""
        if self._probed is not None:
            self._gpus = self._probed
        else:
            with trio.move_on_after(PROBE_TIMEOUT) as scope:
                self._gpus = await trio.to_thread.run_sync(detect_gpus, abandon_on_cancel=True)
            if scope.cancelled_caught:
                self._gpus = GPUInfo(detail=f"NVML did not answer within {PROBE_TIMEOUT:g} s")
        if not self._gpus.devices:
            log.info("no CUDA devices: %s", self._gpus.detail or "NVML lists none")
        self._devices = [self._device(entry) for entry in self._gpus.devices]

    def _device(self, entry: Mapping[str, Any]) -> Device:
        memory = int(entry["memory_bytes"])
        if self.settings.allocation_mode is AllocationMode.FRACTIONAL:
            slot_name, capacity = "cuda.shares", self.settings.share_of(memory, None)
        else:
            slot_name, capacity = "cuda.device", Decimal(1)
        return Device(
            device_id=str(entry["uuid"]),
            slot_name=slot_name,
            slot_type=SlotTypes.COUNT,
            capacity=capacity,
            model_name=str(entry["name"]),
            memory_size=memory,
            hw_location=f"nvml:{entry['index']}",
            extra={"index": int(entry["index"])},
        )

    def slot_types(self) -> dict[str, SlotTypes]:
        if self.settings.allocation_mode is AllocationMode.FRACTIONAL:
            return {"cuda.shares": SlotTypes.COUNT}
        return {"cuda.device": SlotTypes.COUNT}

    def devices(self) -> Sequence[Device]:
        return tuple(self._devices)

    def create_alloc_map(self) -> AllocMap:
        slots = [device.alloc_slot() for device in self._devices]
        if self.settings.allocation_mode is AllocationMode.FRACTIONAL:
            return FractionAllocMap(
                slots,
                exclusive_slot_types=EXCLUSIVE_SLOT_TYPES,
                slot_types=self.slot_types(),
                quantum=DEFAULT_QUANTUM,
            )
        return DiscreteAllocMap(
            slots, exclusive_slot_types=EXCLUSIVE_SLOT_TYPES, slot_types=self.slot_types()
        )

    def environ(self, allocation: Allocation) -> dict[str, str]:
        """``CUDA_VISIBLE_DEVICES``: the UUIDs of the GPUs the allocation touches.

        Call it with ``{}`` for a kernel holding no GPU: the variable is then
        empty, which hides every GPU from a kernel that did not ask for one.
        """
        held = [
            device.device_id
            for device in self._devices
            if allocation.get(device.slot_name, {}).get(device.device_id)
        ]
        return {"CUDA_VISIBLE_DEVICES": ",".join(held)}

    def extra_info(self) -> dict[str, Any]:
        return {
            "cuda_support": bool(self._devices),
            "nvidia_driver": self._gpus.driver_version,
            "allocation_mode": self.settings.allocation_mode.value,
            **({"detail": self._gpus.detail} if self._gpus.detail else {}),
        }
