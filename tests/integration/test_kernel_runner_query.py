"""Query mode of the kernel runner, driven over its real sockets.

Each test starts ``python -m bai.kernel`` as a child in its own session and
checks that the session is empty again afterwards.  The first tests
reproduce the spec's examples of query-mode execution (lines 4596-4850)
exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bai.kernel.client import RunnerClient, RunnerProcess

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[RunnerProcess]:
    with RunnerProcess(str(tmp_path), env={**os.environ, "HOME": str(tmp_path)}) as process:
        yield process
    assert process.session_pids() == []


def test_spec_example_simple_output(kernel: RunnerClient) -> None:
    step = kernel.execute('print("Hello, world!")')
    assert (step.status, step.exit_code) == ("finished", 0)
    assert step.console == [["stdout", "Hello, world!\n"]]


def test_spec_example_runtime_error(kernel: RunnerClient) -> None:
    step = kernel.execute("a = 123\nprint('what happens now?')\na = a / 0")
    assert (step.status, step.exit_code) == ("finished", 0)
    assert step.console == [
        ["stdout", "what happens now?\n"],
        [
            "stderr",
            'Traceback (most recent call last):\n  File "<input>", line 3, in <module>\n'
            "ZeroDivisionError: division by zero",
        ],
    ]


def test_spec_example_continued_results(kernel: RunnerClient) -> None:
    code = (
        'import time\nfor i in range(5):\n    print(f"Tick {i+1}")\n    time.sleep(1)\n'
        'print("done")'
    )
    kernel.send("code", {"run_id": "5facbf2f2697c1b7", "code": code})
    steps = []
    while True:
        step = kernel.collect("5facbf2f2697c1b7", flush_timeout=2.0)
        steps.append(step)
        if step.status != "continued":
            break
        kernel.send("continue", {"run_id": "5facbf2f2697c1b7"})
    assert [s.status for s in steps][-1] == "finished"
    assert len(steps) >= 3  # streamed, not delivered at the end
    assert steps[0].text("stdout").startswith("Tick 1\n")
    for step in steps:
        assert step.text("stdout").endswith("\n") or not step.text("stdout")
    assert (
        "".join(s.text("stdout") for s in steps)
        == "".join(f"Tick {i}\n" for i in range(1, 6)) + "done\n"
    )


def test_spec_example_user_input(kernel: RunnerClient) -> None:
    step = kernel.execute(
        'print("What is your name?")\nname = input(">> ")\nprint(f"Hello, {name}!")'
    )
    assert step.status == "waiting-input"
    assert step.console == [["stdout", "What is your name?\n>> "]]
    assert step.options == {"is_password": False}
    kernel.send("input", {"run_id": step.run_id, "text": "Lablup"})
    step = kernel.collect(step.run_id)
    assert (step.status, step.exit_code) == ("finished", 0)
    assert step.console == [["stdout", "Hello, Lablup!\n"]]


def test_getpass_asks_for_a_password(kernel: RunnerClient) -> None:
    step = kernel.execute("import getpass\nsecret = getpass.getpass()\nprint(len(secret))")
    assert (step.status, step.options) == ("waiting-input", {"is_password": True})
    assert step.console == [["stdout", "Password: "]]
    kernel.send("input", {"run_id": step.run_id, "text": "hunter2"})
    assert kernel.collect(step.run_id).console == [["stdout", "7\n"]]


def test_stdin_reads_ask_the_user_too(kernel: RunnerClient) -> None:
    step = kernel.execute("import sys\nline = sys.stdin.readline()\nprint(repr(line))")
    assert step.status == "waiting-input"
    kernel.send("input", {"run_id": step.run_id, "text": "typed"})
    assert kernel.collect(step.run_id).console == [["stdout", "'typed\\n'\n"]]


def test_input_for_a_run_that_is_not_waiting_is_an_error(kernel: RunnerClient) -> None:
    kernel.send("input", {"run_id": "nobody", "text": "x"})
    error = kernel.wait_for("error", timeout=5)
    assert error["op"] == "input"
    assert "not waiting for input" in error["message"]


def test_the_namespace_persists_across_runs(kernel: RunnerClient) -> None:
    kernel.execute("import math\ndef area(r):\n    return math.pi * r * r\ncounter = 41")
    step = kernel.execute("counter += 1\nprint(counter, round(area(1), 4))")
    assert step.console == [["stdout", "42 3.1416\n"]]


def test_stdout_and_stderr_keep_print_order(kernel: RunnerClient) -> None:
    step = kernel.execute(
        "import sys\nprint('a')\nprint('b')\nprint('c', file=sys.stderr)\nprint('d')\n"
        "sys.stderr.write('e')\nn = sys.stderr.write('f')"
    )
    assert step.console == [
        ["stdout", "a\nb\n"],
        ["stderr", "c\n"],
        ["stdout", "d\n"],
        ["stderr", "ef"],
    ]


def test_a_trailing_expression_is_shown_like_in_the_repl(kernel: RunnerClient) -> None:
    assert kernel.execute("x = [1, 2]\nx + [3]").console == [["stdout", "[1, 2, 3]\n"]]
    assert kernel.execute("None").console == []
    assert kernel.execute("_").console == [["stdout", "[1, 2, 3]\n"]]


def test_syntax_errors_are_reported_without_a_traceback_header(kernel: RunnerClient) -> None:
    step = kernel.execute("print('never'\n")
    assert (step.status, step.exit_code) == ("finished", 0)
    text = step.text("stderr")
    assert text.startswith('  File "<input>", line 1')
    assert "SyntaxError" in text
    assert step.text("stdout") == ""


def test_tracebacks_name_only_user_frames(kernel: RunnerClient) -> None:
    kernel.execute("def inner():\n    raise ValueError('bad value')")
    step = kernel.execute(
        "try:\n    inner()\nexcept ValueError as e:\n    raise KeyError('k') from e"
    )
    text = step.text("stderr")
    assert "_pyworker" not in text
    assert 'File "<input>", line 2, in inner' in text
    assert "ValueError: bad value" in text
    assert "direct cause" in text
    assert text.endswith("KeyError: 'k'")


def test_sys_exit_does_not_end_the_kernel(kernel: RunnerClient) -> None:
    kernel.execute("kept = 'yes'")
    assert kernel.execute("import sys\nsys.exit()").console == []
    step = kernel.execute("raise SystemExit('leaving')")
    assert step.text("stderr").endswith("SystemExit: leaving")
    assert kernel.execute("print(kept)").console == [["stdout", "yes\n"]]


def test_interrupt_stops_a_busy_loop_and_keeps_the_namespace(kernel: RunnerClient) -> None:
    kernel.execute("kept = 7")
    kernel.send("code", {"run_id": "spin", "code": "while True:\n    pass"})
    assert kernel.collect("spin", flush_timeout=0.5).status == "continued"
    kernel.send("interrupt", {"run_id": "spin"})
    step = kernel.collect("spin", timeout=10)
    assert (step.status, step.exit_code) == ("finished", 0)
    assert step.text("stderr").endswith("KeyboardInterrupt")
    assert kernel.execute("print(kept)").console == [["stdout", "7\n"]]


def test_interrupt_wakes_a_sleep_even_with_other_threads_around(kernel: RunnerClient) -> None:
    code = (
        "import threading, time\n"
        "for _ in range(4):\n"
        "    threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n"
        "time.sleep(100)"
    )
    kernel.send("code", {"run_id": "nap", "code": code})
    kernel.collect("nap", flush_timeout=0.5)
    started = time.monotonic()
    kernel.send("interrupt", {})
    step = kernel.collect("nap", timeout=10)
    assert step.text("stderr").endswith("KeyboardInterrupt")
    assert time.monotonic() - started < 10  # not the 100 s of the sleep


def test_interrupt_reaches_code_waiting_for_input(kernel: RunnerClient) -> None:
    step = kernel.execute("answer = input('? ')")
    assert step.status == "waiting-input"
    kernel.send("interrupt", {})
    step = kernel.collect(step.run_id, timeout=10)
    assert step.status == "finished"
    assert step.text("stderr").endswith("KeyboardInterrupt")


def test_interrupt_for_another_run_changes_nothing(kernel: RunnerClient) -> None:
    kernel.send(
        "code", {"run_id": "sleepy", "code": "import time\ntime.sleep(0.5)\nprint('slept')"}
    )
    kernel.send("interrupt", {"run_id": "someone-else"})
    step = kernel.collect("sleepy")
    assert step.console == [["stdout", "slept\n"]]


def test_runs_queue_in_arrival_order(kernel: RunnerClient) -> None:
    kernel.send("code", {"run_id": "first", "code": "x = input()\nprint(1)"})
    kernel.send("code", {"run_id": "second", "code": "print(2)"})
    assert kernel.collect("first").status == "waiting-input"
    status = kernel.request("status", "status")
    assert (status["active_run"], status["queued"], status["waiting_input"]) == (
        "first",
        ["second"],
        True,
    )
    kernel.send("input", {"run_id": "first", "text": ""})
    assert kernel.collect("first").console == [["stdout", "1\n"]]
    assert kernel.collect("second").console == [["stdout", "2\n"]]


def test_subprocess_output_is_captured(kernel: RunnerClient) -> None:
    step = kernel.execute(
        "import os, subprocess\nos.system('echo from-shell')\n"
        "subprocess.run(['sh', '-c', 'echo oops >&2'])\nprint('after')"
    )
    assert step.console == [["stdout", "from-shell\n"], ["stderr", "oops\n"], ["stdout", "after\n"]]


def test_a_dead_python_process_is_reported_and_replaced(kernel: RunnerClient) -> None:
    kernel.execute("lost = 1")
    step = kernel.execute("import os, signal\nprint('bye')\nos.kill(os.getpid(), signal.SIGKILL)")
    assert (step.status, step.exit_code) == ("finished", 128 + 9)
    assert step.text("stdout") == "bye\n"
    assert "killed by signal 9" in step.text("stderr")
    step = kernel.execute("print('lost' in globals())")
    assert step.console == [["stdout", "False\n"]]


def test_completion_offers_names_from_the_namespace(kernel: RunnerClient) -> None:
    kernel.execute("import collections\nmy_variable = 1")
    assert kernel.request("complete", "completion", code="pri", options={})["matches"] == ["print"]
    matches = kernel.request(
        "complete", "completion", code="", options={"line": "x = my_v", "row": 0, "col": 8}
    )["matches"]
    assert matches == ["my_variable"]
    matches = kernel.request("complete", "completion", code="collections.Ord", options={})[
        "matches"
    ]
    assert matches == ["collections.OrderedDict"]
    assert kernel.request("complete", "completion", code="1 + ", options={})["matches"] == []


def test_completion_answers_while_code_runs(kernel: RunnerClient) -> None:
    kernel.send("code", {"run_id": "busy", "code": "import time\ntime.sleep(60)"})
    kernel.collect("busy", flush_timeout=0.2)
    assert kernel.request("complete", "completion", code="tim", options={})["matches"] == ["time"]
    assert kernel.request("status", "status")["active_run"] == "busy"
    kernel.send("interrupt", {"run_id": "busy"})
    assert kernel.collect("busy").status == "finished"


def test_display_helper_puts_media_between_prints(kernel: RunnerClient) -> None:
    step = kernel.execute(
        "from bai.kernel import display\nprint('before')\n"
        f"display.png({PNG!r})\ndisplay.svg('<svg/>')\ndisplay.html('<b>x</b>')\nprint('after')"
    )
    assert step.console[0] == ["stdout", "before\n"]
    assert step.console[1][0] == "media"
    assert step.console[1][1][0] == "image/png"
    assert step.console[1][1][1].startswith("data:image/png;base64,iVBORw0KGgo")
    assert step.console[2:] == [
        ["media", ["image/svg+xml", "<svg/>"]],
        ["html", "<b>x</b>"],
        ["stdout", "after\n"],
    ]


def _python_with_matplotlib() -> str | None:
    """This Python, or ``$BAI_TEST_MATPLOTLIB_PYTHON``, when it can import matplotlib."""
    for python in (os.environ.get("BAI_TEST_MATPLOTLIB_PYTHON"), sys.executable):
        if (
            python
            and subprocess.run([python, "-c", "import matplotlib"], capture_output=True).returncode
            == 0
        ):
            return python
    return None


def test_spec_example_multimedia_result(tmp_path: Path) -> None:
    python = _python_with_matplotlib()
    if python is None:
        pytest.skip("no Python with matplotlib (set BAI_TEST_MATPLOTLIB_PYTHON to one)")
    code = (
        "import matplotlib.pyplot as plt\na = [1,2]\nb = [3,4]\n"
        "print('plotting simple line graph')\nplt.plot(a, b)\nplt.show()\nprint('done')"
    )
    with RunnerProcess(str(tmp_path), runtime_path=python) as runner, runner.client() as client:
        client.wait_ready()
        step = client.execute(code, timeout=60)
        assert (step.status, step.exit_code) == ("finished", 0)
        assert step.console[0] == ["stdout", "plotting simple line graph\n"]
        assert step.console[1][0] == "media"
        assert step.console[1][1][0] == "image/svg+xml"
        assert step.console[1][1][1].startswith('<?xml version="1.0"')
        assert step.console[2:] == [["stdout", "done\n"]]
    assert runner.session_pids() == []


def test_without_matplotlib_the_import_fails_as_usual(kernel: RunnerClient) -> None:
    if _python_with_matplotlib() == sys.executable:
        pytest.skip("this Python has matplotlib")
    step = kernel.execute("import matplotlib")
    assert step.text("stderr").endswith("ModuleNotFoundError: No module named 'matplotlib'")


def test_output_of_a_forked_child_is_captured(kernel: RunnerClient) -> None:
    code = (
        "import os\npid = os.fork()\nif pid == 0:\n    print('from child')\n    os._exit(0)\n"
        "os.waitpid(pid, 0)\nprint('from parent')"
    )
    assert kernel.execute(code).console == [["stdout", "from child\nfrom parent\n"]]


def test_a_missing_runtime_is_reported_on_the_run(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-python")
    with RunnerProcess(str(tmp_path), runtime_path=missing) as runner, runner.client() as client:
        client.wait_ready()
        step = client.execute("print(1)")
        assert (step.status, step.exit_code) == ("finished", -1)
        assert step.text("stderr").startswith(f"cannot start the Python runtime {missing}:")
    assert runner.session_pids() == []


def test_another_python_can_be_the_runtime(tmp_path: Path) -> None:
    system_python = "/usr/bin/python3"
    if not os.path.exists(system_python):
        pytest.skip("no system Python to use as the kernel's runtime")
    with (
        RunnerProcess(str(tmp_path), runtime_path=system_python) as runner,
        runner.client() as client,
    ):
        client.wait_ready()
        step = client.execute("import sys\nprint(sys.executable)")
        assert step.console == [["stdout", f"{system_python}\n"]]
        step = client.execute("from bai.kernel import display\ndisplay.html('<i>ok</i>')")
        assert step.console == [["html", "<i>ok</i>"]]
        step = client.execute("import pynng")  # the runner's packages stay out of user code
        assert "ModuleNotFoundError" in step.text("stderr")
    assert runner.session_pids() == []
