"""``GET /metrics`` of the manager, the agent and the storage proxy: Prometheus text a
scraper can read without credentials, with figures that follow what runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from bai.common.config import HostPort

from support.agent import agent_config, running_agent
from support.api_session import Backends, Deployment, running_deployment, unique_name


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a page by (name, sorted labels); the page must parse."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(response.text)


@pytest.fixture
async def with_storage(backends: Backends, tmp_path: Path) -> AsyncIterator[Deployment]:
    async with running_deployment(backends, tmp_path, storage=True) as running:
        yield running


async def test_the_manager_counts_sessions_agents_and_idle_ends(
    with_storage: Deployment,
) -> None:
    deployment = with_storage
    url = f"{deployment.api.base_url}/metrics"
    await deployment.create(name=unique_name())
    page = await scrape(url)
    assert page[("bai_manager_sessions", (("status", "RUNNING"),))] == 1
    agent = deployment.cluster.agents[0].agent_id
    assert page[("bai_manager_agents", (("status", "ALIVE"),))] >= 1
    assert page[("bai_manager_agent_slot_capacity", (("agent", agent), ("slot", "cpu")))] >= 1
    assert page[("bai_manager_agent_slot_occupied", (("agent", agent), ("slot", "cpu")))] == 1
    idle_ends = ("bai_manager_idle_terminations_total", (("reason", "idle-timeout"),))
    assert page[idle_ends] == 0
    # Nobody uses the session: idle reclaim ends it, and the counter shows it.
    await deployment.set_policy(idle_timeout=1)
    await trio.sleep(1.5)
    await deployment.api.ctx.idle.check_once()
    with trio.fail_after(30):
        while (await scrape(url)).get(idle_ends) != 1:  # noqa: ASYNC110 - polling a server
            await trio.sleep(0.2)


async def test_the_storage_proxy_answers_metrics_without_the_secret(
    with_storage: Deployment,
) -> None:
    proxy = with_storage.storage
    assert proxy is not None
    manager_api = proxy.addresses.manager_api
    page = await scrape(f"{manager_api}/metrics")
    volume = next(iter(proxy.volumes))
    assert page[("bai_storage_volume_capacity_bytes", (("volume", volume),))] > 0
    assert ("bai_storage_volume_folders", (("volume", volume),)) in page
    assert page[("bai_storage_uploads", (("volume", volume),))] == 0
    # Every other route still wants the secret.
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{manager_api}/volumes")).status_code == 401


async def test_the_agent_reports_its_kernels_and_slots(tmp_path: Path) -> None:
    config = agent_config(tmp_path)
    config = msgspec.structs.replace(
        config, agent=msgspec.structs.replace(config.agent, metrics_addr=HostPort("127.0.0.1", 0))
    )
    async with running_agent(config) as harness:
        url = harness.agent.metrics_url
        assert url is not None
        created = await harness.create()
        kernel_id = created["kernel_id"]
        await harness.output(kernel_id, "blob = bytearray(32 * 1024 * 1024)")
        session_id = harness.agent.kernels[kernel_id].record.session_id
        labels = (("kernel_id", kernel_id), ("session_id", session_id))
        with trio.fail_after(30):
            while True:
                page = await scrape(url)
                if page.get(("bai_agent_kernel_memory_bytes", labels), 0) >= 32 * 1024 * 1024:
                    break
                await trio.sleep(0.2)
        assert page[("bai_agent_kernel_memory_max_bytes", labels)] >= 32 * 1024 * 1024
        assert page[("bai_agent_kernel_cpu_seconds_total", labels)] > 0
        assert page[("bai_agent_kernels", (("status", "RUNNING"),))] == 1
        assert page[("bai_agent_slot_capacity", (("slot", "cpu"),))] >= 1
        assert ("bai_agent_slot_allocated", (("slot", "cpu"),)) in page
        async with httpx.AsyncClient() as http:
            assert (await http.get(url.replace("/metrics", "/other"))).status_code == 404
            assert (await http.post(url)).status_code == 405
