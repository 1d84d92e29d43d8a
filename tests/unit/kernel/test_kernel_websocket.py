"""The runner's RFC 6455 server side, checked against wsproto's independent client."""

from __future__ import annotations

import base64
import os
import struct

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)

from bai.kernel import websocket as ws

MASK = b"\x01\x02\x03\x04"


def _client() -> WSConnection:
    """A wsproto client past its handshake, whose frames are masked as a browser's are."""
    client = WSConnection(ConnectionType.CLIENT)
    request = client.send(Request(host="kernel", target="/pty"))
    head = ws.parse_request_head(request)
    client.receive_data(ws.handshake(head))
    assert isinstance(next(client.events()), AcceptConnection)
    return client


def _decode(data: bytes, max_message: int = 1 << 20) -> list[ws.Message]:
    return ws.Decoder(max_message).feed(data)


def _error(data: bytes, max_message: int = 1 << 20) -> ws.WebSocketError:
    with pytest.raises(ws.WebSocketError) as caught:
        _decode(data, max_message)
    return caught.value


# -- the handshake -------------------------------------------------------------


def test_the_accept_key_is_rfc_6455s_example() -> None:
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_browser_style_upgrade_is_answered_with_101() -> None:
    head = (
        b"GET /pty?x=1 HTTP/1.1\r\nHost: k:7681\r\nUpgrade: WebSocket\r\n"
        b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    request = ws.parse_request_head(head)
    assert (request.method, request.target, request.path) == ("GET", "/pty?x=1", "/pty")
    assert request.headers["host"] == "k:7681"
    response = ws.handshake(request)
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert response.endswith(b"\r\n\r\n")


def test_repeated_headers_are_joined() -> None:
    request = ws.parse_request_head(
        b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nconnection: Upgrade\r\n\r\n"
    )
    assert request.headers["connection"] == "keep-alive, Upgrade"


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: k\r\n",  # no empty line
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n: empty name\r\n\r\n",
    ],
)
def test_broken_request_heads_are_400(head: bytes) -> None:
    with pytest.raises(ws.HandshakeError) as caught:
        ws.parse_request_head(head)
    assert caught.value.status == 400


GOOD = {
    "upgrade": "websocket",
    "connection": "Upgrade",
    "sec-websocket-version": "13",
    "sec-websocket-key": base64.b64encode(os.urandom(16)).decode(),
}


@pytest.mark.parametrize(
    ("method", "change", "status", "words"),
    [
        ("POST", {}, 405, "GET"),
        ("GET", {"upgrade": "h2c"}, 400, "Upgrade: websocket"),
        ("GET", {"connection": "keep-alive"}, 400, "Connection: Upgrade"),
        ("GET", {"sec-websocket-version": "8"}, 426, "version 13"),
        ("GET", {"sec-websocket-key": "c2hvcnQ="}, 400, "16 bytes"),
        ("GET", {"sec-websocket-key": "not base64!"}, 400, "16 bytes"),
    ],
)
def test_bad_upgrades_are_refused_with_the_right_status(
    method: str, change: dict[str, str], status: int, words: str
) -> None:
    with pytest.raises(ws.HandshakeError) as caught:
        ws.handshake(ws.Request(method, "/pty", {**GOOD, **change}))
    assert caught.value.status == status
    assert words in caught.value.reason


# -- frames from a client ---------------------------------------------------------


def test_masked_client_messages_of_every_length_class_decode() -> None:
    client = _client()
    for text in ("", "hi", "x" * 125, "y" * 126, "z" * 65535, "w" * 65536, "한글 ✓" * 1000):
        assert _decode(client.send(TextMessage(text))) == [
            ws.Message(ws.OP_TEXT, text.encode("utf-8"))
        ]
    binary = os.urandom(70000)
    assert _decode(client.send(BytesMessage(binary))) == [ws.Message(ws.OP_BINARY, binary)]


def test_bytes_fed_one_at_a_time_give_the_same_messages() -> None:
    client = _client()
    data = (
        client.send(TextMessage("first"))
        + client.send(Ping(b"p"))
        + client.send(TextMessage("second" * 100))
    )
    decoder = ws.Decoder(1 << 20)
    messages = [m for i in range(len(data)) for m in decoder.feed(data[i : i + 1])]
    assert messages == [
        ws.Message(ws.OP_TEXT, b"first"),
        ws.Message(ws.OP_PING, b"p"),
        ws.Message(ws.OP_TEXT, b"second" * 100),
    ]


def test_fragments_are_joined_and_control_frames_pass_between_them() -> None:
    client = _client()
    data = (
        client.send(TextMessage("ab", message_finished=False))
        + client.send(Ping(b"between"))
        + client.send(TextMessage("cd", message_finished=False))
        + client.send(TextMessage("ef", message_finished=True))
    )
    assert _decode(data) == [
        ws.Message(ws.OP_PING, b"between"),
        ws.Message(ws.OP_TEXT, b"abcdef"),
    ]


def test_a_utf8_character_split_across_fragments_is_fine() -> None:
    encoded = "é".encode()
    data = ws.encode_frame(ws.OP_TEXT, encoded[:1], fin=False, mask=MASK) + ws.encode_frame(
        ws.OP_CONTINUATION, encoded[1:], mask=MASK
    )
    assert _decode(data) == [ws.Message(ws.OP_TEXT, encoded)]


def test_a_close_frame_is_delivered_with_its_code() -> None:
    client = _client()
    [message] = _decode(client.send(CloseConnection(code=4000, reason="bye ✓")))
    assert message.opcode == ws.OP_CLOSE
    assert ws.parse_close(message.payload) == (4000, "bye ✓")
    assert ws.parse_close(b"") == (None, "")


@pytest.mark.parametrize(
    ("frame", "code", "words"),
    [
        (ws.encode_frame(ws.OP_TEXT, b"hi"), 1002, "masked"),
        (bytes([0x80 | 0x40 | ws.OP_TEXT, 0x80]) + MASK, 1002, "reserved bits"),
        (ws.encode_frame(0x3, b"", mask=MASK), 1002, "unknown opcode"),
        (ws.encode_frame(0xB, b"", mask=MASK), 1002, "unknown opcode"),
        (ws.encode_frame(ws.OP_PING, b"x" * 126, mask=MASK), 1002, "over 125"),
        (ws.encode_frame(ws.OP_PING, b"x", fin=False, mask=MASK), 1002, "fragmented control"),
        (ws.encode_frame(ws.OP_CONTINUATION, b"x", mask=MASK), 1002, "continuation"),
        (
            ws.encode_frame(ws.OP_TEXT, b"a", fin=False, mask=MASK)
            + ws.encode_frame(ws.OP_TEXT, b"b", mask=MASK),
            1002,
            "inside a fragmented",
        ),
        (ws.encode_frame(ws.OP_TEXT, b"\xff\xfe", mask=MASK), 1007, "UTF-8"),
        (ws.encode_frame(ws.OP_CLOSE, b"\x03", mask=MASK), 1002, "one byte"),
        (ws.encode_frame(ws.OP_CLOSE, struct.pack("!H", 1005), mask=MASK), 1002, "1005"),
        (ws.encode_frame(ws.OP_CLOSE, struct.pack("!H", 999), mask=MASK), 1002, "999"),
        (ws.encode_frame(ws.OP_CLOSE, struct.pack("!H", 2999), mask=MASK), 1002, "2999"),
        (ws.encode_frame(ws.OP_CLOSE, struct.pack("!H", 1000) + b"\xff", mask=MASK), 1007, "UTF-8"),
    ],
)
def test_broken_frames_fail_with_the_rfc_close_code(frame: bytes, code: int, words: str) -> None:
    error = _error(frame)
    assert error.code == code
    assert words in error.reason


def test_an_oversized_message_fails_on_its_header_before_the_payload_arrives() -> None:
    header = ws.encode_frame(ws.OP_TEXT, b"x" * 1025, mask=MASK)[:8]  # 2 + 2 length + 4 mask
    error = _error(header[:4], max_message=1024)
    assert (error.code, error.reason) == (1009, "a message over 1024 bytes")
    # A 64-bit length announcing far more than memory holds fails the same way.
    huge = bytes([0x80 | ws.OP_BINARY, 0x80 | 127]) + struct.pack("!Q", 1 << 62)
    assert _error(huge).code == 1009


def test_fragments_count_together_against_the_limit() -> None:
    data = ws.encode_frame(ws.OP_TEXT, b"x" * 600, fin=False, mask=MASK) + ws.encode_frame(
        ws.OP_CONTINUATION, b"y" * 600, mask=MASK
    )
    assert _error(data, max_message=1024).code == 1009
    assert _decode(data, max_message=1200) == [ws.Message(ws.OP_TEXT, b"x" * 600 + b"y" * 600)]


# -- frames to a client -------------------------------------------------------------


def test_server_frames_of_every_length_class_reach_an_independent_client() -> None:
    client = _client()
    sent = ["", "hi", "x" * 125, "y" * 126, "z" * 65535, "w" * 65536]
    for text in sent:
        client.receive_data(ws.encode_frame(ws.OP_TEXT, text.encode()))
    received = [event.data for event in client.events() if isinstance(event, TextMessage)]
    assert received == sent


def test_a_close_payload_fits_a_control_frame_and_keeps_whole_characters() -> None:
    payload = ws.close_payload(1000, "é" * 100)
    assert len(payload) <= 125
    code, reason = ws.parse_close(payload)
    assert code == 1000
    assert reason == "é" * 61
    client = _client()
    client.receive_data(ws.encode_frame(ws.OP_CLOSE, ws.close_payload(1009, "too big")))
    [event] = client.events()
    assert isinstance(event, CloseConnection)
    assert (event.code, event.reason) == (1009, "too big")


def test_masking_twice_gives_the_data_back() -> None:
    data = os.urandom(1001)
    assert ws.mask_bytes(ws.mask_bytes(data, MASK), MASK) == data
    assert ws.mask_bytes(b"", MASK) == b""
    assert ws.mask_bytes(b"\x00\x00\x00\x00\x00", MASK) == MASK + MASK[:1]
