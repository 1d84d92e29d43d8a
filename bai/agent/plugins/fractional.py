"""Accelerator allocation settings shared by the mock and cuda plugins.

The spec's per-accelerator plugin configuration (in Backend.AI it lives in
etcd under ``config.plugins.accelerator.<slot_name>``) has three keys:

* ``allocation_mode``: ``"discrete"`` (the default; each device is one
  ``<slot>.device`` unit) or ``"fractional"`` (each device offers
  ``<slot>.shares``);
* ``unit_mem``: device memory in bytes (an int or a size such as ``"1G"``)
  that makes up 1.0 share (default 2 GiB);
* ``unit_proc``: sub-processors (streaming multiprocessors) that make up 1.0
  share (default 8).

A device offers ``min(memory / unit_mem, subprocessors / unit_proc)`` shares,
rounded down to the fractional quantum (0.01).  With ``unit_mem = 1 GiB`` and
``unit_proc = 10`` (the spec's example), a 40 GiB device with 108
sub-processors offers ``min(40, 10.8) = 10.8`` shares.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Final

from bai.agent.alloc import DEFAULT_QUANTUM
from bai.agent.plugins.base import PluginError, reject_unknown_keys
from bai.common.errors import InvalidValue
from bai.common.slots import BinarySize

__all__ = ["AllocationMode", "FractionSettings"]

DEFAULT_UNIT_MEM: Final = 2 * 1024**3
DEFAULT_UNIT_PROC: Final = 8


class AllocationMode(enum.StrEnum):
    """Whether an accelerator is handed out as whole devices or as shares."""

    DISCRETE = "discrete"
    FRACTIONAL = "fractional"


@dataclass(frozen=True)
class FractionSettings:
    """The parsed plugin configuration (see the module docstring)."""

    allocation_mode: AllocationMode = AllocationMode.DISCRETE
    unit_mem: int = DEFAULT_UNIT_MEM
    unit_proc: int = DEFAULT_UNIT_PROC

    @classmethod
    def parse(cls, data: object, *, source: str) -> FractionSettings:
        """Parse a ``{allocation_mode, unit_mem, unit_proc}`` table; every key is optional.

        Raises :class:`PluginError` naming *source*, the key and the value for
        an unknown key, an unknown mode, or a unit that is not a positive
        whole number.
        """
        if not isinstance(data, Mapping):
            raise PluginError("the plugin configuration must be a table", value=data, field=source)
        reject_unknown_keys(data, ("allocation_mode", "unit_mem", "unit_proc"), source)
        raw_mode = data.get("allocation_mode", AllocationMode.DISCRETE.value)
        try:
            mode = AllocationMode(raw_mode)
        except ValueError:
            raise PluginError(
                "must be 'discrete' or 'fractional'",
                value=raw_mode,
                field=f"{source}: allocation_mode",
            ) from None
        raw_mem = data.get("unit_mem", DEFAULT_UNIT_MEM)
        try:
            unit_mem = int(BinarySize.parse(raw_mem))
        except InvalidValue as exc:
            raise PluginError(exc.problem, value=raw_mem, field=f"{source}: unit_mem") from None
        if unit_mem <= 0:
            raise PluginError("must be above zero", value=raw_mem, field=f"{source}: unit_mem")
        raw_proc = data.get("unit_proc", DEFAULT_UNIT_PROC)
        if isinstance(raw_proc, bool) or not isinstance(raw_proc, int) or raw_proc <= 0:
            raise PluginError(
                "must be a positive integer", value=raw_proc, field=f"{source}: unit_proc"
            )
        return cls(mode, unit_mem, raw_proc)

    def share_of(self, memory_size: int, processing_units: int | None) -> Decimal:
        """The shares one device offers, rounded down to the quantum.

        *processing_units* None means unknown: the memory alone decides.
        """
        shares = Fraction(memory_size, self.unit_mem)
        if processing_units is not None:
            shares = min(shares, Fraction(processing_units, self.unit_proc))
        ticks = shares / Fraction(DEFAULT_QUANTUM)
        return Decimal(ticks.numerator // ticks.denominator) * DEFAULT_QUANTUM

    def share_spec(self, share: Decimal) -> tuple[int, int]:
        """The device memory (bytes, rounded down) and sub-processors (at least 1) of *share*."""
        fraction = Fraction(share)
        memory = fraction * self.unit_mem
        procs = fraction * self.unit_proc
        return memory.numerator // memory.denominator, max(1, procs.numerator // procs.denominator)
