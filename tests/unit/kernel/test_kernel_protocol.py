"""The agent <-> kernel runner wire contract: what is accepted, what is refused."""

from __future__ import annotations

import msgpack
import pytest

from bai.kernel.protocol import (
    DEFAULT_SERVICE_TIMEOUT,
    INBOUND_OPS,
    MAX_SERVICE_TIMEOUT,
    ProtocolError,
    decode_inbound,
    decode_outbound,
    encode,
    error_context,
)


def _raw(op: object, payload: object) -> bytes:
    return msgpack.packb([op, payload])


def test_code_message_round_trips() -> None:
    message = decode_inbound(encode("code", {"run_id": "r1", "code": "print(1)", "extra": 5}))
    assert message.op == "code"
    assert message.payload == {"run_id": "r1", "code": "print(1)"}
    op, payload = message
    assert message == (op, payload) == ("code", {"run_id": "r1", "code": "print(1)"})


def test_optional_fields_get_their_defaults() -> None:
    start = decode_inbound(encode("start-service", {"name": "jupyter"})).payload
    assert start == {
        "request_id": None,
        "name": "jupyter",
        "ports": None,
        "timeout": DEFAULT_SERVICE_TIMEOUT,
        "envs": {},
        "definition": None,
    }
    assert decode_inbound(encode("exec", {"run_id": "r"})).payload == {
        "run_id": "r",
        "command": None,
    }
    assert decode_inbound(encode("interrupt", {})).payload == {"run_id": None}


def test_every_inbound_op_is_accepted_with_its_minimal_payload() -> None:
    minimal = {
        "code": {"run_id": "r", "code": ""},
        "input": {"run_id": "r", "text": ""},
        "continue": {"run_id": "r"},
        "interrupt": {},
        "complete": {"code": "pri"},
        "clean": {"run_id": "r"},
        "build": {"run_id": "r"},
        "exec": {"run_id": "r"},
        "status": {},
        "start-service": {"name": "x"},
        "shutdown-service": {"name": "x"},
        "get-apps": {},
    }
    assert set(minimal) == INBOUND_OPS
    for op, payload in minimal.items():
        assert decode_inbound(encode(op, payload)).op == op


def test_service_timeout_is_clamped_to_the_maximum() -> None:
    payload = decode_inbound(encode("start-service", {"name": "x", "timeout": 1e9})).payload
    assert payload["timeout"] == MAX_SERVICE_TIMEOUT


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\xc1garbage", "not a msgpack message"),
        (msgpack.packb({"op": "code"}), "expected an [op, payload] array"),
        (_raw(5, {}), "op: op must be a string"),
        (_raw("code", [1, 2]), "payload must be a map"),
        (_raw("launch", {}), "op: unknown op (got 'launch')"),
        (_raw("code", {"code": "x"}), "code.run_id: expected a non-empty string (got None)"),
        (_raw("code", {"run_id": "", "code": "x"}), "code.run_id: expected a non-empty string"),
        (_raw("code", {"run_id": "r", "code": 5}), "code.code: expected a string (got 5)"),
        (_raw("input", {"run_id": "r"}), "input.text: expected a string"),
        (_raw("start-service", {"name": "x", "ports": [0]}), "start-service.ports: expected port"),
        (
            _raw("start-service", {"name": "x", "ports": []}),
            "start-service.ports: expected a non-empty",
        ),
        (
            _raw("start-service", {"name": "x", "timeout": -1}),
            "start-service.timeout: must be positive",
        ),
        (
            _raw("start-service", {"name": "x", "timeout": True}),
            "start-service.timeout: expected a number",
        ),
        (_raw("start-service", {"name": "x", "envs": {"A=B": "c"}}), "start-service.envs"),
        (_raw("start-service", {"name": ""}), "start-service.name: expected a non-empty string"),
        (_raw("complete", {"code": "x", "options": {"col": -1}}), "complete.options.col"),
        (_raw("complete", {"code": "x", "options": "line"}), "complete.options: expected a map"),
    ],
)
def test_bad_messages_are_refused_naming_the_field(raw: bytes, expected: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_inbound(raw)
    assert expected in str(info.value)


def test_error_context_recovers_the_ids_of_a_bad_message() -> None:
    assert error_context(_raw("code", {"run_id": "r9", "code": 5})) == ("code", "r9", None)
    assert error_context(_raw("status", {"request_id": "q"})) == ("status", None, "q")
    assert error_context(b"\xc1") == (None, None, None)


def test_text_with_lone_surrogates_is_sent_replaced() -> None:
    op, payload = decode_outbound(encode("stdout", {"run_id": None, "text": "a\udcffb"}))
    assert (op, payload["text"]) == ("stdout", "a?b")


def test_unknown_outbound_records_are_refused() -> None:
    with pytest.raises(ProtocolError, match="unknown record type"):
        decode_outbound(encode("teapot", {}))
