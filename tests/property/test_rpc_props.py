"""Properties of the RPC envelopes and the SP framing: what is encoded decodes
to the same value, and no input makes a decoder fail with anything but its
typed error."""

from __future__ import annotations

import socket
from typing import Any

import msgpack
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bai.common import _nng
from bai.common.rpc import (
    MAX_HOPS,
    RemoteError,
    RPCProtocolError,
    decode_reply,
    decode_request,
    encode_err,
    encode_ok,
    encode_request,
    split_backtrace,
)

# Values msgpack carries unchanged (NaN is left out only because NaN != NaN).
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), inner, max_size=4)
    ),
    max_leaves=20,
)
method_names = st.text(min_size=1, max_size=30)


@given(method_names, values)
def test_requests_round_trip(method: str, args: Any) -> None:
    assert decode_request(encode_request(method, args)) == (method, args)


@given(values)
def test_ok_replies_round_trip(result: Any) -> None:
    assert decode_reply(encode_ok(result)) == result


@given(st.text(max_size=20), st.text(max_size=50), values)
def test_err_replies_raise_remote_error(type_name: str, message: str, detail: Any) -> None:
    try:
        decode_reply(encode_err(type_name, message, detail), "m")
    except RemoteError as exc:
        assert (exc.remote_type, exc.remote_message, exc.detail) == (type_name, message, detail)
        assert exc.method == "m"
    else:
        raise AssertionError("an err reply must raise RemoteError")


# Arbitrary bytes, and msgpack values of any shape, mangled.
garbage = st.binary(max_size=64) | values.map(lambda v: msgpack.packb(v)).flatmap(
    lambda data: st.integers(0, len(data)).map(lambda cut: data[:cut])
)


@given(garbage)
def test_decode_request_fails_only_with_protocol_errors(data: bytes) -> None:
    try:
        method, _ = decode_request(data)
    except RPCProtocolError as exc:
        assert str(exc)
    else:
        assert isinstance(method, str) and method


@given(garbage)
def test_decode_reply_fails_only_with_typed_errors(data: bytes) -> None:
    try:
        decode_reply(data)
    except (RPCProtocolError, RemoteError) as exc:
        assert str(exc)


@given(st.binary(max_size=48))
def test_backtrace_split_is_word_aligned_and_ends_with_the_request_id(frame: bytes) -> None:
    try:
        end = split_backtrace(frame)
    except RPCProtocolError:
        words = [frame[i : i + 4] for i in range(0, min(len(frame), MAX_HOPS * 4), 4)]
        assert not any(len(w) == 4 and w[0] & 0x80 for w in words)
    else:
        assert end % 4 == 0 and 4 <= end <= MAX_HOPS * 4 <= 32
        assert frame[end - 4] & 0x80
        assert not any(frame[i] & 0x80 for i in range(0, end - 4, 4))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=st.lists(st.binary(max_size=300), min_size=1, max_size=8),
    ipc=st.booleans(),
    max_size=st.integers(0, 300),
    piece=st.integers(1, 64),
)
async def test_frames_survive_any_chunking(
    frames: list[bytes], ipc: bool, max_size: int, piece: int
) -> None:
    ours, theirs = socket.socketpair()
    stream = _nng.SocketFrameStream(ours, ipc=ipc)
    head = b"\x01" if ipc else b""
    wire = b"".join(head + len(f).to_bytes(8, "big") + f for f in frames)
    received: list[bytes | _nng.Oversized] = []
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:

                async def receive_all() -> None:
                    for _ in frames:
                        received.append(await stream.receive_frame(max_size))

                nursery.start_soon(receive_all)
                for start in range(0, len(wire), piece):
                    theirs.sendall(wire[start : start + piece])
                    await trio.testing.wait_all_tasks_blocked()
    finally:
        stream.close()
        theirs.close()
    expected = [
        f if len(f) <= max_size else _nng.Oversized(f[: _nng.OVERSIZED_PREFIX], len(f))
        for f in frames
    ]
    assert received == expected
