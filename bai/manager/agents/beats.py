"""What an agent's heartbeat says, read from its ``agent_info`` map.

:func:`parse_beat` turns the map into a :class:`Beat`, the form the
``agents`` row stores, or raises :class:`~bai.common.errors.InvalidValue`
naming the bad key (``agent_info.<key>``).  Pure: nothing here reads or
writes, and two equal reports give equal beats.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from bai.common.errors import InvalidValue
from bai.common.slots import ResourceSlot
from bai.common.types import KernelStatus

__all__ = ["Beat", "parse_beat"]

#: Kernel statuses in a heartbeat that mean the agent no longer has the kernel.
_ENDED_KERNEL_STATUSES: Final = frozenset(
    {KernelStatus.TERMINATED.value, KernelStatus.ERROR.value, KernelStatus.CANCELLED.value}
)


@dataclass(frozen=True, slots=True)
class Beat:
    """What a heartbeat says about an agent, in the form the agents row stores."""

    addr: str
    public_host: str | None
    region: str
    scaling_group: str
    architecture: str
    version: str
    available_slots: ResourceSlot
    compute_plugins: str  # canonical JSON text, so that equal reports compare equal
    images: tuple[Mapping[str, Any], ...]
    images_digest: str
    # The kernels the agent has and has not ended; None from an agent that does not say.
    live_kernels: frozenset[uuid.UUID] | None

    def row(self) -> dict[str, Any]:
        return {
            "addr": self.addr,
            "public_host": self.public_host,
            "region": self.region,
            "scaling_group": self.scaling_group,
            "architecture": self.architecture,
            "version": self.version,
            "available_slots": self.available_slots,
            "compute_plugins": json.loads(self.compute_plugins),
        }

    def same_row(self, other: Beat) -> bool:
        return self.row() == other.row()


def _text(info: Mapping[str, Any], key: str, *, default: str | None = None, limit: int) -> str:
    value = info.get(key, default)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidValue(f"must be a non-empty string of at most {limit} characters", value=value)
    return value


def parse_beat(info: Mapping[str, Any]) -> Beat:
    """Read an ``agent_info`` map; :class:`InvalidValue` names the bad key."""
    if not isinstance(info, Mapping):
        raise InvalidValue("agent_info must be a map", value=info)
    try:
        key = "addr"
        addr = _text(info, key, limit=128)
        key = "region"
        region = _text(info, key, default="local", limit=64)
        key = "scaling_group"
        group = _text(info, key, default="default", limit=64)
        key = "architecture"
        arch = _text(info, key, default="x86_64", limit=32)
        key = "version"
        version = str(info.get("version", ""))[:64]
        key = "public_host"
        public_host = info.get("public_host")
        if public_host is not None and (not isinstance(public_host, str) or len(public_host) > 256):
            raise InvalidValue("must be a host name", value=public_host)
        key = "available_slots"
        slots = ResourceSlot.from_json(info.get("available_slots", {}))
        key = "compute_plugins"
        plugins = info.get("compute_plugins", {})
        if not isinstance(plugins, Mapping):
            raise InvalidValue("must be a map", value=plugins)
        plugins_text = json.dumps(plugins, sort_keys=True, default=str)
        key = "images"
        raw_images = info.get("images", [])
        if not isinstance(raw_images, list):
            raise InvalidValue("must be a list", value=raw_images)
        image_list = tuple(i for i in raw_images if isinstance(i, Mapping))
        digest = hashlib.sha256(
            json.dumps(raw_images, sort_keys=True, default=str).encode()
        ).hexdigest()
        key = "kernel_statuses"
        live_kernels = _live_kernels(info.get(key))
    except InvalidValue as exc:
        raise InvalidValue(exc.problem, value=exc.value, field=f"agent_info.{key}") from None
    return Beat(
        addr=addr,
        public_host=public_host,
        region=region,
        scaling_group=group,
        architecture=arch,
        version=version,
        available_slots=slots,
        compute_plugins=plugins_text,
        images=image_list,
        images_digest=digest,
        live_kernels=live_kernels,
    )


def _live_kernels(statuses: object) -> frozenset[uuid.UUID] | None:
    """The ids of a heartbeat's ``kernel_statuses`` whose status is not an end."""
    if statuses is None:
        return None
    if not isinstance(statuses, Mapping):
        raise InvalidValue("must be a map", value=statuses)
    live: set[uuid.UUID] = set()
    for kid, status in statuses.items():
        if status in _ENDED_KERNEL_STATUSES:
            continue
        try:
            live.add(uuid.UUID(str(kid)))
        except ValueError:
            raise InvalidValue("must be keyed by kernel ids", value=kid) from None
    return frozenset(live)
