"""The agent runs code like the spec's query-mode and batch-mode chapters show.

Every test drives a real agent over its RPC, with real kernel runners.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bai.common.rpc import RemoteError

from support.agent import Harness, agent_config, running_agent


@pytest.fixture
async def harness(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_agent(agent_config(tmp_path)) as h:
        yield h


async def test_query_mode_examples_of_the_spec(harness: Harness) -> None:
    kernel = await harness.create(resource_slots={"cpu": "1", "mem": "256m"})
    kid = kernel["kernel_id"]

    result = await harness.run(kid, 'print("Hello, world!")', run_id="5facbf2f2697c1b7")
    assert result == {
        "runId": "5facbf2f2697c1b7",
        "status": "finished",
        "exitCode": 0,
        "console": [["stdout", "Hello, world!\n"]],
        "options": None,
    }

    result = await harness.run(kid, "a = 123\nprint('what happens now?')\na = a / 0\n")
    assert result["status"] == "finished"
    assert result["console"] == [
        ["stdout", "what happens now?\n"],
        [
            "stderr",
            'Traceback (most recent call last):\n  File "<input>", line 3, in <module>\n'
            "ZeroDivisionError: division by zero",
        ],
    ]

    # The tick loop, at a tenth of the spec's pace and flush timeout.
    code = (
        "import time\nfor i in range(5):\n    print(f'Tick {i+1}')\n    time.sleep(0.1)\n"
        "print('done')\n"
    )
    run_id = "ticks"
    statuses = []
    text = ""
    result = await harness.run(kid, code, run_id=run_id, flush_timeout=0.2)
    while True:
        statuses.append(result["status"])
        assert all(kind == "stdout" for kind, _ in result["console"])
        assert len(result["console"]) <= 1  # adjacent stdout chunks arrive merged
        text += "".join(t for _, t in result["console"])
        if result["status"] == "finished":
            break
        result = await harness.run(kid, "", mode="continue", run_id=run_id, flush_timeout=0.2)
    assert statuses[0] == "continued" and statuses[-1] == "finished"
    assert text == "Tick 1\nTick 2\nTick 3\nTick 4\nTick 5\ndone\n"

    code = 'print("What is your name?")\nname = input(">> ")\nprint(f"Hello, {name}!")\n'
    result = await harness.run(kid, code, run_id="ask")
    assert result["status"] == "waiting-input"
    assert result["console"] == [["stdout", "What is your name?\n>> "]]
    assert result["options"] == {"is_password": False}
    result = await harness.run(kid, "Lablup", mode="input", run_id="ask")
    assert result["status"] == "finished"
    assert result["console"] == [["stdout", "Hello, Lablup!\n"]]

    # The namespace persists between runs.
    assert await harness.output(kid, "print(a)") == "123\n"


async def test_interrupt_stops_a_busy_loop_and_the_kernel_lives_on(harness: Harness) -> None:
    kid = (await harness.create())["kernel_id"]
    result = await harness.run(kid, "while True: pass", run_id="spin", flush_timeout=0.3)
    assert result["status"] == "continued"
    await harness.client.call("interrupt_kernel", {"kernel_id": kid})
    result = await harness.run(kid, "", mode="continue", run_id="spin", flush_timeout=5)
    assert result["status"] == "finished"
    assert "KeyboardInterrupt" in "".join(t for _, t in result["console"])
    assert await harness.output(kid, "print(6 * 7)") == "42\n"


async def test_batch_mode_builds_and_runs_a_c_program(harness: Harness) -> None:
    kid = (await harness.create())["kernel_id"]
    source = b'#include <stdio.h>\nint main(void) { printf("built %d\\n", 6 * 7); return 3; }\n'
    await harness.client.call("upload_file", {"kernel_id": kid, "path": "main.c", "data": source})
    opts = {"clean": "rm -f main", "build": "gcc -o main main.c", "exec": "./main"}
    run_id = "batch1"
    result = await harness.run(kid, "", mode="batch", run_id=run_id, options=opts)
    steps = [(result["status"], result["exitCode"])]
    output = "".join(t for k, t in result["console"] if k == "stdout")
    while result["status"] != "finished":
        result = await harness.run(kid, "", mode="continue", run_id=run_id)
        steps.append((result["status"], result["exitCode"]))
        output += "".join(t for k, t in result["console"] if k == "stdout")
    assert steps == [("clean-finished", 0), ("build-finished", 0), ("finished", 3)]
    assert output == "built 42\n"

    # After a failed build, exec finishes with 127 without running.
    opts = {"build": "exit 2", "exec": "echo should-not-run"}
    result = await harness.run(kid, "", mode="batch", run_id="batch2", options=opts)
    statuses = [(result["status"], result["exitCode"])]
    while result["status"] != "finished":
        result = await harness.run(kid, "", mode="continue", run_id="batch2")
        statuses.append((result["status"], result["exitCode"]))
        assert "should-not-run" not in str(result["console"])
    assert statuses == [("clean-finished", 0), ("build-finished", 2), ("finished", 127)]


async def test_execute_calls_that_do_not_fit_the_run_are_refused(harness: Harness) -> None:
    kid = (await harness.create())["kernel_id"]
    with pytest.raises(RemoteError) as info:
        await harness.run(kid, "", mode="continue", run_id="never-started")
    assert info.value.remote_type == "RunError"
    result = await harness.run(kid, "import time; time.sleep(0.5)", run_id="r", flush_timeout=0.1)
    assert result["status"] == "continued"
    with pytest.raises(RemoteError) as info:
        await harness.run(kid, "text", mode="input", run_id="r")
    assert info.value.remote_type == "RunError"
    with pytest.raises(RemoteError) as info:
        await harness.run(kid, "print(1)", run_id="r")
    assert info.value.remote_type == "RunError"
    result = await harness.run(kid, "", mode="continue", run_id="r", flush_timeout=5)
    assert result["status"] == "finished"
    with pytest.raises(RemoteError) as info:
        await harness.run(kid, "print(1)", mode="bogus")
    assert info.value.remote_type == "InvalidRequest"
    with pytest.raises(RemoteError) as info:
        await harness.run(str(uuid.uuid4()), "print(1)")
    assert info.value.remote_type == "KernelNotFound"


async def test_completion_and_logs(harness: Harness) -> None:
    kid = (await harness.create())["kernel_id"]
    await harness.output(kid, "my_variable = 1")
    matches = await harness.client.call(
        "get_completions", {"kernel_id": kid, "code": "my_va", "options": {"line": "my_va"}}
    )
    assert "my_variable" in matches
    logs = await harness.client.call("get_logs", {"kernel_id": kid})
    assert isinstance(logs["logs"], str)
