"""RFC 7807 answers for every kind of failure, and the input helpers' guarantees.

A small QuartTrio app with the API's error handlers is driven through
Quart's ASGI test client: the same request path as in production, minus
the network.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from quart import Response
from quart_trio import QuartTrio

from bai.common.auth import DateSkewed, MissingCredentials, SignatureMismatch
from bai.common.errors import BaiError, InvalidValue
from bai.common.slots import ResourceSlot
from bai.manager.api.errors import Conflict, PayloadTooLarge, register_error_handlers
from bai.manager.api.helpers import json_response, read_json, read_params, read_query
from bai.manager.db import DatabaseTimeout

PROBLEM = "application/problem+json"


class Mounts(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    path: str = "/home/work"


class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    key: str
    count: int = 0
    flag: bool = False
    mounts: list[Mounts] = []
    resources: dict[str, int] = {}


class SessionAlreadyExists(BaiError):
    http_status = 400
    error_type = "session-already-exists"
    error_title = "The session already exists."

    def __init__(self, session_id: str) -> None:
        super().__init__("a session with that name is running")
        self.extra_data = {"existingSessionId": session_id}


RAISED: dict[str, BaseException] = {
    "invalid": InvalidValue("must be positive", value=-1, field="cpu"),
    "missing-auth": MissingCredentials(),
    "mismatch": SignatureMismatch("AKIATEST"),
    "skew": DateSkewed("must be within 15 minutes", value="x", field="Date"),
    "conflict": Conflict("the name is taken", data={"name": "s1"}),
    "declared": SessionAlreadyExists("abc"),
    "db-timeout": DatabaseTimeout("a read took longer than 5 s"),
    "db-lost": sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection")),
    "bug": KeyError("secret internal detail"),
}


def make_app() -> QuartTrio:
    app = QuartTrio(__name__, static_folder=None)
    register_error_handlers(app)

    @app.route("/raise/<name>", methods=["GET"])
    async def raise_(name: str) -> Response:
        raise RAISED[name]

    @app.route("/body", methods=["POST"])
    async def body() -> Response:
        parsed = await read_json(Body, max_size=4096)
        return json_response(msgspec.to_builtins(parsed))

    @app.route("/any", methods=["POST"])
    async def any_() -> Response:
        return json_response(await read_json(dict[str, Any], max_size=4096))

    @app.route("/query", methods=["GET"])
    async def query() -> Response:
        return json_response(msgspec.to_builtins(read_query(Body)))

    @app.route("/params", methods=["GET", "POST", "DELETE"])
    async def params() -> Response:
        return json_response(msgspec.to_builtins(await read_params(Body)))

    @app.route("/encode", methods=["GET"])
    async def encode() -> Response:
        return json_response(
            {
                "id": uuid.UUID(int=1),
                "at": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
                "amount": Decimal("1.50"),
                "slots": ResourceSlot({"cpu": 2, "mem": 1024}),
            },
            status=201,
            headers={"X-Extra": "1"},
        )

    return app


async def call(method: str, path: str, data: bytes | None = None) -> tuple[int, Any, Any]:
    client = make_app().test_client()
    response = await client.open(path, method=method, data=data)
    return response.status_code, response.headers, json.loads(await response.get_data())


def assert_problem(headers: Any, body: dict[str, Any], status: int, kind: str) -> None:
    assert headers["Content-Type"] == PROBLEM
    assert body["type"] == f"https://api.backend.ai/probs/{kind}"
    assert body["status"] == status
    assert body["title"]


async def test_invalid_value_is_400_naming_the_field() -> None:
    status, headers, body = await call("GET", "/raise/invalid")
    assert status == 400
    assert_problem(headers, body, 400, "invalid-api-params")
    assert body["field"] == "cpu"
    assert body["data"] == {"cpu": "must be positive"}
    assert "-1" in body["detail"]
    assert body["msg"] == body["detail"]


@pytest.mark.parametrize("name", ["missing-auth", "mismatch"])
async def test_missing_or_wrong_credentials_are_401(name: str) -> None:
    status, headers, body = await call("GET", f"/raise/{name}")
    assert status == 401
    assert_problem(headers, body, 401, "unauthorized")


async def test_malformed_auth_headers_are_400_naming_the_header() -> None:
    status, headers, body = await call("GET", "/raise/skew")
    assert status == 400
    assert_problem(headers, body, 400, "invalid-auth-params")
    assert body["field"] == "Date"


async def test_api_errors_keep_status_type_and_data() -> None:
    status, headers, body = await call("GET", "/raise/conflict")
    assert status == 409
    assert_problem(headers, body, 409, "conflict")
    assert body["detail"] == "the name is taken"
    assert body["data"] == {"name": "s1"}


async def test_any_bai_error_with_a_declared_status_is_answered_with_it() -> None:
    status, headers, body = await call("GET", "/raise/declared")
    assert status == 400
    assert_problem(headers, body, 400, "session-already-exists")
    assert body["title"] == "The session already exists."
    assert body["data"] == {"existingSessionId": "abc"}


@pytest.mark.parametrize(("name", "secret"), [("db-timeout", "5 s"), ("db-lost", "SELECT")])
async def test_database_trouble_is_503_without_details(name: str, secret: str) -> None:
    status, headers, body = await call("GET", f"/raise/{name}")
    assert status == 503
    assert_problem(headers, body, 503, "service-unavailable")
    assert secret not in json.dumps(body)


async def test_unexpected_errors_are_500_without_internals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="bai.manager.api.errors"):
        status, headers, body = await call("GET", "/raise/bug")
    assert status == 500
    assert_problem(headers, body, 500, "internal-server-error")
    text = json.dumps(body)
    assert "secret internal detail" not in text and "KeyError" not in text
    reference = body["detail"].rsplit(" ", 1)[-1]
    assert any(reference in record.getMessage() for record in caplog.records)
    assert any(record.exc_info for record in caplog.records)


async def test_unknown_route_and_wrong_method_are_problems() -> None:
    status, headers, body = await call("GET", "/nowhere")
    assert status == 404
    assert_problem(headers, body, 404, "generic-not-found")
    assert "/nowhere" in body["detail"]
    status, headers, body = await call("PUT", "/body")
    assert status == 405
    assert_problem(headers, body, 405, "method-not-allowed")
    assert "POST" in headers["Allow"]


async def test_body_parses_into_the_struct() -> None:
    payload = {"key": "k", "count": 3, "mounts": [{"name": "v"}], "resources": {"cpu": 1}}
    status, _, body = await call("POST", "/body", json.dumps(payload).encode())
    assert status == 200
    assert body == {**payload, "flag": False, "mounts": [{"name": "v", "path": "/home/work"}]}


@pytest.mark.parametrize(
    ("payload", "field", "echo"),
    [
        (b'{"key": 1}', "key", "(got 1)"),
        (b'{"key": "k", "count": "3"}', "count", "(got '3')"),
        (b'{"count": 3}', "key", None),
        (b'{"key": "k", "extra": true}', "extra", "(got True)"),
        (b'{"key": "k", "mounts": [{"name": "a"}, {"name": 5}]}', "mounts.1.name", "(got 5)"),
        (b'{"key": "k", "mounts": [{"path": "/x"}]}', "mounts.0.name", None),
        (b'{"key": "k", "resources": {"cpu": "x"}}', "resources.*", None),
    ],
)
async def test_wrong_types_name_the_field(payload: bytes, field: str, echo: str | None) -> None:
    status, headers, body = await call("POST", "/body", payload)
    assert status == 400
    assert_problem(headers, body, 400, "invalid-api-params")
    assert body["field"] == field
    assert body["detail"].startswith(f"{field}: ")
    if echo is None:
        assert "(got" not in body["detail"]
    else:
        assert body["detail"].endswith(echo)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b'{"key": ', "not valid JSON"),
        (b'{"key": "k",', "not valid JSON"),
        (b"[1, 2]", "Expected `object`, got `array`"),
        (b'{"key": "\xff"}', "UTF-8"),
        (b'{"key": "a\\u0000b"}', "NUL"),
    ],
)
async def test_malformed_bodies_name_the_problem(payload: bytes, problem: str) -> None:
    status, headers, body = await call("POST", "/body", payload)
    assert status == 400
    assert_problem(headers, body, 400, "invalid-api-params")
    assert problem in body["detail"]
    assert "field" not in body


async def test_deep_nesting_is_refused_not_crashed() -> None:
    status, headers, body = await call("POST", "/any", b'{"a": ' + b"[" * 3000)
    assert status == 400
    assert_problem(headers, body, 400, "invalid-api-params")
    assert "nested too deeply" in body["detail"]


async def test_an_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    status, _, body = await call("POST", "/body", b'{"key": "a\\\\u0000b"}')
    assert status == 200
    assert body["key"] == "a\\u0000b"


async def test_empty_body_counts_as_an_empty_object() -> None:
    status, _, body = await call("POST", "/body", b"")
    assert status == 400
    assert body["field"] == "key"


async def test_oversized_body_is_413() -> None:
    status, headers, body = await call("POST", "/body", b'{"key": "' + b"x" * 5000 + b'"}')
    assert status == 413
    assert_problem(headers, body, 413, PayloadTooLarge.error_type)


async def test_query_strings_are_converted_leniently() -> None:
    status, _, body = await call("GET", "/query?key=k&count=7&flag=true")
    assert status == 200
    assert (body["key"], body["count"], body["flag"]) == ("k", 7, True)
    status, _, body = await call("GET", "/query?key=k&count=seven")
    assert status == 400
    assert body["field"] == "count"
    assert body["detail"].endswith("(got 'seven')")


async def test_params_come_from_the_query_for_get_and_bodiless_requests() -> None:
    status, _, body = await call("GET", "/params?key=q")
    assert (status, body["key"]) == (200, "q")
    status, _, body = await call("DELETE", "/params?key=d")
    assert (status, body["key"]) == (200, "d")
    status, _, body = await call("POST", "/params?key=q", b'{"key": "b"}')
    assert (status, body["key"]) == (200, "b")


async def test_json_response_encodes_api_types() -> None:
    client = make_app().test_client()
    response = await client.get("/encode")
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Extra"] == "1"
    assert json.loads(await response.get_data()) == {
        "id": "00000000-0000-0000-0000-000000000001",
        "at": "2024-01-02T03:04:05Z",
        "amount": "1.50",
        "slots": {"cpu": "2", "mem": "1024"},
    }
