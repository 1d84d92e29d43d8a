"""The runner's outbound record queue: ordering, merging, truncation, flushing.

Every record the runner sends goes through one :class:`Outbox`, so records
leave in the order they were produced.  Guarantees:

* adjacent ``stdout`` (or ``stderr``) text of the same run is merged into one
  record, up to :data:`MAX_CHUNK` characters;
* pending text is sent within ``flush_interval`` seconds of being written, and
  at once when any other record is queued behind it;
* per output window (see :mod:`bai.kernel.protocol`) each stream forwards at
  most ``limit`` characters, then exactly one truncation notice; the rest is
  dropped without being stored, so no amount of output grows memory;
* when the agent does not read, writers of text block once
  ``high_water`` characters are pending (back-pressure instead of memory).
"""

from __future__ import annotations

import datetime
import sys
import threading
import time
from collections import deque

from bai.kernel.protocol import FLUSH_INTERVAL, OUTPUT_LIMIT, TRUNCATION_MARKER, encode

TYPE_CHECKING = False  # typing is imported for the type checker only: kernel start-up time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final

#: Most characters one merged stdout/stderr record carries.
MAX_CHUNK: Final = 65_536
STREAMS: Final = ("stdout", "stderr")


def log_record(level: str, logger: str, message: str, run_id: str | None = None) -> dict[str, Any]:
    """The payload of a ``log`` record of *run_id* (None: no run) stamped now (ISO 8601, UTC)."""
    now = datetime.datetime.now(datetime.UTC)
    return {
        "run_id": run_id,
        "level": level,
        "time": now.isoformat(timespec="milliseconds"),
        "logger": logger,
        "message": message,
    }


class _Text:
    __slots__ = ("op", "parts", "run_id", "size")

    def __init__(self, op: str, run_id: str | None, text: str) -> None:
        self.op = op
        self.run_id = run_id
        self.parts = [text]
        self.size = len(text)


class Outbox:
    """Ordered, merging, bounded queue in front of a blocking ``send``.

    ``send`` is called from the outbox's own thread with each packed message;
    it may block (back-pressure) and should raise to give a message up.
    """

    def __init__(
        self,
        send: Callable[[bytes], None],
        *,
        limit: int = OUTPUT_LIMIT,
        flush_interval: float = FLUSH_INTERVAL,
        high_water: int = 8 * 1024 * 1024,
    ) -> None:
        self._send = send
        self._limit = limit
        self._flush_interval = flush_interval
        self._high_water = high_water
        self._cond = threading.Condition()
        self._pending: deque[_Text | tuple[str, dict[str, Any]]] = deque()
        self._pending_chars = 0
        self._urgent = False
        self._first_at = 0.0
        self._counts = dict.fromkeys(STREAMS, 0)
        self._closing = False
        self._run_id: str | None = None
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)

    def start(self) -> None:
        """Start the sending thread."""
        self._thread.start()

    def new_window(self) -> None:
        """Open a new output window: each stream may forward ``limit`` characters again."""
        with self._cond:
            self._counts = dict.fromkeys(STREAMS, 0)

    def begin_run(self, run_id: str) -> None:
        """A run (or batch step) starts: a new output window, and :meth:`log` stamps its id."""
        with self._cond:
            self._counts = dict.fromkeys(STREAMS, 0)
            self._run_id = run_id

    def end_run(self) -> None:
        """The run of :meth:`begin_run` ended: :meth:`log` records carry no run again."""
        with self._cond:
            self._run_id = None

    def log(self, level: str, logger: str, message: str) -> None:
        """Queue a ``log`` record of the runner, stamped with the active run's id (if any)."""
        with self._cond:
            self.record("log", log_record(level, logger, message, self._run_id))

    def write(self, run_id: str | None, stream: str, text: str) -> None:
        """Queue console text of *stream* (``stdout`` or ``stderr``), applying the limit."""
        if not text:
            return
        with self._cond:
            used = self._counts[stream]
            if used > self._limit:
                return  # already truncated in this window, notice already queued
            room = self._limit - used
            if len(text) <= room:
                self._counts[stream] = used + len(text)
            else:
                self._counts[stream] = self._limit + 1
                notice = (
                    f"\n{TRUNCATION_MARKER} {stream} exceeded {self._limit:,} characters in this"
                    " execute call; the rest of it is dropped while the program keeps running.\n"
                )
                text = text[:room] + notice
            while self._pending_chars >= self._high_water and not self._closing:
                self._cond.wait()
            self._append_text(run_id, stream, text)

    def _append_text(self, run_id: str | None, stream: str, text: str) -> None:
        if not self._pending:
            self._first_at = time.monotonic()
        last = self._pending[-1] if self._pending else None
        while text:
            if (
                isinstance(last, _Text)
                and last.op == stream
                and last.run_id == run_id
                and last.size < MAX_CHUNK
            ):
                piece = text[: MAX_CHUNK - last.size]
                last.parts.append(piece)
                last.size += len(piece)
            else:
                piece = text[:MAX_CHUNK]
                last = _Text(stream, run_id, piece)
                self._pending.append(last)
            text = text[len(piece) :]
            self._pending_chars += len(piece)
            if last.size >= MAX_CHUNK:
                self._urgent = True
        self._cond.notify_all()

    def record(self, op: str, payload: dict[str, Any]) -> None:
        """Queue any other record; it and all text before it are sent promptly."""
        with self._cond:
            if not self._pending:
                self._first_at = time.monotonic()
            self._pending.append((op, payload))
            self._urgent = True
            self._cond.notify_all()

    def close(self, timeout: float) -> None:
        """Send what is pending (for at most *timeout* seconds) and stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _take(self) -> list[_Text | tuple[str, dict[str, Any]]] | None:
        with self._cond:
            while not self._pending:
                if self._closing:
                    return None
                self._cond.wait()
            while not (self._urgent or self._closing):
                remaining = self._first_at + self._flush_interval - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = list(self._pending)
            self._pending.clear()
            self._pending_chars = 0
            self._urgent = False
            self._cond.notify_all()
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            for entry in batch:
                if isinstance(entry, _Text):
                    op = entry.op
                    payload: dict[str, Any] = {"run_id": entry.run_id, "text": "".join(entry.parts)}
                else:
                    op, payload = entry
                try:
                    self._send(encode(op, payload))
                except Exception as exc:
                    print(f"bai.kernel: dropped a {op!r} record: {exc!r}", file=sys.stderr)
