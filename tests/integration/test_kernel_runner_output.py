"""Output limits: a flood of output is truncated with a notice and costs no memory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bai.kernel.client import RunnerClient, RunnerProcess
from bai.kernel.protocol import OUTPUT_LIMIT, TRUNCATION_MARKER


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[RunnerProcess]:
    with RunnerProcess(str(tmp_path), env={**os.environ, "HOME": str(tmp_path)}) as process:
        yield process
    assert process.session_pids() == []


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_python_flood_is_cut_at_the_limit_per_stream(
    kernel: RunnerClient, runner: RunnerProcess
) -> None:
    kernel.execute("print('warm')")
    before = _rss_kib(runner.proc.pid)
    step = kernel.execute(
        "import sys\nfor _ in range(400):\n    sys.stdout.write('x' * 100_000)\n"
        "    sys.stderr.write('y' * 10_000)\nprint('survived', file=sys.stderr)",
        timeout=120,
    )
    assert (step.status, step.exit_code) == ("finished", 0)
    stdout, stderr = step.text("stdout"), step.text("stderr")
    assert stdout.startswith("x" * OUTPUT_LIMIT + "\n" + TRUNCATION_MARKER)
    assert stdout.count(TRUNCATION_MARKER) == 1
    assert len(stdout) < OUTPUT_LIMIT + 300
    assert stderr.startswith("y" * OUTPUT_LIMIT + "\n" + TRUNCATION_MARKER)
    assert "survived" not in stderr  # dropped: the program printed it after the limit
    # 40 MB went through the runner; its memory did not grow with it.
    assert _rss_kib(runner.proc.pid) - before < 32 * 1024


def test_a_batch_flood_is_cut_and_the_program_runs_to_its_end(kernel: RunnerClient) -> None:
    step = kernel.batch(
        exec="head -c 30000000 /dev/zero | tr '\\0' z; echo end >&2; exit 9", timeout=120
    )[2]
    assert (step.status, step.exit_code) == ("finished", 9)
    assert step.text("stdout").startswith("z" * OUTPUT_LIMIT + "\n" + TRUNCATION_MARKER)
    assert step.text("stderr") == "end\n"


def test_each_continuation_gets_a_fresh_limit(kernel: RunnerClient) -> None:
    code = (
        "import sys, time\nsys.stdout.write('a' * 600_000)\nsys.stdout.flush()\n"
        "time.sleep(1.5)\nn = sys.stdout.write('b' * 10)"
    )
    kernel.send("code", {"run_id": "two-calls", "code": code})
    first = kernel.collect("two-calls", flush_timeout=1.0)
    assert first.status == "continued"
    assert TRUNCATION_MARKER in first.text("stdout")
    kernel.send("continue", {"run_id": "two-calls"})
    second = kernel.collect("two-calls")
    assert (second.status, second.console) == ("finished", [["stdout", "b" * 10]])
