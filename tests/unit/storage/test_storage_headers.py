"""tus headers and HTTP ranges as the storage proxy reads them (bai.storage.tus, .ranges)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from bai.common.storage_api import StorageErrorType
from bai.storage import ranges, tus
from bai.storage.errors import StorageError

PATCH = {
    "tus-resumable": "1.0.0",
    "upload-offset": "42",
    "content-type": "application/offset+octet-stream",
}


def test_patch_headers_as_aiotusclient_sends_them() -> None:
    assert tus.check_patch_headers(PATCH) == 42


def test_tus_resumable_may_be_absent() -> None:
    assert tus.check_patch_headers({k: v for k, v in PATCH.items() if k != "tus-resumable"}) == 42


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("tus-resumable", "0.2.2", "Tus-Resumable"),
        ("content-type", "application/json", "Content-Type"),
        ("upload-offset", "-1", "Upload-Offset"),
        ("upload-offset", "1e3", "Upload-Offset"),
        ("upload-offset", "", "Upload-Offset"),
        ("upload-offset", "9" * 30, "Upload-Offset"),
        ("upload-offset", "١٢", "Upload-Offset"),  # non-ASCII digits
    ],
)
def test_bad_patch_headers_name_the_header(name: str, value: str, field: str) -> None:
    with pytest.raises(StorageError) as caught:
        tus.check_patch_headers({**PATCH, name: value})
    assert caught.value.error_type is StorageErrorType.INVALID_REQUEST
    assert caught.value.field == field


def test_missing_offset() -> None:
    with pytest.raises(StorageError, match="required"):
        tus.check_patch_headers({k: v for k, v in PATCH.items() if k != "upload-offset"})


def test_content_length() -> None:
    assert tus.content_length({}) is None
    assert tus.content_length({"content-length": "17"}) == 17
    with pytest.raises(StorageError):
        tus.content_length({"content-length": "x"})


def test_tus_headers() -> None:
    assert tus.tus_headers(Upload_Offset=5) == [
        (b"tus-resumable", b"1.0.0"),
        (b"upload-offset", b"5"),
    ]


_COUNTER = iter(range(1_000_000))


def _stat(size: int, mtime: int = 1_700_000_000) -> os.stat_result:
    path = Path(tempfile.gettempdir()) / f"bai-range-{os.getpid()}-{next(_COUNTER)}"
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime, mtime))
    try:
        return os.stat(path)
    finally:
        path.unlink()


def test_no_range_is_the_whole_file() -> None:
    span = ranges.requested_range({}, _stat(100))
    assert (span.start, span.end, span.partial) == (0, 100, False)


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=10-", 10, 100),
        ("bytes=10-19", 10, 20),
        ("bytes=90-500", 90, 100),
        ("bytes=-30", 70, 100),
        ("bytes=-500", 0, 100),
        ("BYTES = 0-0", 0, 1),
    ],
)
def test_single_ranges(header: str, start: int, end: int) -> None:
    span = ranges.requested_range({"range": header}, _stat(100))
    assert (span.start, span.end, span.partial) == (start, end, True)
    assert span.content_range() == f"bytes {start}-{end - 1}/100"


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=500-600", "bytes=-0"])
def test_unsatisfiable_ranges_are_416_with_the_size(header: str) -> None:
    with pytest.raises(StorageError) as caught:
        ranges.requested_range({"range": header}, _stat(100))
    assert caught.value.status == 416
    assert caught.value.headers == {"Content-Range": "bytes */100"}


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-1", "bytes=abc", "bytes=5-2"])
def test_ranges_not_honoured_give_the_whole_file(header: str) -> None:
    assert not ranges.requested_range({"range": header}, _stat(100)).partial


def test_if_range_with_the_current_validators_resumes() -> None:
    st = _stat(100)
    for validator in (ranges.last_modified(st), ranges.etag(st)):
        span = ranges.requested_range({"range": "bytes=10-", "if-range": validator}, st)
        assert span.partial and span.start == 10


def test_if_range_of_another_version_gives_the_whole_file() -> None:
    old = ranges.last_modified(_stat(100))
    changed = _stat(100, mtime=1_700_000_999)
    span = ranges.requested_range({"range": "bytes=10-", "if-range": old}, changed)
    assert not span.partial and span.start == 0
