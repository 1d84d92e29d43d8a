"""The server side of RFC 6455 WebSockets, stdlib only: the opening handshake and the framing.

Pure functions and a sans-I/O :class:`Decoder`; the caller owns the socket
(:mod:`bai.kernel.terminal` drives them from a ``poll`` loop).

Guarantees:

* :func:`parse_request_head` accepts an HTTP/1.1 request head (request line,
  headers, the blank line) and nothing else; :func:`handshake` accepts only a
  ``GET`` upgrade to ``websocket`` with version 13 and a 16-byte key, and
  raises :class:`HandshakeError` with the HTTP status to answer otherwise;
* the :class:`Decoder` delivers whole messages (fragments joined) and
  control frames in arrival order, and fails the connection with
  :class:`WebSocketError` carrying the close code RFC 6455 prescribes:
  1002 for a broken frame (unmasked, reserved bits, unknown opcode,
  fragmented or oversized control frame, continuation out of place, bad
  close payload), 1007 for TEXT that is not UTF-8, 1009 for a message over
  its limit -- the latter as soon as a frame header announces it, before the
  payload is read;
* frames the server sends are unmasked (:func:`encode_frame`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from typing import Final, NamedTuple

GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
_DATA_OPS: Final = frozenset({OP_TEXT, OP_BINARY})
_CONTROL_OPS: Final = frozenset({OP_CLOSE, OP_PING, OP_PONG})

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_INVALID_DATA: Final = 1007
CLOSE_TOO_BIG: Final = 1009
CLOSE_INTERNAL_ERROR: Final = 1011
#: Close codes a peer may send (RFC 6455 section 7.4; 3000-4999 are for applications).
_SENDABLE_CODES: Final = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011})

#: Largest request head :func:`parse_request_head` is given (bytes).
MAX_HEAD: Final = 16 * 1024


class HandshakeError(Exception):
    """A request the handshake refuses: answer HTTP *status* with *reason* as the body."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class WebSocketError(Exception):
    """The peer broke the protocol: send a close frame with *code* and *reason*, then close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class Request(NamedTuple):
    """An HTTP request head: header names lower-cased, repeated headers joined by ``, ``."""

    method: str
    target: str
    headers: dict[str, str]

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]


def parse_request_head(head: bytes) -> Request:
    """Parse a request head ending with the empty line; :class:`HandshakeError` 400 if broken."""
    text = head.decode("latin-1")  # every byte decodes: HTTP heads are bytes, not text
    if not text.endswith("\r\n\r\n"):
        raise HandshakeError(400, "the request head does not end with an empty line")
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1] or parts[2] != "HTTP/1.1":
        raise HandshakeError(400, f"bad request line {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or any(c in name for c in " \t"):
            raise HandshakeError(400, f"bad header line {line[:100]!r}")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return Request(parts[0], parts[1], headers)


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value answering a ``Sec-WebSocket-Key``."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def handshake(request: Request) -> bytes:
    """The ``101 Switching Protocols`` response to a WebSocket upgrade request.

    Raises :class:`HandshakeError` (405, 400, or 426 for another protocol
    version) when *request* is not an acceptable upgrade.
    """
    if request.method != "GET":
        raise HandshakeError(405, "a WebSocket upgrade must be a GET request")
    headers = request.headers
    if "websocket" not in _tokens(headers.get("upgrade", "")):
        raise HandshakeError(400, "expected the header Upgrade: websocket")
    if "upgrade" not in _tokens(headers.get("connection", "")):
        raise HandshakeError(400, "expected the header Connection: Upgrade")
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise HandshakeError(426, "only WebSocket version 13 is supported")
    key = headers.get("sec-websocket-key", "").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        raise HandshakeError(400, "Sec-WebSocket-Key must be 16 bytes in base64")
    return (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
        "\r\n"
    ).encode("ascii")


def mask_bytes(data: bytes, mask: bytes) -> bytes:
    """*data* XOR-ed with the 4-byte *mask* repeated (masking and unmasking are the same)."""
    size = len(data)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    # One big-integer XOR: linear time in C, far faster than a Python loop over bytes.
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


def encode_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None
) -> bytes:
    """One frame; servers send *mask* None, clients (tests) a 4-byte mask."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if size < 126:
        header = struct.pack("!BB", first, mask_bit | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if mask is None:
        return header + payload
    return header + mask + mask_bytes(payload, mask)


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame: *code* and *reason* cut to fit 125 bytes."""
    data = reason.encode("utf-8")[:123]
    return struct.pack("!H", code) + data.decode("utf-8", "ignore").encode("utf-8")


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """A close frame's ``(code, reason)`` (None: no code); :class:`WebSocketError` if invalid."""
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "a close payload of one byte")
    (code,) = struct.unpack("!H", payload[:2])
    if code not in _SENDABLE_CODES and not 3000 <= code <= 4999:
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, f"close code {code} may not be sent")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise WebSocketError(CLOSE_INVALID_DATA, "a close reason that is not UTF-8") from None
    return code, reason


class Message(NamedTuple):
    """A whole data message (TEXT payloads are valid UTF-8) or one control frame."""

    opcode: int
    payload: bytes


class Decoder:
    """Turns the bytes a client sends into :class:`Message` items (see the module docstring)."""

    def __init__(self, max_message: int) -> None:
        self._max = max_message
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_size = 0
        self._fragment_op: int | None = None

    def feed(self, data: bytes) -> list[Message]:
        """Add received bytes; the messages they complete, in order.

        After a :class:`WebSocketError` the decoder must not be fed again.
        """
        self._buffer += data
        messages: list[Message] = []
        buffer = self._buffer
        offset = 0
        while True:
            parsed = self._frame(buffer, offset)
            if parsed is None:
                break
            offset, fin, opcode, payload = parsed
            message = self._message(fin, opcode, payload)
            if message is not None:
                messages.append(message)
        del buffer[:offset]
        return messages

    def _frame(self, buffer: bytearray, offset: int) -> tuple[int, bool, int, bytes] | None:
        """``(next offset, fin, opcode, unmasked payload)`` of the frame at *offset*, or None."""
        available = len(buffer) - offset
        if available < 2:
            return None
        first, second = buffer[offset], buffer[offset + 1]
        fin = bool(first & 0x80)
        opcode = first & 0x0F
        if first & 0x70:
            raise WebSocketError(CLOSE_PROTOCOL_ERROR, "reserved bits set without an extension")
        if opcode not in _DATA_OPS and opcode not in _CONTROL_OPS and opcode != OP_CONTINUATION:
            raise WebSocketError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        if not second & 0x80:
            raise WebSocketError(CLOSE_PROTOCOL_ERROR, "a client frame must be masked")
        size = second & 0x7F
        header = 2
        if size == 126:
            if available < 4:
                return None
            (size,) = struct.unpack_from("!H", buffer, offset + 2)
            header = 4
        elif size == 127:
            if available < 10:
                return None
            (size,) = struct.unpack_from("!Q", buffer, offset + 2)
            header = 10
        if opcode in _CONTROL_OPS:
            if not fin:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "a fragmented control frame")
            if size > 125:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "a control frame over 125 bytes")
        else:
            if opcode == OP_CONTINUATION and self._fragment_op is None:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "a continuation frame with no message")
            if opcode != OP_CONTINUATION and self._fragment_op is not None:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "a new message inside a fragmented one")
            if self._fragment_size + size > self._max:
                raise WebSocketError(CLOSE_TOO_BIG, f"a message over {self._max} bytes")
        end = offset + header + 4 + size
        if len(buffer) < end:
            return None
        mask = bytes(buffer[offset + header : offset + header + 4])
        payload = mask_bytes(bytes(buffer[offset + header + 4 : end]), mask)
        return end, fin, opcode, payload

    def _message(self, fin: bool, opcode: int, payload: bytes) -> Message | None:
        if opcode in _CONTROL_OPS:
            if opcode == OP_CLOSE:
                parse_close(payload)  # validate; the caller parses it again for the code
            return Message(opcode, payload)
        if opcode != OP_CONTINUATION:
            self._fragment_op = opcode
        self._fragments.append(payload)
        self._fragment_size += len(payload)
        if not fin:
            return None
        whole_op = self._fragment_op
        assert whole_op is not None
        whole = payload if len(self._fragments) == 1 else b"".join(self._fragments)
        self._fragments = []
        self._fragment_size = 0
        self._fragment_op = None
        if whole_op == OP_TEXT:
            try:
                whole.decode("utf-8")
            except UnicodeDecodeError:
                raise WebSocketError(
                    CLOSE_INVALID_DATA, "a TEXT message that is not UTF-8"
                ) from None
        return Message(whole_op, whole)
