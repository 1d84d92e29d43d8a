"""The agent's runner link: routing records, the execute long-poll, bounded buffers.

The test plays the kernel runner on the real wire (NNG Pull0/Push0 over
``ipc://``), sending exactly the records it wants the agent to see.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
import trio

from bai.agent.runnerlink import (
    PROTO_PULL0,
    PROTO_PUSH0,
    RUN_BUFFER_LIMIT,
    RunError,
    RunnerLink,
    RunnerLinkError,
)
from bai.common import _nng
from bai.kernel.protocol import OUTPUT_LIMIT, TRUNCATION_MARKER, decode_inbound, encode


@dataclass
class FakeRunner:
    link: RunnerLink
    inbound: _nng.FrameStream
    outbound: _nng.FrameStream

    async def send(self, kind: str, /, **payload: Any) -> None:
        await self.outbound.send_frame(encode(kind, payload))

    async def receive(self) -> tuple[str, dict[str, Any]]:
        frame = await self.inbound.receive_frame(1 << 20)
        assert isinstance(frame, bytes)
        message = decode_inbound(frame)
        return message.op, message.payload


@asynccontextmanager
async def fake_runner() -> AsyncIterator[FakeRunner]:
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        in_url, out_url = f"ipc://{folder}/in", f"ipc://{folder}/out"
        inputs = await _nng.listen(in_url, PROTO_PULL0)
        outputs = await _nng.listen(out_url, PROTO_PUSH0)
        link = RunnerLink(in_url, out_url)
        streams: dict[str, _nng.FrameStream] = {}

        async def accept(name: str, listener: _nng.Listener, own: int, peer: int) -> None:
            stream = await listener.accept()
            await stream.handshake(own, peer)
            streams[name] = stream

        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept, "in", inputs, PROTO_PULL0, PROTO_PUSH0)
            nursery.start_soon(accept, "out", outputs, PROTO_PUSH0, PROTO_PULL0)
            await link.connect(5)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.serve)
            try:
                yield FakeRunner(link, streams["in"], streams["out"])
            finally:
                link.close()
                inputs.close()
                outputs.close()


async def test_a_run_streams_then_finishes() -> None:
    async with fake_runner() as runner:
        run = await runner.link.start_run("r1", [("code", {"run_id": "r1", "code": "x"})])
        assert await runner.receive() == ("code", {"run_id": "r1", "code": "x"})
        await runner.send("stdout", run_id="r1", text="a")
        await runner.send("stdout", run_id="r1", text="b")
        await runner.send("stderr", run_id="r1", text="oops")
        await runner.send("stdout", run_id="r1", text="c")
        await runner.send("media", run_id="r1", mime="image/svg+xml", data="<svg/>")
        result = await runner.link.collect(run, 0.2)
        assert result == {
            "runId": "r1",
            "status": "continued",
            "exitCode": None,
            "console": [
                ["stdout", "ab"],
                ["stderr", "oops"],
                ["stdout", "c"],
                ["media", ["image/svg+xml", "<svg/>"]],
            ],
            "options": None,
        }
        await runner.send("waiting-input", run_id="r1", is_password=True)
        result = await runner.link.collect(run, 5)
        assert result["status"] == "waiting-input"
        assert result["options"] == {"is_password": True}
        assert run.waiting_input and run.input_options == {"is_password": True}
        # Output of a run the agent never started (one begun before it reconnected).
        await runner.send("stdout", run_id="r2", text="next run")
        await runner.send("stdout", run_id="r1", text="done")
        await runner.send("finished", run_id="r1", exit_code=0)
        result = await runner.link.collect(run, 5)
        assert (result["status"], result["exitCode"]) == ("finished", 0)
        assert result["console"] == [["stdout", "done"]]
        assert runner.link.run("r1") is None
        # The run that started on its own is collectable.
        later = runner.link.run("r2")
        assert later is not None
        assert (await runner.link.collect(later, 0.05))["console"] == [["stdout", "next run"]]


async def test_each_call_cuts_a_stream_at_the_output_limit() -> None:
    async with fake_runner() as runner:
        run = await runner.link.start_run("r", [])
        chunk = "x" * 100_000
        for _ in range(OUTPUT_LIMIT // len(chunk) + 2):
            await runner.send("stdout", run_id="r", text=chunk)
        await runner.send("stderr", run_id="r", text="tail")
        await runner.send("finished", run_id="r", exit_code=0)
        result = await runner.link.collect(run, 5)
        stdout = result["console"][0][1]
        assert stdout.startswith("x" * OUTPUT_LIMIT)
        assert TRUNCATION_MARKER in stdout[OUTPUT_LIMIT:]
        assert len(stdout) < OUTPUT_LIMIT + 100
        assert result["console"][1] == ["stderr", "tail"]


async def test_uncollected_output_beyond_the_buffer_is_dropped_with_a_notice() -> None:
    async with fake_runner() as runner:
        run = await runner.link.start_run("r", [])
        image = "d" * (1024 * 1024)
        for _ in range(RUN_BUFFER_LIMIT // len(image) + 3):
            await runner.send("media", run_id="r", mime="image/png", data=image)
        await runner.send("finished", run_id="r", exit_code=0)
        with trio.fail_after(10):
            while not any(op == "finished" for op, _ in run.records):
                run.changed = trio.Event()
                await run.changed.wait()
        assert run.size <= RUN_BUFFER_LIMIT
        result = await runner.link.collect(run, 5)
        assert result["status"] == "finished"
        assert "output dropped" in result["console"][-1][1]


async def test_requests_get_their_own_replies() -> None:
    async with fake_runner() as runner:
        results: dict[str, dict[str, Any]] = {}

        async def ask(op: str, reply: str) -> None:
            results[op] = await runner.link.request(op, {}, 5)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "status", "status")
            nursery.start_soon(ask, "get-apps", "apps-result")
            requests = [await runner.receive(), await runner.receive()]
            ids = {op: payload["request_id"] for op, payload in requests}
            # Answered in the opposite order, plus a reply nobody waits for.
            await runner.send("apps-result", request_id=ids["get-apps"], apps=[])
            await runner.send("status", request_id="stale", runtime="python")
            await runner.send("status", request_id=ids["status"], runtime="python", pid=1)
        assert results["status"]["pid"] == 1
        assert results["get-apps"]["apps"] == []
        with pytest.raises(RunnerLinkError, match="did not answer"):
            await runner.link.request("status", {}, 0.05)


async def test_records_outside_runs_and_the_end_of_the_kernel() -> None:
    async with fake_runner() as runner:
        await runner.send("stdout", run_id=None, text="daemon says hi\n")
        first = await runner.link.start_run("a", [])
        second = await runner.link.start_run("b", [])
        # A log record that names no run (a service logging between runs) goes to the active one.
        await runner.send(
            "log", run_id=None, level="info", time="t", logger="bai.kernel", message="m"
        )
        await runner.send("error", op="input", run_id="a", request_id=None, message="bad")
        result = await runner.link.collect(first, 0.1)
        assert result["console"][0] == ["log", ["info", "t", "bai.kernel", "m"]]
        assert "refused a message: bad" in result["console"][1][1]
        assert "daemon says hi" in runner.link.log_tail
        with pytest.raises(RunError):
            await runner.link.start_run("b", [])
        runner.link.end_runs(137, "[gone]\n")
        result = await runner.link.collect(second, 1)
        assert result == {
            "runId": "b",
            "status": "finished",
            "exitCode": 137,
            "console": [["stderr", "[gone]\n"]],
            "options": None,
        }


async def test_runs_taken_over_after_an_agent_restart() -> None:
    async with fake_runner() as runner:
        runner.link.adopt_runs(
            {"active_run": "busy", "queued": ["next"], "waiting_input": True, "pid": 3}
        )
        busy = runner.link.run("busy")
        assert busy is not None and busy.waiting_input
        assert runner.link.run("next") is not None


async def test_dialing_a_runner_that_never_listens_times_out() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        link = RunnerLink(f"ipc://{folder}/in", f"ipc://{folder}/out")
        with pytest.raises(RunnerLinkError, match="did not listen"):
            await link.connect(0.1)


def test_wire_messages_are_plain_msgpack() -> None:
    assert msgpack.unpackb(encode("status", {"request_id": "x"})) == [
        "status",
        {"request_id": "x"},
    ]


async def test_a_finished_run_answers_its_exit_code_again() -> None:
    # The manager that collected the end may have died before reading it.
    async with fake_runner() as runner:
        run = await runner.link.start_run("batch-1", [])
        await runner.send("stdout", run_id="batch-1", text="out\n")
        await runner.send("finished", run_id="batch-1", exit_code=3)
        assert (await runner.link.collect(run, 1))["exitCode"] == 3
        assert runner.link.run("batch-1") is None
        again = runner.link.finished_run("batch-1")
        assert again is not None
        assert await runner.link.collect(again, 0.1) == {
            "runId": "batch-1",
            "status": "finished",
            "exitCode": 3,
            "console": [],
            "options": None,
        }
        # Starting the run anew forgets the old end.
        await runner.link.start_run("batch-1", [])
        assert runner.link.finished_run("batch-1") is None
        assert runner.link.finished_run("never") is None
