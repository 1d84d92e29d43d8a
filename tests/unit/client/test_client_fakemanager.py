"""Request signing: what the fake manager (:mod:`support.fakemanager`) verifies is what
the client sent."""

from __future__ import annotations

import pytest

from bai.client import APIClient, BackendClientError, Unauthorized

from support.fakemanager import ACCESS_KEY, FakeManager, manager

__all__ = ["manager"]

# ---------------------------------------------------------------------------
# Signing: what the server verifies is what the client sent.
# ---------------------------------------------------------------------------


async def test_signed_request_is_accepted_and_names_its_access_key(manager: FakeManager) -> None:
    manager.answer("GET", "/session/s1", {"status": "RUNNING"})
    async with APIClient(manager.config()) as api:
        assert await api.fetch_json("GET", "/session/s1") == {"status": "RUNNING"}
    seen = manager.last()
    assert seen.headers["authorization"].startswith("BackendAI signMethod=HMAC-SHA256, credential=")
    assert f"credential={ACCESS_KEY}:" in seen.headers["authorization"]
    assert seen.headers["x-backendai-version"] == "v6.20220615"


async def test_signature_covers_percent_encoded_path_and_query(manager: FakeManager) -> None:
    manager.answer("GET", "/session/my sess/ü", {"ok": True})
    async with APIClient(manager.config()) as api:
        await api.fetch_json(
            "GET", "/session/my%20sess/%C3%BC", params={"a": "x y", "files": ["1", "2"]}
        )
    seen = manager.last()
    assert seen.raw_target == "/session/my%20sess/%C3%BC?a=x+y&files=1&files=2"
    assert seen.query == {"a": ["x y"], "files": ["1", "2"]}


async def test_wrong_secret_key_is_rejected_with_typed_401(manager: FakeManager) -> None:
    manager.answer("GET", "/session/s1", {})
    async with APIClient(manager.config(secret_key="not-the-right-secret")) as api:
        with pytest.raises(Unauthorized) as caught:
            await api.fetch_json("GET", "/session/s1")
    assert caught.value.status == 401
    assert caught.value.error_type == "auth-failed"
    assert "signature mismatch" in (caught.value.detail or "")


async def test_endpoint_path_prefix_is_part_of_the_signed_target(manager: FakeManager) -> None:
    manager.answer("POST", "/api/session", {"ok": 1})
    async with APIClient(manager.config(endpoint=manager.url + "/api/")) as api:
        assert await api.fetch_json("POST", "/session", json_body={"a": 1}) == {"ok": 1}
    assert manager.last().raw_target == "/api/session"


async def test_requests_without_keypair_fail_before_sending(manager: FakeManager) -> None:
    async with APIClient(manager.config(access_key="", secret_key="")) as api:
        with pytest.raises(BackendClientError, match="BACKEND_ACCESS_KEY"):
            await api.fetch_json("GET", "/session/s1")
        assert (await api.hello())["version"] == "v6.20220615"
    assert [r.path for r in manager.requests] == ["/"]
    assert "authorization" not in manager.requests[0].headers
