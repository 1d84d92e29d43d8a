"""Batch mode (clean, build, exec) and the shell and app runtimes of the kernel runner."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bai.kernel.client import RunnerClient, RunnerProcess

HELLO_C = '#include <stdio.h>\nint main(void) { printf("hello from C\\n"); return 3; }\n'


def _runner(workdir: Path, runtime: str = "python") -> RunnerProcess:
    return RunnerProcess(str(workdir), runtime=runtime, env={**os.environ, "HOME": str(workdir)})


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[RunnerProcess]:
    with _runner(tmp_path) as process:
        yield process
    assert process.session_pids() == []


def test_build_then_exec_reports_each_step(kernel: RunnerClient, tmp_path: Path) -> None:
    (tmp_path / "main.sh").write_text("echo built > out.txt\n")
    clean, build, run = kernel.batch(
        clean="rm -f out.txt",
        build="sh main.sh && echo building",
        exec="cat out.txt; echo err >&2; exit 5",
    )
    assert (clean.status, clean.exit_code, clean.console) == ("clean-finished", 0, [])
    assert (build.status, build.exit_code) == ("build-finished", 0)
    assert build.console == [["stdout", "building\n"]]
    assert (run.status, run.exit_code) == ("finished", 5)
    assert run.console == [["stdout", "built\n"], ["stderr", "err\n"]]


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_the_default_build_compiles_c_sources(kernel: RunnerClient, tmp_path: Path) -> None:
    (tmp_path / "hello.c").write_text(HELLO_C)
    clean, build, run = kernel.batch(clean="*", build="*", exec="./main")
    assert (clean.status, clean.exit_code) == ("clean-finished", 0)
    assert (build.status, build.exit_code) == ("build-finished", 0)
    assert (run.status, run.exit_code) == ("finished", 3)
    assert run.console == [["stdout", "hello from C\n"]]
    assert (tmp_path / "hello.c").exists()  # "*" as clean deletes nothing


def test_the_default_build_says_what_it_chose(kernel: RunnerClient, tmp_path: Path) -> None:
    (tmp_path / "Makefile").write_text("all:\n\techo made\n")
    run_id = "make-run"
    kernel.send("build", {"run_id": run_id, "command": "*"})
    build = kernel.collect(run_id)
    assert (build.status, build.exit_code) == ("build-finished", 0)
    # The log record belongs to the run, so the build step's console shows it first.
    assert build.console[0][0] == "log"
    level, _, logger, message = build.console[0][1]
    assert (level, logger, message) == ("info", "bai.kernel", "default build: make")
    assert build.text("stdout") == "echo made\nmade\n"


def test_exec_after_a_failed_build_finishes_with_127(kernel: RunnerClient, tmp_path: Path) -> None:
    (tmp_path / "broken.c").write_text("int main(void) { return }\n")
    _, build, run = kernel.batch(build="cc -o main broken.c", exec="echo must not run")
    assert build.status == "build-finished"
    assert build.exit_code not in (None, 0)
    assert "error" in build.text("stderr")
    assert (run.status, run.exit_code, run.console) == ("finished", 127, [])
    # The next run builds afresh.
    _, build, run = kernel.batch(build="true", exec="echo ran")
    assert (build.exit_code, run.exit_code, run.console) == (0, 0, [["stdout", "ran\n"]])


def test_missing_steps_are_skipped_but_reported(kernel: RunnerClient) -> None:
    steps = kernel.batch(exec="echo only exec")
    assert [(s.status, s.exit_code) for s in steps] == [
        ("clean-finished", 0),
        ("build-finished", 0),
        ("finished", 0),
    ]
    assert steps[2].console == [["stdout", "only exec\n"]]


def test_batch_output_streams_while_the_program_runs(kernel: RunnerClient) -> None:
    kernel.send("exec", {"run_id": "slow", "command": "echo one; sleep 1.5; echo two"})
    first = kernel.collect("slow", flush_timeout=0.8)
    assert (first.status, first.console) == ("continued", [["stdout", "one\n"]])
    kernel.send("continue", {"run_id": "slow"})
    rest = kernel.collect("slow")
    assert (rest.status, rest.console) == ("finished", [["stdout", "two\n"]])


def test_interrupt_stops_a_batch_program_not_the_kernel(kernel: RunnerClient) -> None:
    kernel.send("exec", {"run_id": "forever", "command": "echo started; sleep 100"})
    assert kernel.collect("forever", flush_timeout=0.5).console == [["stdout", "started\n"]]
    kernel.send("interrupt", {"run_id": "forever"})
    step = kernel.collect("forever", timeout=10)
    assert (step.status, step.exit_code) == ("finished", 130)  # SIGINT did it, not SIGKILL
    assert kernel.execute("print('still here')").console == [["stdout", "still here\n"]]


def test_a_program_ignoring_sigint_is_killed(kernel: RunnerClient) -> None:
    kernel.send("exec", {"run_id": "stubborn", "command": "trap '' INT; echo armed; sleep 100"})
    assert kernel.collect("stubborn", flush_timeout=0.5).console == [["stdout", "armed\n"]]
    kernel.send("interrupt", {})
    step = kernel.collect("stubborn", timeout=15)
    assert (step.status, step.exit_code) == ("finished", 128 + 9)


def test_a_background_process_cannot_hold_the_run_open(kernel: RunnerClient) -> None:
    started = time.monotonic()
    step = kernel.batch(exec="sleep 30 & echo left it running")[2]
    assert (step.status, step.console) == ("finished", [["stdout", "left it running\n"]])
    assert time.monotonic() - started < 5


def test_user_code_is_the_oom_killers_choice_before_the_runner(kernel: RunnerClient) -> None:
    runner_score = Path("/proc/self/oom_score_adj").read_text().strip()  # what it inherited
    assert runner_score != "1000"
    step = kernel.execute(
        "import os, subprocess\n"
        "def score(pid): return open(f'/proc/{pid}/oom_score_adj').read().strip()\n"
        "child = subprocess.check_output(['cat', '/proc/self/oom_score_adj'], text=True)\n"
        "print(score('self'), score(os.getppid()), child.strip())\n"
    )
    # The Python process and its children get the highest score; the runner keeps its own.
    assert step.text("stdout") == f"1000 {runner_score} 1000\n"
    # The score is written right after the shell starts, before it starts the command's processes.
    run = kernel.batch(exec="sleep 0.1; cat /proc/self/oom_score_adj")[2]
    assert run.console == [["stdout", "1000\n"]]


def test_the_shell_runtime_runs_snippets_as_commands(tmp_path: Path) -> None:
    with _runner(tmp_path, runtime="shell") as process, process.client() as client:
        assert client.wait_ready()["runtime"] == "shell"
        step = client.execute("X=1; echo $((X + 41)); exit 4")
        assert (step.status, step.exit_code, step.console) == (
            "finished",
            4,
            [["stdout", "42\n"]],
        )
        step = client.execute("echo ${X:-unset}")  # no state between snippets
        assert step.console == [["stdout", "unset\n"]]
        assert client.request("complete", "completion", code="ec")["matches"] == []
    assert process.session_pids() == []


def test_the_app_runtime_runs_no_code(tmp_path: Path) -> None:
    with _runner(tmp_path, runtime="app") as process, process.client() as client:
        client.wait_ready()
        step = client.execute("print(1)")
        assert (step.status, step.exit_code) == ("finished", -1)
        assert "does not run code" in step.text("stderr")
        steps = client.batch(build="true", exec="true")
        assert [s.exit_code for s in steps] == [-1, -1, -1]
    assert process.session_pids() == []
