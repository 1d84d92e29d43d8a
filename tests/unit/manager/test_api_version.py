"""API version parsing and the ASGI front door (raw target, /vN prefixes, X-Method-Override)."""

from __future__ import annotations

from typing import Any

import pytest

from bai.common.errors import InvalidValue
from bai.manager.api.errors import UnsupportedApiVersion
from bai.manager.api.version import (
    API_VERSION,
    MIN_API_VERSION,
    OVERRIDE_REFUSED,
    PATH_MAJOR,
    RAW_TARGET,
    ApiVersion,
    FrontDoor,
    parse_api_version,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v6.20220615", ApiVersion(6, "20220615")),
        (" v6.20220615 ", ApiVersion(6, "20220615")),
        ("v5.20191215", ApiVersion(5, "20191215")),
        ("v4.20190315", ApiVersion(4, "20190315")),
        ("v6.20240101", ApiVersion(6, "20240101")),
    ],
)
def test_supported_versions_parse(text: str, expected: ApiVersion) -> None:
    assert parse_api_version(text) == expected


def test_our_version_is_what_the_official_client_negotiates_down_to() -> None:
    # backend.ai-client 23.9.10 speaks v7.20230615 and signs with min(ours, its own).
    assert str(API_VERSION) == "v6.20220615"
    assert min(API_VERSION, ApiVersion(7, "20230615")) == API_VERSION


@pytest.mark.parametrize("text", ["v7.20230615", "v8.20240915", "v3.20170615", "v4.20181215"])
def test_too_new_or_too_old_versions_are_refused(text: str) -> None:
    with pytest.raises(UnsupportedApiVersion) as caught:
        parse_api_version(text)
    assert text in str(caught.value)
    assert str(MIN_API_VERSION) in str(caught.value)


@pytest.mark.parametrize("text", ["", "6.20220615", "v6", "v6.2022061", "v6.20221340", "vx.y"])
def test_malformed_versions_name_the_header(text: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_api_version(text)
    assert caught.value.field == "X-BackendAI-Version"


async def _through_front_door(
    method: str, path: str, raw_path: bytes, query: bytes = b"", headers: Any = ()
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "headers": list(headers),
    }
    await FrontDoor(app)(scope, None, None)
    return seen


async def test_raw_target_keeps_encoding_and_query() -> None:
    seen = await _through_front_door("GET", "/a b", b"/a%20b", b"x=1&y=%2F")
    assert seen[RAW_TARGET] == "/a%20b?x=1&y=%2F"
    assert seen["path"] == "/a b"


async def test_raw_target_has_no_question_mark_without_query() -> None:
    seen = await _through_front_door("GET", "/session", b"/session")
    assert seen[RAW_TARGET] == "/session"


@pytest.mark.parametrize(
    ("path", "routed", "major"),
    [
        ("/v6/session/abc", "/session/abc", 6),
        ("/v4", "/", 4),
        ("/v5/", "/", 5),
        ("/v9/session", "/v9/session", None),
        ("/v60/session", "/v60/session", None),
        ("/v6session", "/v6session", None),
    ],
)
async def test_supported_version_prefixes_are_stripped(
    path: str, routed: str, major: int | None
) -> None:
    seen = await _through_front_door("GET", path, path.encode())
    assert seen["path"] == routed
    assert seen.get(PATH_MAJOR) == major
    # The signature covers what the client sent, prefix included.
    assert seen[RAW_TARGET] == path


async def test_post_with_method_override_is_routed_as_that_method() -> None:
    seen = await _through_front_door(
        "POST", "/x", b"/x", headers=[(b"x-method-override", b" report ")]
    )
    assert seen["method"] == "REPORT"
    assert OVERRIDE_REFUSED not in seen


@pytest.mark.parametrize(
    ("method", "override"), [("GET", b"DELETE"), ("POST", b"BREW"), ("POST", b"")]
)
async def test_bad_overrides_are_flagged_and_not_applied(method: str, override: bytes) -> None:
    seen = await _through_front_door(
        method, "/x", b"/x", headers=[(b"X-Method-Override", override)]
    )
    assert seen["method"] == method
    assert seen[OVERRIDE_REFUSED] == override.decode()
