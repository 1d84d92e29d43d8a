"""The local backend's image catalog: names, aliases, runtimes, labels, and bad entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from bai.agent.images import (
    DEFAULT_CATALOG,
    ImageCatalogError,
    UnknownImage,
    host_architecture,
    load_catalog,
    parse_catalog,
)

REPO = Path(__file__).resolve().parents[3]

GOOD = """
[[image]]
name = "python:3.11"
aliases = ["python"]
service-defs = "defs"
[image.labels]
"ai.backend.kernelspec" = "1"
"ai.backend.runtime-type" = "python"
"ai.backend.resource.min.cpu" = "1"
"ai.backend.resource.min.mem" = "256m"
"ai.backend.service-ports" = "jupyter:http:8080,vnc:tcp:[5900,5901]"
"ai.backend.envs.corecount" = "OMP_NUM_THREADS, NPROC"

[[image]]
name = "r:4"
architecture = "aarch64"
[image.labels]
"ai.backend.kernelspec" = "1"
"ai.backend.runtime-type" = "app"
"ai.backend.runtime-path" = "/usr/bin/R"
"""


def test_entries_resolve_by_name_and_alias() -> None:
    catalog = parse_catalog(GOOD, base_dir=Path("/etc/bai"), default_python="/opt/py/bin/python")
    image = catalog.resolve("python")
    assert catalog.resolve("python:3.11") is image
    assert image.architecture == host_architecture()
    assert image.runtime_type == "python"
    # No runtime-path label: the given Python, also written back into the labels.
    assert image.runtime_path == "/opt/py/bin/python"
    assert image.labels["ai.backend.runtime-path"] == "/opt/py/bin/python"
    assert [(s.name, s.protocol, s.ports) for s in image.service_ports] == [
        ("jupyter", "http", (8080,)),
        ("vnc", "tcp", (5900, 5901)),
    ]
    assert image.corecount_envs == ("OMP_NUM_THREADS", "NPROC")
    assert image.min_resources == {"cpu": "1", "mem": "256m"}
    assert image.service_defs == Path("/etc/bai/defs")
    assert image.to_json()["resources"] == {"cpu": {"min": "1"}, "mem": {"min": "256m"}}
    r = catalog.resolve("r:4", "aarch64")
    assert r.runtime_path == "/usr/bin/R" and r.service_ports == ()


def test_unknown_names_and_architectures() -> None:
    catalog = parse_catalog(GOOD)
    with pytest.raises(UnknownImage, match="ruby"):
        catalog.resolve("ruby")
    if host_architecture() != "aarch64":
        with pytest.raises(UnknownImage):
            catalog.resolve("r:4")


def test_the_repository_catalog_and_the_built_in_one_load() -> None:
    catalog = load_catalog(REPO / "configs" / "images.toml")
    python = catalog.resolve("python")
    assert python.service_defs is not None
    assert (python.service_defs / "http.json").is_file()
    assert catalog.resolve("sh").runtime_type == "shell"
    built_in = load_catalog(None)
    assert built_in.resolve("python3").name == "python:3.11"
    assert "python:3.11" in DEFAULT_CATALOG


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            ('"ai.backend.runtime-type" = "python"', '"ai.backend.runtime-type" = "cobol"'),
            "runtime-type",
        ),
        (
            (
                '"ai.backend.kernelspec" = "1"\n"ai.backend.runtime-type"',
                '"ai.backend.runtime-type"',
            ),
            "labels",
        ),
        (("jupyter:http:8080", "jupyter:http:2000"), "service-ports"),
        (("jupyter:http:8080", "jupyter:smtp:8080"), "service-ports"),
        (('"OMP_NUM_THREADS, NPROC"', '"1BAD"'), "corecount"),
        (('aliases = ["python"]', 'aliases = ["python", 3]'), "aliases"),
        (('aliases = ["python"]', 'aliases = ["python"]\ncolour = "red"'), "image[0]"),
        (('name = "r:4"', 'name = "python"'), "image"),
    ],
)
def test_bad_entries_are_named(change: tuple[str, str], field: str) -> None:
    old, new = change
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    if field == "image":
        text = text.replace('architecture = "aarch64"\n', "")
    with pytest.raises(ImageCatalogError) as info:
        parse_catalog(text, source="catalog.toml")
    assert field in str(info.value)
    assert "catalog.toml" in str(info.value)


def test_unreadable_catalog_files(tmp_path: Path) -> None:
    with pytest.raises(ImageCatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[image]\n")
    with pytest.raises(ImageCatalogError, match="not valid TOML"):
        load_catalog(broken)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ImageCatalogError, match="not UTF-8"):
        load_catalog(binary)
    with pytest.raises(ImageCatalogError, match="unknown top-level key"):
        parse_catalog('[agent]\nid = "x"\n')
