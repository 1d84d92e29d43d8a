"""The image catalog of the local backend: image names and aliases, runtimes and labels.

Local kernels have no container image; an image is a catalog entry that names
a language runtime on this host and carries the spec's ``ai.backend.*``
labels (lines 2670-2974).  The catalog is a TOML file::

    [[image]]
    name = "python:3.11"
    aliases = ["python"]
    architecture = "x86_64"          # optional: defaults to this host's
    service-defs = "service-defs"    # optional: folder of <service>.json files,
                                     # relative to the catalog file
    [image.labels]
    "ai.backend.kernelspec" = "1"
    "ai.backend.features" = "batch query uid-match user-input"
    "ai.backend.runtime-type" = "python"
    "ai.backend.runtime-path" = "/usr/bin/python3"   # optional, see below
    "ai.backend.resource.min.cpu" = "1"
    "ai.backend.resource.min.mem" = "256m"
    "ai.backend.service-ports" = "http:http:8080"
    "ai.backend.envs.corecount" = "OPENBLAS_NUM_THREADS,OMP_NUM_THREADS"

Without ``ai.backend.runtime-path`` (or with it empty) a ``python`` image
runs the agent's own interpreter, so a fresh checkout works anywhere; the
loaded labels then carry the resolved path.

Guarantees: :func:`load_catalog` checks every entry (required labels, runtime
type, service-ports syntax, duplicate names and aliases) and raises one
:class:`ImageCatalogError` naming the entry and the key; :meth:`ImageCatalog.resolve`
raises :class:`UnknownImage` for a name or alias it does not know.
"""

from __future__ import annotations

import platform
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bai.common.errors import BaiError, InvalidValue
from bai.kernel.service import ServiceError, ServicePort, parse_service_ports

#: Runtime types the kernel runner implements.
RUNTIME_TYPES: Final = ("python", "shell", "app")
LABEL_PREFIX: Final = "ai.backend."
_REQUIRED_LABELS: Final = ("ai.backend.kernelspec", "ai.backend.runtime-type")
_MAX_CATALOG_BYTES: Final = 1024 * 1024

#: The catalog used when the agent is given none: the agent's Python as ``python:3.11``.
DEFAULT_CATALOG: Final = """
[[image]]
name = "python:3.11"
aliases = ["python", "python3"]
[image.labels]
"ai.backend.kernelspec" = "1"
"ai.backend.features" = "batch query uid-match user-input"
"ai.backend.base-distro" = "ubuntu16.04"
"ai.backend.runtime-type" = "python"
"ai.backend.resource.min.cpu" = "1"
"ai.backend.resource.min.mem" = "64m"
"ai.backend.envs.corecount" = "OPENBLAS_NUM_THREADS,OMP_NUM_THREADS,NPROC"
"""


class ImageCatalogError(InvalidValue):
    """The catalog file is unreadable or one of its entries is malformed."""


class UnknownImage(BaiError):
    """No catalog entry has that name or alias (for that architecture)."""


def host_architecture() -> str:
    """This host's architecture as Backend.AI spells it (``x86_64``, ``aarch64``)."""
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


@dataclass(frozen=True)
class Image:
    """One catalog entry, validated."""

    name: str
    aliases: tuple[str, ...]
    architecture: str
    labels: Mapping[str, str]
    runtime_type: str
    runtime_path: str
    service_ports: tuple[ServicePort, ...] = ()
    corecount_envs: tuple[str, ...] = ()
    #: ``ai.backend.resource.min.*`` labels: slot name -> amount text.
    min_resources: Mapping[str, str] = field(default_factory=dict)
    service_defs: Path | None = None

    def to_json(self) -> dict[str, Any]:
        """A msgpack/JSON-friendly description (for the manager's image list)."""
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "architecture": self.architecture,
            "labels": dict(self.labels),
            "resources": {slot: {"min": amount} for slot, amount in self.min_resources.items()},
        }


class ImageCatalog:
    """Images by name and alias; see the module docstring."""

    def __init__(self, images: Iterable[Image]) -> None:
        self.images: tuple[Image, ...] = tuple(images)
        self._refs: dict[tuple[str, str], Image] = {}
        for image in self.images:
            for ref in (image.name, *image.aliases):
                key = (ref, image.architecture)
                if key in self._refs:
                    raise ImageCatalogError(
                        f"image reference used twice (for {self._refs[key].name} and {image.name})",
                        value=ref,
                        field="image",
                    )
                self._refs[key] = image

    def resolve(self, ref: str, architecture: str | None = None) -> Image:
        """The image called *ref* (a name or alias) for *architecture* (default: this host's)."""
        arch = architecture or host_architecture()
        image = self._refs.get((ref, arch))
        if image is None:
            known = sorted({r for r, a in self._refs if a == arch})
            raise UnknownImage(
                f"no image {ref!r} for {arch} in the catalog (known: {', '.join(known) or 'none'})"
            )
        return image


def _text_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ImageCatalogError("expected a list of non-empty strings", value=value, field=where)
    return tuple(value)


def _image(
    entry: Any, index: int, *, base_dir: Path | None, default_python: str, arch: str
) -> Image:
    where = f"image[{index}]"
    if not isinstance(entry, dict):
        raise ImageCatalogError("expected a table", value=entry, field=where)
    unknown = sorted(set(entry) - {"name", "aliases", "architecture", "labels", "service-defs"})
    if unknown:
        raise ImageCatalogError("unknown key", value=unknown[0], field=where)
    name = entry.get("name")
    if not isinstance(name, str) or not name or name != name.strip():
        raise ImageCatalogError(
            "expected a non-empty image name", value=name, field=f"{where}.name"
        )
    where = f"image {name!r}"
    aliases = _text_list(entry.get("aliases", []), f"{where}.aliases")
    architecture = entry.get("architecture", arch)
    if not isinstance(architecture, str) or not architecture:
        raise ImageCatalogError(
            "expected an architecture name", value=architecture, field=f"{where}.architecture"
        )
    raw_labels = entry.get("labels", {})
    if not isinstance(raw_labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw_labels.items()
    ):
        raise ImageCatalogError(
            "labels must map label names to strings", value=raw_labels, field=f"{where}.labels"
        )
    labels = dict(raw_labels)
    for label in _REQUIRED_LABELS:
        if not labels.get(label):
            raise ImageCatalogError("required label missing", value=label, field=f"{where}.labels")
    runtime_type = labels["ai.backend.runtime-type"]
    if runtime_type not in RUNTIME_TYPES:
        raise ImageCatalogError(
            f"runtime type must be one of {', '.join(RUNTIME_TYPES)}",
            value=runtime_type,
            field=f"{where}.labels.ai.backend.runtime-type",
        )
    runtime_path = labels.get("ai.backend.runtime-path", "")
    if not runtime_path:
        runtime_path = "/bin/sh" if runtime_type == "shell" else default_python
        labels["ai.backend.runtime-path"] = runtime_path
    try:
        service_ports = tuple(parse_service_ports(labels.get("ai.backend.service-ports", "")))
    except ServiceError as exc:
        raise ImageCatalogError(
            exc.problem,
            value=labels.get("ai.backend.service-ports"),
            field=f"{where}.labels.ai.backend.service-ports",
        ) from None
    corecount = tuple(
        n.strip() for n in labels.get("ai.backend.envs.corecount", "").split(",") if n.strip()
    )
    for env_name in corecount:
        if not env_name.replace("_", "a").isalnum() or env_name[0].isdigit():
            raise ImageCatalogError(
                "not an environment variable name",
                value=env_name,
                field=f"{where}.labels.ai.backend.envs.corecount",
            )
    min_resources = {
        key[len("ai.backend.resource.min.") :]: value
        for key, value in labels.items()
        if key.startswith("ai.backend.resource.min.")
    }
    service_defs: Path | None = None
    if "service-defs" in entry:
        raw_defs = entry["service-defs"]
        if not isinstance(raw_defs, str) or not raw_defs:
            raise ImageCatalogError(
                "expected a folder path", value=raw_defs, field=f"{where}.service-defs"
            )
        service_defs = Path(raw_defs).expanduser()
        if not service_defs.is_absolute() and base_dir is not None:
            service_defs = base_dir / service_defs
        service_defs = service_defs.resolve()
    return Image(
        name=name,
        aliases=aliases,
        architecture=architecture,
        labels=labels,
        runtime_type=runtime_type,
        runtime_path=runtime_path,
        service_ports=service_ports,
        corecount_envs=corecount,
        min_resources=min_resources,
        service_defs=service_defs,
    )


def parse_catalog(
    text: str,
    *,
    source: str = "<catalog>",
    base_dir: Path | None = None,
    default_python: str = sys.executable,
) -> ImageCatalog:
    """Build a catalog from TOML *text*; relative ``service-defs`` resolve against *base_dir*."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ImageCatalogError(f"{source}: not valid TOML ({exc})", value=source) from None
    unknown = sorted(set(data) - {"image"})
    if unknown:
        raise ImageCatalogError(f"{source}: unknown top-level key", value=unknown[0])
    entries = data.get("image", [])
    if not isinstance(entries, list):
        raise ImageCatalogError(f"{source}: expected [[image]] tables", value=entries)
    arch = host_architecture()
    try:
        return ImageCatalog(
            _image(entry, i, base_dir=base_dir, default_python=default_python, arch=arch)
            for i, entry in enumerate(entries)
        )
    except ImageCatalogError as exc:
        raise ImageCatalogError(
            f"{source}: {exc.problem}", value=exc.value, field=exc.field
        ) from None


def load_catalog(path: Path | None, *, default_python: str = sys.executable) -> ImageCatalog:
    """Read the catalog at *path*, or the built-in :data:`DEFAULT_CATALOG` when None.

    Blocking file I/O for start-up; raises :class:`ImageCatalogError`.
    """
    if path is None:
        return parse_catalog(
            DEFAULT_CATALOG, source="built-in catalog", default_python=default_python
        )
    try:
        with path.open("rb") as f:
            raw = f.read(_MAX_CATALOG_BYTES + 1)
    except OSError as exc:
        raise ImageCatalogError(
            f"cannot read the image catalog: {exc.strerror}", value=str(path)
        ) from None
    if len(raw) > _MAX_CATALOG_BYTES:
        raise ImageCatalogError("image catalog larger than 1 MiB", value=str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ImageCatalogError("image catalog is not UTF-8", value=str(path)) from None
    return parse_catalog(
        text, source=str(path), base_dir=path.resolve().parent, default_python=default_python
    )
