"""Login blocking arithmetic and the in-memory blocker; the freeze table; password ages."""

from __future__ import annotations

import datetime as dt

import pytest
from quart_trio import QuartTrio

from bai.common.errors import InvalidValue
from bai.manager.api.accounts import password_expires_at
from bai.manager.api.app import BLUEPRINTS
from bai.manager.api.loginblock import (
    FailureCount,
    MemoryLoginBlocker,
    after_failure,
    blocked_for,
)
from bai.manager.api.manager_status import REFUSED_WHILE_FROZEN


def test_a_count_below_the_limit_does_not_block() -> None:
    assert blocked_for(None, 100.0, 3) == 0.0
    assert blocked_for(FailureCount(2, 150.0), 100.0, 3) == 0.0


def test_a_count_at_the_limit_blocks_until_it_expires() -> None:
    assert blocked_for(FailureCount(3, 150.0), 100.0, 3) == 50.0
    assert blocked_for(FailureCount(9, 150.0), 149.5, 3) == 0.5
    assert blocked_for(FailureCount(3, 150.0), 150.0, 3) == 0.0


def test_each_failure_renews_the_expiry_and_an_expired_count_restarts() -> None:
    first = after_failure(None, 10.0, 60.0)
    assert first == FailureCount(1, 70.0)
    second = after_failure(first, 30.0, 60.0)
    assert second == FailureCount(2, 90.0)
    assert after_failure(second, 90.0, 60.0) == FailureCount(1, 150.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_blocker_blocks_clears_and_forgets() -> None:
    clock = Clock()
    async with MemoryLoginBlocker(block_time=60.0, allowed=2, clock=clock) as blocker:
        assert await blocker.fail("a") == 1
        assert await blocker.blocked_for("a") == 0.0
        assert await blocker.fail("a") == 2
        assert await blocker.blocked_for("a") == 60.0
        assert await blocker.blocked_for("b") == 0.0
        clock.now += 59.0
        assert await blocker.blocked_for("a") == pytest.approx(1.0)
        clock.now += 1.0
        assert await blocker.blocked_for("a") == 0.0
        await blocker.fail("b")
        await blocker.clear("b")
        assert await blocker.fail("b") == 1


@pytest.mark.parametrize(("block_time", "allowed"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_blocker_settings_are_checked(block_time: float, allowed: int) -> None:
    with pytest.raises(InvalidValue):
        MemoryLoginBlocker(block_time=block_time, allowed=allowed)


def test_every_route_refused_while_frozen_exists() -> None:
    app = QuartTrio(__name__)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    routes = {
        (method, rule.rule) for rule in app.url_map.iter_rules() for method in rule.methods or ()
    }
    assert routes >= REFUSED_WHILE_FROZEN, REFUSED_WHILE_FROZEN - routes
    assert ("POST", "/session") in REFUSED_WHILE_FROZEN


def test_password_expiry() -> None:
    changed = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert password_expires_at(changed, None) is None
    assert password_expires_at(changed, 86400.0) == dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
