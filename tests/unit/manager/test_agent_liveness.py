"""The manager's judgement of agent liveness, and what a heartbeat says about kernels."""

from __future__ import annotations

import math
import uuid

import pytest

from bai.common.errors import InvalidValue
from bai.common.events import BusReadHealth
from bai.manager.agents.beats import parse_beat
from bai.manager.agents.liveness import silent_too_long

TIMEOUT = 2.0


def test_a_silence_while_the_bus_is_read_is_evidence() -> None:
    health = BusReadHealth(since=0.0, last=10.0)
    assert silent_too_long(7.9, health, TIMEOUT)
    assert not silent_too_long(8.0, health, TIMEOUT)


def test_nothing_is_evidence_while_the_bus_cannot_be_read() -> None:
    assert not silent_too_long(0.0, None, TIMEOUT)


def test_after_an_outage_every_agent_gets_a_full_timeout() -> None:
    # Last heard long ago, but the bus has been read again only since 100.
    assert not silent_too_long(1.0, BusReadHealth(since=100.0, last=101.9), TIMEOUT)
    assert silent_too_long(1.0, BusReadHealth(since=100.0, last=102.1), TIMEOUT)


def test_only_reads_that_succeeded_count() -> None:
    # The latest successful read was at 5: what came after is not known to be silent.
    assert not silent_too_long(4.0, BusReadHealth(since=-math.inf, last=5.0), TIMEOUT)


def _info(**extra: object) -> dict[str, object]:
    return {"addr": "tcp://127.0.0.1:6001", **extra}


def test_a_heartbeat_names_the_kernels_the_agent_still_has() -> None:
    running, ending, ended = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    statuses = {str(running): "RUNNING", str(ending): "TERMINATING", str(ended): "TERMINATED"}
    beat = parse_beat(_info(kernel_statuses=statuses))
    assert beat.live_kernels == {running, ending}


def test_a_heartbeat_without_kernel_statuses_says_nothing_about_kernels() -> None:
    assert parse_beat(_info()).live_kernels is None
    assert parse_beat(_info(kernel_statuses={})).live_kernels == frozenset()


@pytest.mark.parametrize("statuses", [["RUNNING"], {"not-a-kernel-id": "RUNNING"}])
def test_malformed_kernel_statuses_are_refused(statuses: object) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_beat(_info(kernel_statuses=statuses))
    assert caught.value.field == "agent_info.kernel_statuses"
