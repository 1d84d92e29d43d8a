"""Live statistics: a running session's ``lastStat`` and ``cpuCreditUsed`` follow its use."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import trio

from support.api_session import Deployment, unique_name
from support.cli import invoke_bai

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass\n"


async def _live(deployment: Deployment, name: str, check: Any) -> dict[str, Any]:
    with trio.fail_after(30):
        while True:
            info = await deployment.info(name)
            if info["lastStat"] and check(info):
                return info
            await trio.sleep(0.2)


async def test_a_running_session_shows_its_cpu_and_memory(deployment: Deployment) -> None:
    name = unique_name()
    await deployment.create(name=name)
    await deployment.run(name, "blob = bytearray(64 * 1024 * 1024)")
    await deployment.run(name, BURN)
    info = await _live(deployment, name, lambda info: info["cpuCreditUsed"] >= 1000)
    stat = info["lastStat"]
    assert Decimal(stat["cpu_used"]["current"]) >= 1000
    assert stat["cpu_used"]["unit_hint"] == "msec"
    assert int(stat["mem"]["current"]) >= 64 * 1024 * 1024
    assert int(stat["mem"]["stats.max"]) >= int(stat["mem"]["current"])
    # Freed memory leaves the peak behind.
    await deployment.run(name, "del blob; import gc; gc.collect()")
    info = await _live(
        deployment,
        name,
        lambda info: int(info["lastStat"]["mem"]["current"]) < 48 * 1024 * 1024,
    )
    assert int(info["lastStat"]["mem"]["stats.max"]) >= 64 * 1024 * 1024
    # The final sample stays once the session ended.
    assert (await deployment.destroy(name)).status_code == 200
    ended = await deployment.info(name)
    assert ended["status"] == "TERMINATED"
    assert ended["cpuCreditUsed"] >= 1000


async def test_bai_ps_shows_what_sessions_use(deployment: Deployment) -> None:
    name = unique_name()
    await deployment.create(name=name)
    await deployment.run(name, "blob = bytearray(96 * 1024 * 1024)")
    await _live(
        deployment,
        name,
        lambda info: (
            int(info["lastStat"]["mem"]["current"]) > 96 << 20 and "cpu_util" in info["lastStat"]
        ),
    )
    shown = await invoke_bai(
        deployment.api.base_url,
        deployment.api.user,
        "ps",
        "-f",
        "name,used_memory,max_used_memory,cpu_using,idle_checks",
    )
    assert shown.exit_code == 0, shown.output
    header, row = (line.split("\t") for line in shown.output.splitlines()[:2])
    assert header == [
        "Name",
        "Used Memory (MiB)",
        "Max Used Memory (MiB)",
        "CPU Using (%)",
        "Idle Checks",
    ]
    assert row[0] == name, shown.output
    assert row[1] != "-", shown.output
    assert float(row[1]) >= 96 and float(row[2]) >= float(row[1])
    assert float(row[3]) >= 0
