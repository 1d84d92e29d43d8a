"""Server-Sent Events: an incremental parser for ``text/event-stream`` bodies.

:class:`SSEParser` follows the WHATWG event-stream interpretation rules:
lines end with CRLF, LF or CR (also when a CRLF is split between chunks);
``event``, ``data``, ``id`` and ``retry`` fields; lines starting with ``:`` are
comments; one space after the colon is dropped; a blank line dispatches the
event; an event without data lines is not dispatched; several ``data`` lines
join with ``\\n``.  Bytes are decoded as UTF-8 incrementally (a multi-byte
character may be split between chunks; invalid bytes become U+FFFD, as
browsers do).  A final event not ended by a blank line is discarded, as the
standard says.

The parser is pure (no I/O), so the transport feeds it whatever chunks arrive.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass
from typing import Any, Final

from bai.client.exceptions import MalformedResponse

__all__ = ["SSEEvent", "SSEParser"]

#: A line longer than this (without a line break) is refused: a stream gone wrong.
MAX_LINE_CHARS: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its type (``event``, default ``message``), data and id."""

    event: str
    data: str
    id: str = ""
    retry: int | None = None

    def json(self) -> Any:
        """Parse :attr:`data` as JSON; raises :class:`MalformedResponse` if it is not."""
        try:
            return json.loads(self.data)
        except ValueError:
            raise MalformedResponse(
                "is not JSON", value=self.data, field=f"data of event {self.event!r}"
            ) from None


class SSEParser:
    """Turns chunks of an event stream into :class:`SSEEvent` objects."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._skip_lf = False
        self._started = False
        self._event = ""
        self._data: list[str] = []
        self._last_id = ""
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume *chunk*; return the events it completed, in order."""
        text = self._decoder.decode(chunk)
        if not self._started and text:
            # A leading byte-order mark is not part of the first field name.
            text = text.removeprefix("\ufeff")
            self._started = True
        if self._skip_lf and text:
            text = text.removeprefix("\n")
            self._skip_lf = False
        self._buffer += text
        events: list[SSEEvent] = []
        start = 0
        buffer = self._buffer
        while True:
            cr = buffer.find("\r", start)
            lf = buffer.find("\n", start)
            if cr < 0 and lf < 0:
                break
            if cr < 0 or (0 <= lf < cr):
                end, next_start = lf, lf + 1
            elif cr == len(buffer) - 1:
                # A CR at the very end may be the first half of a CRLF.
                end, next_start = cr, cr + 1
                self._skip_lf = True
            elif buffer[cr + 1] == "\n":
                end, next_start = cr, cr + 2
            else:
                end, next_start = cr, cr + 1
            event = self._line(buffer[start:end])
            if event is not None:
                events.append(event)
            start = next_start
        self._buffer = buffer[start:]
        if len(self._buffer) > MAX_LINE_CHARS:
            raise MalformedResponse(
                f"is longer than {MAX_LINE_CHARS} characters",
                value=self._buffer[:100],
                field="event stream line",
            )
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        event_type, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return SSEEvent(event=event_type, data="\n".join(data), id=self._last_id, retry=self._retry)
