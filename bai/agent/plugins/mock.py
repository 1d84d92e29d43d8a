"""The mock accelerator: devices declared in a TOML file, for developing without hardware.

The file (see ``configs/mock-accelerator.toml``) has the keys the spec's
"Using Mocked Accelerators" chapter describes:

* ``slot_name``: the device name, prefix of every slot (``cuda``, ``mock``...);
* ``device_plugin_name``: ``"CUDADevice"`` or ``"MockDevice"``;
* ``[formats.<subtype>]``: UI hints (``display_icon``, ``display_unit``,
  ``human_readable_name``, ``description``, and ``number_format`` with
  ``binary`` and ``round_length``), reported in :meth:`MockPlugin.info`;
* ``[attributes]``: free-form facts (driver versions...) reported in the info;
* ``devices``: a list of tables with ``mother_uuid``, ``model_name``,
  ``numa_node``, ``subproc_count``, ``memory_size`` (a binary size such as
  ``"40G"``) and ``is_mig_device`` (only with ``slot_name = "cuda"``);
* ``[plugin_config]``: what Backend.AI keeps in etcd, as
  :class:`~bai.agent.plugins.fractional.FractionSettings` describes
  (``allocation_mode``, ``unit_mem``, ``unit_proc``).  A ``plugin_config``
  passed to :class:`MockPlugin` overrides it key by key.

Slots: in discrete mode every full device is one ``<slot>.device`` unit, in
fractional mode it offers ``<slot>.shares``; a MIG device (model name
``MIG-<profile>``) is one unit of the ``UNIQUE`` slot
``cuda.device:<profile>-mig`` in both modes.  All of these are exclusive: one
kernel gets whole devices, shares or one kind of MIG slice, never a mix.
Device ids are the ``mother_uuid`` (``MIG-<mother_uuid>/<index>/0`` for a MIG
slice, ``index`` being its position in the list).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Final

import trio

from bai.agent.alloc import (
    DEFAULT_QUANTUM,
    Allocation,
    AllocMap,
    DiscreteAllocMap,
    FractionAllocMap,
)
from bai.agent.plugins.base import ComputePlugin, Device, PluginError, reject_unknown_keys
from bai.agent.plugins.fractional import AllocationMode, FractionSettings
from bai.common.errors import InvalidValue
from bai.common.slots import BinarySize
from bai.common.types import SlotTypes

__all__ = ["MockConfig", "MockDeviceSpec", "MockPlugin", "load_mock_config", "parse_mock_config"]

#: The file the loader looks for in bai's config folders.
MOCK_CONFIG_FILE: Final = "mock-accelerator.toml"
#: Larger files are rejected unread.
MAX_MOCK_CONFIG_BYTES: Final = 1024 * 1024
#: Reading one small file; anything slower means a hung filesystem.
READ_TIMEOUT: Final = 10.0
DEVICE_PLUGIN_NAMES: Final = ("CUDADevice", "MockDevice")
_SLOT_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}", re.ASCII)
_TOP_KEYS: Final = frozenset(
    {"slot_name", "device_plugin_name", "formats", "attributes", "devices", "plugin_config"}
)
_DEVICE_KEYS: Final = frozenset(
    {"mother_uuid", "model_name", "numa_node", "subproc_count", "memory_size", "is_mig_device"}
)
_FORMAT_TEXT_KEYS: Final = ("display_icon", "display_unit", "human_readable_name", "description")


@dataclass(frozen=True)
class MockDeviceSpec:
    """One entry of ``devices``."""

    mother_uuid: str
    model_name: str
    numa_node: int
    subproc_count: int
    memory_size: int
    is_mig_device: bool = False


@dataclass(frozen=True)
class MockConfig:
    """A parsed mock accelerator file."""

    slot_name: str
    device_plugin_name: str
    devices: tuple[MockDeviceSpec, ...]
    formats: Mapping[str, Mapping[str, Any]]
    attributes: Mapping[str, Any]
    settings: FractionSettings


def load_mock_config(path: Path, *, plugin_config: Mapping[str, Any] | None = None) -> MockConfig:
    """Read and parse a mock accelerator file (blocking; see :func:`parse_mock_config`).

    Raises :class:`PluginError` naming the file for an unreadable or
    oversized file, bad UTF-8 or TOML, and every problem the parser finds.
    """
    source = str(path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_MOCK_CONFIG_BYTES + 1)
    except OSError as exc:
        raise PluginError(f"cannot read the file: {exc.strerror}", value=source) from None
    if len(raw) > MAX_MOCK_CONFIG_BYTES:
        raise PluginError(f"the file is larger than {MAX_MOCK_CONFIG_BYTES} bytes", value=source)
    try:
        data = tomllib.loads(raw.decode())
    except UnicodeDecodeError as exc:
        raise PluginError(
            f"not UTF-8 text (bad byte at offset {exc.start})", value=source
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise PluginError(f"not valid TOML: {exc}", value=source) from None
    return parse_mock_config(data, source=source, plugin_config=plugin_config)


def parse_mock_config(
    data: Mapping[str, Any],
    *,
    source: str = "mock accelerator config",
    plugin_config: Mapping[str, Any] | None = None,
) -> MockConfig:
    """Check the decoded TOML of a mock accelerator file.

    ``slot_name``, ``device_plugin_name`` and ``devices`` are required,
    ``formats``, ``attributes`` and ``plugin_config`` optional.  Raises
    :class:`PluginError` naming *source*, the key and the value for unknown
    keys, wrong types, a slot name that is not lower-case letters, digits,
    ``-`` and ``_`` (or is ``cpu``/``mem``), a repeated device id, MIG
    devices outside the ``cuda`` slot or without a ``MIG-<profile>`` model name.
    """
    reject_unknown_keys(data, _TOP_KEYS, source)
    slot_name = _required(data, "slot_name", str, source)
    if not _SLOT_NAME_RE.fullmatch(slot_name) or slot_name in ("cpu", "mem"):
        raise PluginError(
            "must be lower-case letters, digits, '-' and '_' (and not cpu or mem)",
            value=slot_name,
            field=f"{source}: slot_name",
        )
    plugin_name = _required(data, "device_plugin_name", str, source)
    if plugin_name not in DEVICE_PLUGIN_NAMES:
        raise PluginError(
            f"must be one of {', '.join(DEVICE_PLUGIN_NAMES)}",
            value=plugin_name,
            field=f"{source}: device_plugin_name",
        )
    raw_devices = _required(data, "devices", list, source)
    devices = tuple(
        _parse_device(entry, f"{source}: devices[{index}]", slot_name)
        for index, entry in enumerate(raw_devices)
    )
    formats = _parse_formats(data.get("formats", {}), source)
    attributes = data.get("attributes", {})
    if not isinstance(attributes, dict):
        raise PluginError("must be a table", value=attributes, field=f"{source}: attributes")
    own_settings = data.get("plugin_config", {})
    if not isinstance(own_settings, dict):
        raise PluginError("must be a table", value=own_settings, field=f"{source}: plugin_config")
    merged = {**own_settings, **(plugin_config or {})}
    settings = FractionSettings.parse(merged, source=f"{source}: plugin_config")
    config = MockConfig(slot_name, plugin_name, devices, formats, attributes, settings)
    seen: set[str] = set()
    for index, spec in enumerate(devices):
        device_id = _device_id(spec, index)
        if device_id in seen:
            raise PluginError(
                "two devices share this mother_uuid",
                value=spec.mother_uuid,
                field=f"{source}: devices[{index}].mother_uuid",
            )
        seen.add(device_id)
    return config


def _required(data: Mapping[str, Any], key: str, kind: type, source: str) -> Any:
    if key not in data:
        raise PluginError("is required", value=None, field=f"{source}: {key}")
    value = data[key]
    if not isinstance(value, kind) or (kind is str and not value):
        what = "a non-empty string" if kind is str else "a list"
        raise PluginError(f"must be {what}", value=value, field=f"{source}: {key}")
    return value


def _parse_device(entry: object, where: str, slot_name: str) -> MockDeviceSpec:
    if not isinstance(entry, dict):
        raise PluginError("a device must be a table", value=entry, field=where)
    reject_unknown_keys(entry, _DEVICE_KEYS, where)
    mother_uuid = _required(entry, "mother_uuid", str, where)
    model_name = _required(entry, "model_name", str, where)
    numa_node = _int(entry, "numa_node", where, minimum=0)
    subproc_count = _int(entry, "subproc_count", where, minimum=1)
    if "memory_size" not in entry:
        raise PluginError("is required", value=None, field=f"{where}: memory_size")
    try:
        memory_size = int(BinarySize.parse(entry["memory_size"]))
    except InvalidValue as exc:
        raise PluginError(
            exc.problem, value=entry["memory_size"], field=f"{where}: memory_size"
        ) from None
    is_mig = entry.get("is_mig_device", False)
    if not isinstance(is_mig, bool):
        raise PluginError("must be true or false", value=is_mig, field=f"{where}: is_mig_device")
    if is_mig and slot_name != "cuda":
        raise PluginError(
            "MIG devices exist only with slot_name = 'cuda'",
            value=is_mig,
            field=f"{where}: is_mig_device",
        )
    if is_mig and not _mig_profile(model_name):
        raise PluginError(
            "a MIG device's model name must be MIG-<profile> (e.g. 'MIG-10g')",
            value=model_name,
            field=f"{where}: model_name",
        )
    return MockDeviceSpec(mother_uuid, model_name, numa_node, subproc_count, memory_size, is_mig)


def _int(entry: Mapping[str, Any], key: str, where: str, *, minimum: int) -> int:
    if key not in entry:
        raise PluginError("is required", value=None, field=f"{where}: {key}")
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PluginError(
            f"must be an integer of at least {minimum}", value=value, field=f"{where}: {key}"
        )
    return value


def _parse_formats(raw: object, source: str) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise PluginError("must be a table", value=raw, field=f"{source}: formats")
    formats: dict[str, dict[str, Any]] = {}
    for subtype, table in raw.items():
        where = f"{source}: formats.{subtype}"
        if not isinstance(table, dict):
            raise PluginError("must be a table", value=table, field=where)
        reject_unknown_keys(table, {*_FORMAT_TEXT_KEYS, "number_format"}, where)
        for key in _FORMAT_TEXT_KEYS:
            if key in table and not isinstance(table[key], str):
                raise PluginError("must be a string", value=table[key], field=f"{where}.{key}")
        number_format = table.get("number_format", {})
        if not isinstance(number_format, dict) or set(number_format) - {"binary", "round_length"}:
            raise PluginError(
                "must be a table with binary and round_length",
                value=number_format,
                field=f"{where}.number_format",
            )
        if not isinstance(number_format.get("binary", False), bool):
            raise PluginError(
                "must be true or false",
                value=number_format["binary"],
                field=f"{where}.number_format.binary",
            )
        round_length = number_format.get("round_length", 0)
        if isinstance(round_length, bool) or not isinstance(round_length, int) or round_length < 0:
            raise PluginError(
                "must be a non-negative integer",
                value=round_length,
                field=f"{where}.number_format.round_length",
            )
        formats[subtype] = table
    return formats


def _mig_profile(model_name: str) -> str:
    prefix, _, profile = model_name.partition("-")
    return profile if prefix == "MIG" else ""


def _device_id(spec: MockDeviceSpec, index: int) -> str:
    return f"MIG-{spec.mother_uuid}/{index}/0" if spec.is_mig_device else spec.mother_uuid


class MockPlugin(ComputePlugin):
    """Offers the devices of a mock accelerator file.

    Give it either a *config_path* (read in a worker thread by :meth:`init`)
    or an already parsed *config*.
    """

    name: ClassVar[str] = "mock"

    def __init__(
        self,
        config_path: Path | None = None,
        *,
        config: MockConfig | None = None,
        plugin_config: Mapping[str, Any] | None = None,
    ) -> None:
        if (config_path is None) == (config is None):
            raise ValueError("give exactly one of config_path and config")
        self.config_path = config_path
        self._plugin_config = plugin_config
        self._config = config
        self._devices: list[Device] = []
        self.key = config.slot_name if config is not None else ""
        if config is not None:
            self._build()

    @property
    def config(self) -> MockConfig:
        """The parsed file; only valid after :meth:`init`."""
        if self._config is None:
            raise RuntimeError("the mock plugin is not initialized")
        return self._config

    async def init(self) -> None:
        """Read the file (unless a parsed config was given) and build the devices."""
        path, overrides = self.config_path, self._plugin_config
        if self._config is None and path is not None:
            with trio.fail_after(READ_TIMEOUT):
                self._config = await trio.to_thread.run_sync(
                    lambda: load_mock_config(path, plugin_config=overrides),
                    abandon_on_cancel=True,
                )
            self.key = self._config.slot_name
            self._build()

    def _build(self) -> None:
        config = self.config
        settings = config.settings
        fractional = settings.allocation_mode is AllocationMode.FRACTIONAL
        devices = []
        for index, spec in enumerate(config.devices):
            if spec.is_mig_device:
                slot_name = f"{self.key}.device:{_mig_profile(spec.model_name)}-mig"
                slot_type, capacity = SlotTypes.UNIQUE, Decimal(1)
            elif fractional:
                slot_name, slot_type = f"{self.key}.shares", SlotTypes.COUNT
                capacity = settings.share_of(spec.memory_size, spec.subproc_count)
            else:
                slot_name, slot_type, capacity = f"{self.key}.device", SlotTypes.COUNT, Decimal(1)
            devices.append(
                Device(
                    device_id=_device_id(spec, index),
                    slot_name=slot_name,
                    slot_type=slot_type,
                    capacity=capacity,
                    model_name=spec.model_name,
                    memory_size=spec.memory_size,
                    processing_units=spec.subproc_count,
                    numa_node=spec.numa_node,
                    extra={"mother_uuid": spec.mother_uuid, "is_mig_device": spec.is_mig_device},
                )
            )
        self._devices = devices

    @property
    def allocation_mode(self) -> AllocationMode:
        return self.config.settings.allocation_mode

    def slot_types(self) -> dict[str, SlotTypes]:
        main = "shares" if self.allocation_mode is AllocationMode.FRACTIONAL else "device"
        types = {f"{self.key}.{main}": SlotTypes.COUNT}
        for device in self._devices:
            types.setdefault(device.slot_name, device.slot_type)
        return types

    def devices(self) -> Sequence[Device]:
        return tuple(self._devices)

    @property
    def exclusive_slot_types(self) -> tuple[str, ...]:
        """Whole devices, shares and MIG slices of this plugin never mix in one kernel."""
        return (f"{self.key}.device", f"{self.key}.shares", f"{self.key}.device:*-mig")

    def create_alloc_map(self) -> AllocMap:
        slots = [device.alloc_slot() for device in self._devices]
        if self.allocation_mode is AllocationMode.FRACTIONAL:
            return FractionAllocMap(
                slots,
                exclusive_slot_types=self.exclusive_slot_types,
                slot_types=self.slot_types(),
                quantum=DEFAULT_QUANTUM,
            )
        return DiscreteAllocMap(
            slots, exclusive_slot_types=self.exclusive_slot_types, slot_types=self.slot_types()
        )

    def environ(self, allocation: Allocation) -> dict[str, str]:
        """``BACKENDAI_MOCK_<KEY>_DEVICES`` (ids) and ``_DEVICE_COUNT``; with shares also
        ``_MEMORY_LIMITS`` and ``_PROCESSOR_LIMITS`` (``id:amount`` lists).

        Call it with ``{}`` for a kernel holding nothing of this plugin: it
        then names no device.
        """
        prefix = "BACKENDAI_MOCK_" + re.sub(r"[^A-Z0-9]", "_", self.key.upper())
        held = [
            device.device_id
            for device in self._devices
            if allocation.get(device.slot_name, {}).get(device.device_id)
        ]
        env = {f"{prefix}_DEVICES": ",".join(held), f"{prefix}_DEVICE_COUNT": str(len(held))}
        if self.allocation_mode is AllocationMode.FRACTIONAL:
            shares = allocation.get(f"{self.key}.shares", {})
            specs = {device: self.config.settings.share_spec(s) for device, s in shares.items()}
            env[f"{prefix}_MEMORY_LIMITS"] = ",".join(f"{d}:{m}" for d, (m, _) in specs.items())
            env[f"{prefix}_PROCESSOR_LIMITS"] = ",".join(f"{d}:{p}" for d, (_, p) in specs.items())
        return env

    def extra_info(self) -> dict[str, Any]:
        config = self.config
        return {
            f"{self.key}_support": True,
            "device_plugin_name": config.device_plugin_name,
            "allocation_mode": self.allocation_mode.value,
            "formats": {subtype: dict(table) for subtype, table in config.formats.items()},
            "attributes": dict(config.attributes),
        }
