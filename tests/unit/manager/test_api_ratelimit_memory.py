"""The in-memory rolling-window rate limiter, on a clock the test moves by hand."""

from __future__ import annotations

import pytest

from bai.common.config import RedisConfig
from bai.common.errors import InvalidValue
from bai.manager.api.ratelimit import (
    WINDOW,
    MemoryRateLimiter,
    RateDecision,
    open_rate_limiter,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_admits_up_to_the_limit_then_refuses(clock: Clock) -> None:
    limiter = MemoryRateLimiter(window=60, clock=clock)
    decisions = [await limiter.hit("k", 3) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[3].retry_after == pytest.approx(60)


async def test_the_window_rolls_instead_of_resetting(clock: Clock) -> None:
    limiter = MemoryRateLimiter(window=60, clock=clock)
    assert (await limiter.hit("k", 2)).allowed  # t=0
    clock.now += 40
    assert (await limiter.hit("k", 2)).allowed  # t=40
    clock.now += 10
    refused = await limiter.hit("k", 2)  # t=50: both still inside the window
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(10)
    clock.now += 10  # t=60: the first request has aged out, the second has not
    assert (await limiter.hit("k", 2)).allowed
    assert not (await limiter.hit("k", 2)).allowed


async def test_refused_requests_do_not_extend_the_block(clock: Clock) -> None:
    limiter = MemoryRateLimiter(window=60, clock=clock)
    await limiter.hit("k", 1)
    for _ in range(100):
        clock.now += 0.5
        assert not (await limiter.hit("k", 1)).allowed
    clock.now += 10  # 60 s after the only admitted request
    assert (await limiter.hit("k", 1)).allowed


async def test_keys_are_independent(clock: Clock) -> None:
    limiter = MemoryRateLimiter(window=60, clock=clock)
    assert (await limiter.hit("a", 1)).allowed
    assert not (await limiter.hit("a", 1)).allowed
    assert (await limiter.hit("b", 1)).allowed


async def test_limit_zero_refuses_everything(clock: Clock) -> None:
    limiter = MemoryRateLimiter(window=60, clock=clock)
    decision = await limiter.hit("k", 0)
    assert not decision.allowed
    assert decision.remaining == 0


async def test_a_lowered_limit_applies_at_once(clock: Clock) -> None:
    limiter = MemoryRateLimiter(window=60, clock=clock)
    for _ in range(5):
        await limiter.hit("k", 10)
    decision = await limiter.hit("k", 3)
    assert not decision.allowed
    assert decision.remaining == 0


async def test_idle_keys_are_forgotten(clock: Clock) -> None:
    limiter = MemoryRateLimiter(window=60, clock=clock)
    for i in range(100):
        await limiter.hit(f"ip:{i}", 5)
    clock.now += 61
    for _ in range(5000):
        await limiter.hit("busy", 10**6)
    assert len(limiter) == 1


def test_decision_headers() -> None:
    admitted = RateDecision(True, 100, 42, WINDOW)
    assert admitted.headers() == {
        "X-RateLimit-Limit": "100",
        "X-RateLimit-Remaining": "42",
        "X-RateLimit-Window": "900",
    }
    refused = RateDecision(False, 100, 0, WINDOW, retry_after=0.2)
    assert refused.headers()["Retry-After"] == "1"
    assert RateDecision(False, 1, 0, WINDOW, retry_after=12.5).headers()["Retry-After"] == "13"


def test_window_must_be_positive() -> None:
    with pytest.raises(InvalidValue):
        MemoryRateLimiter(window=0)


async def test_inproc_config_gives_a_memory_limiter() -> None:
    async with open_rate_limiter(RedisConfig(type="inproc")) as limiter:
        assert isinstance(limiter, MemoryRateLimiter)
        assert (await limiter.hit("k", 1)).allowed
