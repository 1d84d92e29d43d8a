"""The runner's bootstrap script: it runs before the runner serves; if it fails, the runner ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from bai.kernel.client import RunnerClient, RunnerProcess
from bai.kernel.protocol import BOOTSTRAP_FAILED_EXIT


def _script(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bootstrap.sh"
    path.write_text(text)
    return str(path)


@contextmanager
def _ready(
    tmp_path: Path, script: str, env: Mapping[str, str] | None = None
) -> Iterator[tuple[RunnerProcess, RunnerClient]]:
    """A runner with *script* as its bootstrap, once it answers ``status``."""
    with (
        RunnerProcess(str(tmp_path), extra_args=["--bootstrap", script], env=env) as runner,
        runner.client() as kernel,
    ):
        kernel.wait_ready()
        yield runner, kernel


def _runner(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a runner to its end (it must not get to serve) with its output captured."""
    sockets = f"ipc://{tmp_path}/s"
    argv = [sys.executable, "-I", "-m", "bai.kernel", "--input", f"{sockets}-in"]
    return subprocess.run(
        [*argv, "--output", f"{sockets}-out", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


def test_the_runner_serves_only_after_the_script_ran(tmp_path: Path) -> None:
    # The script is slow: a kernel that answered before it ended would not see the file.
    script = _script(tmp_path, "sleep 0.5\necho ready > marker.txt\n")
    with _ready(tmp_path, script) as (_, kernel):
        result = kernel.execute("print(open('marker.txt').read(), end='')")
        assert result.console == [["stdout", "ready\n"]]


def test_the_script_gets_the_runner_environment(tmp_path: Path) -> None:
    script = _script(tmp_path, 'echo "$BAI_TEST_VALUE $PWD" > env.txt\n')
    with _ready(tmp_path, script, {**os.environ, "BAI_TEST_VALUE": "from-the-kernel"}):
        assert (tmp_path / "env.txt").read_text() == f"from-the-kernel {tmp_path}\n"


def test_a_failing_script_ends_the_runner_with_its_output(tmp_path: Path) -> None:
    script = _script(tmp_path, "echo some output\necho some error >&2\nexit 7\n")
    result = _runner(tmp_path, "--bootstrap", script)
    assert result.returncode == BOOTSTRAP_FAILED_EXIT
    assert result.stdout == "some output\n"
    assert result.stderr.splitlines() == [
        "some error",
        f"bai.kernel: the bootstrap script {script} exited with code 7",
    ]


def test_a_script_past_its_time_limit_is_killed_with_its_children(tmp_path: Path) -> None:
    script = _script(tmp_path, "sleep 60 &\necho $! > child.txt\nwait\n")
    started = time.monotonic()
    result = _runner(tmp_path, "--bootstrap", script, "--bootstrap-timeout", "0.5")
    assert time.monotonic() - started < 10
    assert result.returncode == BOOTSTRAP_FAILED_EXIT
    assert f"the bootstrap script {script} did not finish within 0.5 s" in result.stderr
    assert _gone(int((tmp_path / "child.txt").read_text()))


def test_sigterm_during_the_script_ends_the_runner_cleanly(tmp_path: Path) -> None:
    script = _script(tmp_path, "echo started > started.txt\nexec sleep 60\n")
    runner = RunnerProcess(str(tmp_path), extra_args=["--bootstrap", script])
    try:
        runner.start()
        deadline = time.monotonic() + 20
        while not (tmp_path / "started.txt").exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        runner.proc.send_signal(signal.SIGTERM)
        assert runner.proc.wait(10) == 0
        assert runner.session_pids() == []
    finally:
        runner.stop()


def test_a_missing_script_is_skipped(tmp_path: Path) -> None:
    with _ready(tmp_path, str(tmp_path / "removed.sh")) as (_, kernel):
        assert kernel.execute("print(1)").console == [["stdout", "1\n"]]


def test_a_successful_script_may_leave_a_daemon_running(tmp_path: Path) -> None:
    script = _script(tmp_path, "sleep 60 > /dev/null 2>&1 &\necho $! > daemon.txt\n")
    with _ready(tmp_path, script) as (runner, _):
        daemon = int((tmp_path / "daemon.txt").read_text())
        assert daemon in runner.session_pids()
    assert _gone(daemon)
