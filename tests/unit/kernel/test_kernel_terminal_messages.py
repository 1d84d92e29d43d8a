"""The PTY protocol's JSON messages as the kernel's terminal server reads and writes them."""

from __future__ import annotations

import base64
import json

import pytest

from bai.kernel.terminal import (
    MessageError,
    Ping,
    Resize,
    Restart,
    Stdin,
    error_message,
    http_response,
    out_message,
    parse_message,
)
from bai.kernel.webterm import PAGE


def _parse(message: object) -> object:
    return parse_message(json.dumps(message).encode())


def test_the_spec_messages_parse() -> None:
    chars = base64.b64encode(b"ls -l\r\x03\x1b[A").decode()
    assert _parse({"type": "stdin", "chars": chars}) == Stdin(b"ls -l\r\x03\x1b[A")
    assert _parse({"type": "stdin", "chars": ""}) == Stdin(b"")
    assert _parse({"type": "resize", "rows": 25, "cols": 80}) == Resize(25, 80)
    assert _parse({"type": "resize", "rows": 1, "cols": 1000}) == Resize(1, 1000)
    assert _parse({"type": "ping"}) == Ping()
    assert _parse({"type": "restart"}) == Restart()
    # Unknown extra keys are ignored, as everywhere in the protocol.
    assert _parse({"type": "ping", "extra": [1]}) == Ping()


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"{", "message: not JSON"),
        (b"", "message: not JSON"),
        (b"[1, 2]", "message: expected a JSON object (got [1, 2])"),
        (b'"stdin"', "message: expected a JSON object"),
        (b"{}", 'type: expected one of "stdin", "resize", "ping", "restart" (got None)'),
        (b'{"type": "exec"}', "type: expected one of"),
        (b'{"type": "stdin"}', "chars: expected a base64 string (got None)"),
        (b'{"type": "stdin", "chars": 5}', "chars: expected a base64 string (got 5)"),
        (b'{"type": "stdin", "chars": "a*b="}', "chars: not valid base64"),
        (b'{"type": "stdin", "chars": "abc"}', "chars: not valid base64"),
        (b'{"type": "resize", "cols": 80}', "rows: expected an integer 1..1000 (got None)"),
        (b'{"type": "resize", "rows": 0, "cols": 80}', "rows: expected an integer 1..1000 (got 0)"),
        (b'{"type": "resize", "rows": 24, "cols": 1001}', "cols: expected an integer 1..1000"),
        (b'{"type": "resize", "rows": 24, "cols": -5}', "cols: expected an integer 1..1000"),
        (b'{"type": "resize", "rows": 2.5, "cols": 80}', "rows: expected an integer 1..1000"),
        (b'{"type": "resize", "rows": true, "cols": 80}', "rows: expected an integer 1..1000"),
        (b'{"type": "resize", "rows": "24", "cols": 80}', "rows: expected an integer 1..1000"),
    ],
)
def test_bad_messages_are_refused_naming_the_field(raw: bytes, text: str) -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(raw)
    assert str(caught.value).startswith(text)


def test_a_long_bad_value_is_cut_in_the_error() -> None:
    with pytest.raises(MessageError) as caught:
        _parse({"type": "x" * 5000})
    assert len(str(caught.value)) < 200
    assert "(5002 chars)" in str(caught.value)


def test_output_and_errors_are_the_spec_json() -> None:
    data = bytes(range(256))
    decoded = json.loads(out_message(data))
    assert decoded == {"type": "out", "data": base64.b64encode(data).decode()}
    assert base64.b64decode(decoded["data"]) == data
    assert json.loads(error_message('rows: "bad" ✓')) == {
        "type": "error",
        "data": 'rows: "bad" ✓',
    }


def test_http_responses_close_and_carry_their_length() -> None:
    response = http_response(405, b"only GET\n", Allow="GET")
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 405 Method Not Allowed"
    assert {"Content-Length: 9", "Connection: close", "Allow: GET"} <= set(lines)
    assert body == b"only GET\n"


def test_the_page_is_self_contained_and_talks_to_pty_beside_it() -> None:
    text = PAGE.decode("utf-8")
    assert text.startswith("<!doctype html>")
    assert 'new URL("pty", location.href)' in text
    # No script, style or font comes from elsewhere.
    for needle in ("src=", "href=", "@import", "url("):
        assert needle not in text
