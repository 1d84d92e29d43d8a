"""The Server-Sent Events parser, alone and over a real HTTP stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from quart import Response

from bai.client import APIClient, BackendClientError
from bai.client.sse import SSEEvent, SSEParser

from support.fakemanager import FakeManager, Recorded, manager, sse_response

__all__ = ["manager"]


def parse(*chunks: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def test_named_events_with_json_data() -> None:
    events = parse(b'event: session_started\ndata: {"sessionId": "a"}\n\n')
    assert events == [SSEEvent("session_started", '{"sessionId": "a"}')]
    assert events[0].json() == {"sessionId": "a"}


def test_every_line_ending_and_multi_line_data() -> None:
    events = parse(b"data: one\r\ndata:two\rdata:  three\n\r\n")
    assert events == [SSEEvent("message", "one\ntwo\n three")]


def test_comments_unknown_fields_and_empty_events_are_ignored() -> None:
    events = parse(b": keep-alive\n\nevent: x\nfoo: bar\n\nevent: y\ndata\n\n")
    # "event: x" had no data: not dispatched; a bare "data" line is empty data.
    assert events == [SSEEvent("y", "")]


def test_id_and_retry_are_kept() -> None:
    events = parse(b"id: 7\nretry: 1500\ndata: a\n\ndata: b\n\n")
    assert [(e.id, e.retry, e.data) for e in events] == [("7", 1500, "a"), ("7", 1500, "b")]


def test_crlf_split_between_chunks_makes_one_line_break() -> None:
    events = parse(b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n")
    assert [e.data for e in events] == ["a", "b"]


def test_utf8_character_split_between_chunks() -> None:
    encoded = "data: 세션\n\n".encode()
    assert parse(encoded[:8], encoded[8:])[0].data == "세션"


def test_byte_order_mark_and_unfinished_event() -> None:
    assert parse(b"\xef\xbb\xbfdata: a\n\ndata: never dispatched") == [SSEEvent("message", "a")]


def test_non_json_data_raises_a_client_error() -> None:
    with pytest.raises(BackendClientError, match="not JSON"):
        SSEEvent("x", "{oops").json()


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["session_started", "session_terminated", "message"]),
            st.text(
                alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
                max_size=20,
            ),
        ),
        max_size=5,
    ),
    st.sampled_from([b"\n", b"\r\n", b"\r"]),
    st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_any_chunking_yields_the_same_events(
    events: list[tuple[str, str]], newline: bytes, cuts: list[int]
) -> None:
    body = b"".join(
        b"event: " + name.encode() + newline + b"data: " + data.encode() + newline + newline
        for name, data in events
    )
    positions = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *positions], [*positions, len(body)], strict=True)]
    assert [(e.event, e.data) for e in parse(*chunks)] == events


async def test_event_stream_over_http(manager: FakeManager) -> None:
    async def stream(recorded: Recorded) -> Response:
        return sse_response(
            [("session_preparing", {"sessionId": "s"}), ("session_started", {"sessionId": "s"})]
        )

    manager.add("GET", "/events/session", stream)
    async with (
        APIClient(manager.config()) as api,
        api.events("/events/session", params={"name": "s"}) as events,
    ):
        received = [(e.event, e.json()) for e in [e async for e in events]]
    assert received == [
        ("session_preparing", {"sessionId": "s"}),
        ("session_started", {"sessionId": "s"}),
    ]
    assert manager.last().query == {"name": ["s"]}


async def test_non_stream_answer_is_refused(manager: FakeManager) -> None:
    manager.answer("GET", "/events/session", {"not": "a stream"})
    async with APIClient(manager.config()) as api:
        with pytest.raises(BackendClientError, match="text/event-stream"):
            async with api.events("/events/session"):
                pass


async def test_event_streams_outlive_the_read_timeout(manager: FakeManager) -> None:
    async def slow_stream(recorded: Recorded) -> Response:
        async def body() -> AsyncIterator[bytes]:
            await trio.sleep(0.3)
            yield b"event: late\ndata: {}\n\n"

        response = Response(body(), content_type="text/event-stream")
        response.timeout = None
        return response

    async def slow_answer(recorded: Recorded) -> Response:
        await trio.sleep(0.3)
        return Response("{}", content_type="application/json")

    manager.add("GET", "/events/session", slow_stream)
    manager.add("GET", "/session/s1", slow_answer)
    async with APIClient(manager.config(read_timeout=0.1)) as api:
        async with api.events("/events/session") as events:
            assert [e.event async for e in events] == ["late"]
        with pytest.raises(BackendClientError, match="timed out"):
            await api.fetch_json("GET", "/session/s1")
