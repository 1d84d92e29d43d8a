"""``config.resource_opts``: ``shmem`` sizes a kernel's ``/dev/shm``; bad options are refused."""

from __future__ import annotations

from typing import Any

import pytest

from support.api_session import Deployment, problem, unique_name


async def test_shmem_sizes_the_kernels_dev_shm(deployment: Deployment) -> None:
    backend = deployment.cluster.agents[0].backend
    if getattr(backend, "bwrap", None) is None:
        pytest.skip("without bubblewrap the kernel shares the host's /dev/shm")
    name = unique_name()
    await deployment.create(
        name=name,
        config={"resources": {"cpu": "1", "mem": "256m"}, "resource_opts": {"shmem": "64m"}},
    )
    out, _ = await deployment.run(
        name, "import os\ns = os.statvfs('/dev/shm')\nprint(s.f_blocks * s.f_frsize)"
    )
    assert int(out.strip()) == 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"shmem": "512m"}, "config.resource_opts.shmem"),
        ({"shmem": "lots"}, "config.resource_opts.shmem"),
        ({"shmem": 0}, "config.resource_opts.shmem"),
        ({"shmem": "2t"}, "config.resource_opts.shmem"),
        ({"gpu_fraction": 1}, "config.resource_opts.gpu_fraction"),
    ],
)
async def test_resource_options_that_cannot_be_met_are_refused(
    deployment: Deployment, options: dict[str, Any], field: str
) -> None:
    response = await deployment.api.call(
        "POST",
        "/session",
        key=deployment.api.user,
        json_body={
            "name": unique_name(),
            "image": "python",
            "config": {"resources": {"cpu": "1", "mem": "256m"}, "resource_opts": options},
        },
    )
    problem(response, 400, "invalid-api-params", field)
    assert (await deployment.table_counts())["sessions"] == 0
