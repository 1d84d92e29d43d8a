"""The runner's life cycle and its answers to malformed messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from bai.kernel.client import RunnerClient, RunnerProcess


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[RunnerProcess]:
    with RunnerProcess(str(tmp_path), env={**os.environ, "HOME": str(tmp_path)}) as process:
        yield process
    assert process.session_pids() == []


def test_status_describes_the_kernel(kernel: RunnerClient, runner: RunnerProcess) -> None:
    status = kernel.request("status", "status")
    del status["request_id"]
    assert status == {
        "runtime": "python",
        "pid": runner.proc.pid,
        "active_run": None,
        "waiting_input": False,
        "queued": [],
        "services": [],
        "pty": False,
    }


def test_garbage_is_answered_with_an_error_and_changes_nothing(kernel: RunnerClient) -> None:
    kernel.execute("kept = 1")
    kernel.send_raw(b"\xc1\xc1 not msgpack")
    error = kernel.wait_for("error", timeout=5)
    assert error["op"] is None
    assert "not a msgpack message" in error["message"]
    kernel.send_raw(msgpack.packb(["launch-missiles", {}]))
    error = kernel.wait_for("error", timeout=5)
    assert (error["op"], error["message"]) == (
        "launch-missiles",
        "op: unknown op (got 'launch-missiles')",
    )
    assert kernel.execute("print(kept)").console == [["stdout", "1\n"]]


def test_a_bad_run_op_still_ends_its_run(kernel: RunnerClient) -> None:
    kernel.send_raw(msgpack.packb(["code", {"run_id": "r-bad", "code": 42}]))
    error = kernel.wait_for("error", timeout=5)
    assert (error["op"], error["run_id"]) == ("code", "r-bad")
    assert "code.code: expected a string (got 42)" in error["message"]
    assert kernel.wait_for("finished", timeout=5, run_id="r-bad")["exit_code"] == -1


def test_sigterm_ends_everything_the_kernel_started(
    kernel: RunnerClient, runner: RunnerProcess
) -> None:
    kernel.send(
        "code",
        {
            "run_id": "busy",
            "code": "import subprocess\nsubprocess.Popen(['sleep', '60'])\nwhile True: pass",
        },
    )
    kernel.collect("busy", flush_timeout=0.5)
    kernel.send("exec", {"run_id": "queued", "command": "sleep 60"})
    assert len(runner.session_pids()) >= 3  # the runner, its Python, the user's sleep
    started = time.monotonic()
    runner.proc.send_signal(signal.SIGTERM)
    assert runner.proc.wait(10) == 0
    assert time.monotonic() - started < 5
    # The user's own background process is the one thing left: the agent kills
    # the kernel's session (or cgroup), which is what RunnerProcess.stop does.
    leftovers = runner.session_pids()
    assert all(Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep") for pid in leftovers)


def test_a_runner_that_cannot_listen_says_why(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bai.kernel",
            "--input",
            "ipc:///nonexistent/dir/in",
            "--output",
            "ipc:///nonexistent/dir/out",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "bai.kernel: cannot listen" in result.stderr


def test_records_wait_for_an_agent_that_connects_late(tmp_path: Path) -> None:
    with RunnerProcess(str(tmp_path)) as runner:
        with runner.client() as first:
            first.wait_ready()
            first.send(
                "code",
                {"run_id": "late", "code": "import time\ntime.sleep(0.5)\nprint('kept for you')"},
            )
            # The runner holds the run before this agent goes: a message still in the
            # closing socket's queue would be lost with it, which is not what is tested.
            status = first.request("status", "status")
            assert "late" in [status["active_run"], *status["queued"]]
        time.sleep(1.0)  # the run finishes while no agent is connected
        with runner.client() as second:
            step = second.collect("late", timeout=10)
            assert step.console == [["stdout", "kept for you\n"]]
    assert runner.session_pids() == []


def test_the_users_files_do_not_shadow_the_kernels_own_modules(tmp_path: Path) -> None:
    for name in ("msgpack", "json", "threading"):
        (tmp_path / f"{name}.py").write_text("raise SystemExit('shadowed')\n")
    with RunnerProcess(str(tmp_path)) as runner, runner.client() as client:
        client.wait_ready()
        assert client.execute("print(1)").console == [["stdout", "1\n"]]
        # User code still imports from its working directory, as in the REPL.
        (tmp_path / "mine.py").write_text("VALUE = 7\n")
        assert client.execute("import mine\nprint(mine.VALUE)").console == [["stdout", "7\n"]]
    assert runner.session_pids() == []
