"""Multipart bodies: the upload encoder's size promise and the download parser."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from bai.client import BackendClientError
from bai.client.multipart import (
    MultipartParser,
    MultipartUpload,
    PartData,
    PartEnd,
    PartStart,
    boundary_of,
    plan_upload,
)
from bai.common.errors import InvalidValue


def collect(parser: MultipartParser, chunks: list[bytes]) -> list[tuple[dict[str, str], bytes]]:
    parts: list[tuple[dict[str, str], bytes]] = []
    headers: dict[str, str] = {}
    data = b""
    for chunk in chunks:
        for event in parser.feed(chunk):
            if isinstance(event, PartStart):
                headers, data = event.headers, b""
            elif isinstance(event, PartData):
                data += event.data
            elif isinstance(event, PartEnd):
                parts.append((headers, data))
    parser.close()
    return parts


def body_of(boundary: str, payloads: list[bytes]) -> bytes:
    body = b"preamble to ignore\r\n"
    for index, payload in enumerate(payloads):
        head = f"--{boundary}\r\nContent-Type: application/x-tar\r\nX-Index: {index}\r\n\r\n"
        body += head.encode()
        body += payload + b"\r\n"
    return body + f"--{boundary}--\r\nepilogue".encode()


@given(
    st.lists(st.binary(max_size=300), max_size=4),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_parts_survive_any_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    boundary = "b0und4ry"
    body = body_of(boundary, payloads)
    positions = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *positions], [*positions, len(body)], strict=True)]
    parts = collect(MultipartParser(boundary), chunks)
    assert [data for _, data in parts] == payloads
    assert [h["x-index"] for h, _ in parts] == [str(i) for i in range(len(payloads))]


def test_payload_that_looks_like_a_boundary_prefix_is_kept() -> None:
    payload = b"--b0und4r\r\n--b0und4\r\n-"
    assert collect(MultipartParser("b0und4ry"), [body_of("b0und4ry", [payload])])[0][1] == payload


def test_truncated_body_is_an_error() -> None:
    body = body_of("xyz", [b"data"])
    parser = MultipartParser("xyz")
    parser.feed(body[: body.index(b"--xyz--")])
    with pytest.raises(BackendClientError, match="closing delimiter"):
        parser.close()


def test_garbage_header_line_is_an_error() -> None:
    with pytest.raises(BackendClientError, match="header"):
        MultipartParser("xyz").feed(b"--xyz\r\nno colon here\r\n\r\n")


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/mixed; boundary=abc", "abc"),
        ('multipart/mixed; charset=utf-8; boundary="a b:c"', "a b:c"),
    ],
)
def test_boundary_of(content_type: str, boundary: str) -> None:
    assert boundary_of(content_type) == boundary


@pytest.mark.parametrize(
    "content_type", ["application/json", "multipart/mixed", "multipart/mixed; boundary=" + "x" * 71]
)
def test_bad_content_type_is_refused(content_type: str) -> None:
    with pytest.raises(BackendClientError):
        boundary_of(content_type)


def test_plan_upload_names_files_relative_to_basedir(tmp_path: Path) -> None:
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "main.py").write_text("print(1)\n")
    (tmp_path / "outside.txt").write_text("x")
    planned = plan_upload([tmp_path / "src" / "pkg" / "main.py"], tmp_path / "src")
    assert [(p.name, p.size) for p in planned] == [("pkg/main.py", 9)]
    with pytest.raises(InvalidValue, match="outside of the base directory"):
        plan_upload([tmp_path / "outside.txt"], tmp_path / "src")
    with pytest.raises(InvalidValue, match="cannot be read"):
        plan_upload([tmp_path / "missing.py"], tmp_path)
    with pytest.raises(InvalidValue, match="not a regular file"):
        plan_upload([tmp_path / "src"], tmp_path)


async def test_upload_body_has_exactly_the_announced_length(tmp_path: Path) -> None:
    (tmp_path / 'we"ird\nname.bin').write_bytes(bytes(range(256)) * 700)
    (tmp_path / "empty").write_bytes(b"")
    planned = plan_upload([tmp_path / 'we"ird\nname.bin', tmp_path / "empty"], tmp_path)
    reported: list[int] = []
    body = MultipartUpload(planned, progress=reported.append)
    sent = b"".join([chunk async for chunk in body])
    assert len(sent) == body.content_length
    assert sum(reported) == 256 * 700
    assert b'filename="we%22ird%0Aname.bin"' in sent


async def test_file_growing_during_upload_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    body = MultipartUpload(plan_upload([path], tmp_path))
    path.write_bytes(b"abcdef")
    with pytest.raises(BackendClientError, match="changed size"):
        async for _ in body:
            await trio.lowlevel.checkpoint()
