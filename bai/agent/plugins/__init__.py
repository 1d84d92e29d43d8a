"""Compute plugins (cpu, mem, the mock accelerator, cuda) and the loader that picks them.

:func:`load_plugins` builds and initializes the plugins an agent config asks
for and returns them keyed by device name (``plugin.key``), ready for
:func:`create_allocator`:

* ``cpu`` and ``mem`` are intrinsic and always loaded, with ``[resource]
  reserved-cpu`` and ``reserved-mem`` kept back for the host;
* ``[agent] allow-compute-plugins`` selects the accelerators; unset means
  every known one.  Names are the short ones (``mock``, ``cuda``) or the
  Backend.AI package names (``ai.backend.accelerator.mock``,
  ``ai.backend.accelerator.cuda_open``); ``cpu``/``mem`` may be listed and
  change nothing; an unknown name raises :class:`PluginError`;
* the mock reads *mock_config_path*, else ``mock-accelerator.toml`` from
  bai's config folders (``./``, ``~/.config/bai/``, ``/etc/bai/``); without
  a file it is skipped with a log line.  A broken file raises
  :class:`PluginError`;
* two plugins with the same key (a mock with ``slot_name = "cuda"`` next to
  the real cuda plugin): the one without devices is dropped; if both have
  devices, :class:`PluginError` is raised.

Any error leaves no plugin initialized (those already started are cleaned up).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import trio

from bai.agent.alloc import ResourceAllocator
from bai.agent.hostinfo import GPUInfo
from bai.agent.plugins.base import ComputePlugin, Device, PluginError
from bai.agent.plugins.cpu import CPUPlugin
from bai.agent.plugins.cuda import CUDAPlugin
from bai.agent.plugins.mem import MemPlugin
from bai.agent.plugins.mock import MOCK_CONFIG_FILE, MockPlugin
from bai.common.config import AgentConfig, find_config_file

__all__ = [
    "PLUGIN_ALIASES",
    "ComputePlugin",
    "Device",
    "PluginError",
    "create_allocator",
    "load_plugins",
]

log = logging.getLogger(__name__)

#: Every name ``allow-compute-plugins`` accepts, mapped to the plugin it means.
PLUGIN_ALIASES: Final[Mapping[str, str]] = {
    "cpu": "cpu",
    "mem": "mem",
    "mock": "mock",
    "ai.backend.accelerator.mock": "mock",
    "cuda": "cuda",
    "cuda_open": "cuda",
    "ai.backend.accelerator.cuda_open": "cuda",
    "ai.backend.accelerator.cuda": "cuda",
}
_ACCELERATORS: Final = ("mock", "cuda")


def _selected(allowed: Sequence[str] | None) -> list[str]:
    if allowed is None:
        return list(_ACCELERATORS)
    chosen: list[str] = []
    for name in allowed:
        plugin = PLUGIN_ALIASES.get(name)
        if plugin is None:
            raise PluginError(
                f"unknown compute plugin (known: {', '.join(sorted(PLUGIN_ALIASES))})",
                value=name,
                field="agent.allow-compute-plugins",
            )
        if plugin in _ACCELERATORS and plugin not in chosen:
            chosen.append(plugin)
    return chosen


async def load_plugins(
    config: AgentConfig,
    *,
    mock_config_path: Path | None = None,
    mock_plugin_config: Mapping[str, Any] | None = None,
    cuda_plugin_config: Mapping[str, Any] | None = None,
    gpus: GPUInfo | None = None,
) -> dict[str, ComputePlugin]:
    """Build and initialize the agent's plugins (see the module docstring).

    *mock_plugin_config* and *cuda_plugin_config* are the accelerator settings
    (``allocation_mode``, ``unit_mem``, ``unit_proc``) that Backend.AI keeps in
    etcd; the mock's override its file's ``[plugin_config]``.  *gpus* is an
    NVML probe already made, so cuda does not probe again.  The result is
    ordered cpu, mem, then the accelerators in the order they were allowed.
    """
    explicit = config.agent.allow_compute_plugins is not None
    accelerators = _selected(config.agent.allow_compute_plugins)
    candidates: list[ComputePlugin] = [
        CPUPlugin(config.resource.reserved_cpu),
        MemPlugin(int(config.resource.reserved_mem)),
    ]
    for name in accelerators:
        if name == "cuda":
            candidates.append(CUDAPlugin(cuda_plugin_config, gpus=gpus))
            continue
        path = mock_config_path or await trio.to_thread.run_sync(find_config_file, MOCK_CONFIG_FILE)
        if path is None:
            log.log(
                logging.WARNING if explicit else logging.DEBUG,
                "mock accelerator allowed but no %s found; skipping it",
                MOCK_CONFIG_FILE,
            )
            continue
        candidates.append(MockPlugin(path, plugin_config=mock_plugin_config))
    started: list[ComputePlugin] = []
    try:
        for plugin in candidates:
            await plugin.init()
            started.append(plugin)
        loaded = _resolve_conflicts(started)
    except BaseException:
        for plugin in started:
            await plugin.cleanup()
        raise
    for plugin in started:
        if plugin not in loaded.values():
            await plugin.cleanup()
    return loaded


def _resolve_conflicts(plugins: Sequence[ComputePlugin]) -> dict[str, ComputePlugin]:
    loaded: dict[str, ComputePlugin] = {}
    for plugin in plugins:
        other = loaded.get(plugin.key)
        if other is None:
            loaded[plugin.key] = plugin
            continue
        if other.devices() and plugin.devices():
            raise PluginError(
                f"the {other.name} and {plugin.name} plugins both offer devices under this name",
                value=plugin.key,
                field="agent.allow-compute-plugins",
            )
        keep = plugin if plugin.devices() else other
        log.info(
            "compute plugins %s and %s share the name %r; using %s, which has devices",
            other.name,
            plugin.name,
            plugin.key,
            keep.name,
        )
        loaded[plugin.key] = keep
    return loaded


def create_allocator(plugins: Mapping[str, ComputePlugin]) -> ResourceAllocator:
    """One fresh allocation map per plugin, driven as one :class:`ResourceAllocator`."""
    return ResourceAllocator({key: plugin.create_alloc_map() for key, plugin in plugins.items()})
