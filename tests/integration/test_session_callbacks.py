"""``callback_url``: a receiver sees every lifecycle event of its session, in order; a
receiver that hangs or fails delays nothing."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from quart import request
from quart_trio import QuartTrio

from support.api_session import Deployment, problem, unique_name
from support.net import serve_app


class Receiver:
    """A callback receiver on 127.0.0.1: records bodies, fails or hangs when told."""

    def __init__(self) -> None:
        self.app = QuartTrio(__name__)
        self.bodies: list[dict[str, Any]] = []
        self.terminated = trio.Event()
        self.failures_left = 0
        self.app.add_url_rule("/ok", "ok", self.ok, methods=["POST"])
        self.app.add_url_rule("/hang", "hang", self.hang, methods=["POST"])

    async def ok(self) -> tuple[str, int]:
        body = await request.get_json()
        if self.failures_left > 0:
            self.failures_left -= 1
            return "", 503
        self.bodies.append(body)
        if body["event"] == "terminated":
            self.terminated.set()
        return "", 204

    async def hang(self) -> str:
        await trio.sleep_forever()
        raise AssertionError


async def test_a_receiver_sees_every_lifecycle_event_in_order(deployment: Deployment) -> None:
    receiver = Receiver()
    receiver.failures_left = 1  # the first try of the first event fails and is retried
    url = await deployment.cluster.nursery.start(serve_app, receiver.app)
    name = unique_name()
    created = await deployment.create(name=name, callback_url=f"{url}/ok")
    await deployment.run(name, "print(1)")
    assert (await deployment.destroy(name)).status_code == 200
    with trio.fail_after(30):
        await receiver.terminated.wait()
    events = [body["event"] for body in receiver.bodies]
    assert events == [
        "enqueued",
        "scheduled",
        "preparing",
        "creating",
        "started",
        "terminating",
        "terminated",
    ]
    for body in receiver.bodies:
        assert body["type"] == "session_lifecycle"
        assert body["session_id"] == created["sessionId"]
        assert "T" in body["when"]


async def test_a_hanging_receiver_delays_nothing(deployment: Deployment) -> None:
    receiver = Receiver()
    url = await deployment.cluster.nursery.start(serve_app, receiver.app)
    name = unique_name()
    with trio.fail_after(30):
        await deployment.create(name=name, callback_url=f"{url}/hang")
        assert (await deployment.run(name, "print(6 * 7)"))[0].strip() == "42"
        assert (await deployment.destroy(name)).status_code == 200


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/hook", "not a url", "http://user:secret@example.com/", "http:///x"],
)
async def test_a_callback_url_that_cannot_be_called_is_refused(
    deployment: Deployment, url: str
) -> None:
    response = await deployment.api.call(
        "POST",
        "/session",
        key=deployment.api.user,
        json_body={
            "name": unique_name(),
            "image": "python",
            "callback_url": url,
            "config": {"resources": {"cpu": "1", "mem": "256m"}},
        },
    )
    problem(response, 400, "invalid-api-params", "callback_url")
    assert (await deployment.table_counts())["sessions"] == 0
