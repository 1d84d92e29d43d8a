"""The runner's outbox: print order, merging, truncation, bounded memory, flushing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bai.kernel.output import MAX_CHUNK, Outbox
from bai.kernel.protocol import TRUNCATION_MARKER, decode_outbound


class Collector:
    """A ``send`` that records what it is given; it can be made to block."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.open = threading.Event()
        self.open.set()
        self.lock = threading.Lock()

    def __call__(self, data: bytes) -> None:
        self.open.wait()
        with self.lock:
            self.records.append(decode_outbound(data))

    def wait_for(self, op: str, timeout: float = 5.0) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if any(r[0] == op for r in self.records):
                    return list(self.records)
            time.sleep(0.005)
        raise AssertionError(f"no {op!r} record in {self.records}")


@pytest.fixture
def sent() -> Collector:
    return Collector()


@pytest.fixture
def outbox(sent: Collector) -> Iterator[Outbox]:
    box = Outbox(sent, limit=100, flush_interval=0.05)
    box.start()
    yield box
    sent.open.set()
    box.close(2.0)


def test_adjacent_text_of_one_stream_is_merged_in_print_order(
    outbox: Outbox, sent: Collector
) -> None:
    outbox.write("r", "stdout", "a")
    outbox.write("r", "stdout", "b")
    outbox.write("r", "stderr", "c")
    outbox.write("r", "stdout", "d")
    outbox.record("media", {"run_id": "r", "mime": "image/svg+xml", "data": "<svg/>"})
    outbox.write("r", "stdout", "e")
    outbox.record("finished", {"run_id": "r", "exit_code": 0})
    records = sent.wait_for("finished")
    assert [(op, p.get("text", p.get("mime"))) for op, p in records] == [
        ("stdout", "ab"),
        ("stderr", "c"),
        ("stdout", "d"),
        ("media", "image/svg+xml"),
        ("stdout", "e"),
        ("finished", None),
    ]


def test_text_of_different_runs_is_not_merged(outbox: Outbox, sent: Collector) -> None:
    outbox.write("r1", "stdout", "a")
    outbox.write("r2", "stdout", "b")
    outbox.record("finished", {"run_id": "r2", "exit_code": 0})
    records = sent.wait_for("finished")
    assert [(p["run_id"], p.get("text")) for _, p in records[:2]] == [("r1", "a"), ("r2", "b")]


def test_pending_text_is_flushed_without_any_later_record(outbox: Outbox, sent: Collector) -> None:
    outbox.write(None, "stdout", "tick\n")
    assert sent.wait_for("stdout", timeout=1.0) == [("stdout", {"run_id": None, "text": "tick\n"})]


def test_each_stream_is_truncated_once_per_window_with_a_marker(
    outbox: Outbox, sent: Collector
) -> None:
    for _ in range(30):
        outbox.write("r", "stdout", "0123456789")
    outbox.write("r", "stderr", "e" * 150)
    outbox.record("finished", {"run_id": "r", "exit_code": 0})
    records = sent.wait_for("finished")
    stdout = "".join(p["text"] for op, p in records if op == "stdout")
    stderr = "".join(p["text"] for op, p in records if op == "stderr")
    assert stdout.startswith("0123456789" * 10 + "\n" + TRUNCATION_MARKER)
    assert stdout.count(TRUNCATION_MARKER) == 1
    assert "exceeded 100 characters" in stdout
    assert stderr.startswith("e" * 100 + "\n" + TRUNCATION_MARKER)


def test_a_new_window_forwards_output_again(outbox: Outbox, sent: Collector) -> None:
    outbox.write("r", "stdout", "x" * 150)
    outbox.new_window()
    outbox.write("r", "stdout", "after")
    outbox.record("finished", {"run_id": "r", "exit_code": 0})
    records = sent.wait_for("finished")
    stdout = "".join(p["text"] for op, p in records if op == "stdout")
    assert stdout.endswith("running.\nafter")


def test_runner_logs_carry_the_active_run(outbox: Outbox, sent: Collector) -> None:
    outbox.log("info", "bai.kernel", "before")
    outbox.begin_run("r1")
    outbox.log("info", "bai.kernel", "during")
    outbox.end_run()
    outbox.log("warning", "service.web", "after")
    outbox.record("finished", {"run_id": "r1", "exit_code": 0})
    logs = [p for op, p in sent.wait_for("finished") if op == "log"]
    assert [(p["run_id"], p["message"]) for p in logs] == [
        (None, "before"),
        ("r1", "during"),
        (None, "after"),
    ]
    assert [(p["level"], p["logger"]) for p in logs][2] == ("warning", "service.web")
    assert all(p["time"].endswith("+00:00") for p in logs)


def test_a_run_starts_with_a_fresh_window(outbox: Outbox, sent: Collector) -> None:
    outbox.write("r1", "stdout", "x" * 150)
    outbox.begin_run("r2")
    outbox.write("r2", "stdout", "fresh")
    outbox.record("finished", {"run_id": "r2", "exit_code": 0})
    records = sent.wait_for("finished")
    assert "".join(p["text"] for op, p in records if op == "stdout" and p["run_id"] == "r2") == (
        "fresh"
    )


def test_megabytes_of_output_are_dropped_not_stored(sent: Collector) -> None:
    box = Outbox(sent, limit=1000)
    box.start()
    try:
        chunk = "y" * 100_000
        for _ in range(500):  # 50 MB
            box.write("r", "stdout", chunk)
        box.record("finished", {"run_id": "r", "exit_code": 0})
        records = sent.wait_for("finished")
    finally:
        box.close(2.0)
    total = sum(len(p["text"]) for op, p in records if op == "stdout")
    assert 1000 < total < 1300  # the limit plus one notice


def test_large_text_is_split_into_bounded_records(sent: Collector) -> None:
    box = Outbox(sent, limit=10 * MAX_CHUNK)
    box.start()
    try:
        box.write("r", "stdout", "z" * (3 * MAX_CHUNK + 5))
        box.record("finished", {"run_id": "r", "exit_code": 0})
        records = sent.wait_for("finished")
    finally:
        box.close(2.0)
    sizes = [len(p["text"]) for op, p in records if op == "stdout"]
    assert sum(sizes) == 3 * MAX_CHUNK + 5
    assert max(sizes) <= MAX_CHUNK


def test_writers_block_while_the_agent_does_not_read(sent: Collector) -> None:
    sent.open.clear()
    box = Outbox(sent, limit=10_000_000, high_water=1000)
    box.start()
    wrote: list[int] = []

    def writer() -> None:
        for i in range(100):
            box.write("r", "stdout", "w" * 100)
            wrote.append(i)

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.3)
    stalled_at = len(wrote)
    assert stalled_at < 100  # held back, not buffering everything
    sent.open.set()
    thread.join(5.0)
    box.close(2.0)
    assert len(wrote) == 100
    assert sum(len(p["text"]) for _, p in sent.records) == 100 * 100
