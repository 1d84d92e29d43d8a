"""bai's own SDK (:mod:`bai.client.template`) and CLI (``bai session-template``,
``bai start-template``) against a real deployment, in both modes."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import trio
import yaml
from click.testing import CliRunner, Result

from bai.cli.main import cli
from bai.client import APIClient, ComputeSession
from bai.client.exceptions import BackendAPIError
from bai.client.template import ClusterTemplate, SessionTemplate

from support.api import Key
from support.api_session import Deployment, unique_name

TEMPLATE = """---
api_version: v1
kind: taskTemplate
metadata: {name: sdk-template, tag: sdk}
spec:
  kernel: {image: python, environ: {GREETING: hello}}
  resources: {cpu: '1', mem: 256m}
"""


async def test_the_sdk_stores_reads_and_starts_templates(deployment: Deployment) -> None:
    d = deployment
    async with APIClient(d.sdk_config(d.api.user)) as api:
        [template] = await SessionTemplate.create(api, TEMPLATE)
        listed = await SessionTemplate.list_templates(api)
        assert [item["id"] for item in listed] == [template.id]
        assert yaml.safe_load(await template.get())["name"] == "sdk-template"
        await template.update(TEMPLATE.replace("sdk-template", "sdk-renamed"))
        assert (await template.info())["name"] == "sdk-renamed"

        name = unique_name("sdk")
        session = await template.start(name=name, environ={"GREETING": "overridden"})
        assert (session.name, session.status, session.created) == (name, "RUNNING", True)
        out, _ = await d.run(name, "import os; print(os.environ['GREETING'])")
        assert out == "overridden\n"
        await ComputeSession(api, name).destroy()

        cluster_text = json.dumps(
            {
                "api_version": "v1",
                "kind": "clusterTemplate",
                "mode": "single-node",
                "metadata": {"name": "sdk-cluster"},
                "spec": {"nodes": [{"role": "main", "session_template": template.id}]},
            }
        )
        cluster = await ClusterTemplate.create(api, cluster_text)
        assert yaml.safe_load(await cluster.get())["metadata"]["name"] == "sdk-cluster"
        cluster_session = await cluster.start(name=unique_name("sdkc"))
        assert cluster_session.status == "RUNNING"
        await cluster_session.destroy()
        await cluster.delete()
        assert await ClusterTemplate.list_templates(api) == []

        await template.delete()
        try:
            await template.get()
        except BackendAPIError as exc:
            assert exc.status == 404
        else:
            raise AssertionError("a deleted template was still found")


async def _bai(d: Deployment, key: Key, *args: str, stdin: str | None = None) -> Result:
    environment: dict[str, str | None] = {k: None for k in os.environ if k.startswith("BACKEND_")}
    environment.update(
        BACKEND_ENDPOINT=d.api.base_url,
        BACKEND_ACCESS_KEY=key.access_key,
        BACKEND_SECRET_KEY=key.secret_key,
    )
    runner = CliRunner()
    result: Result = await trio.to_thread.run_sync(
        functools.partial(runner.invoke, cli, list(args), input=stdin, env=environment)
    )
    return result


def _ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


async def test_the_cli_session_template_commands(deployment: Deployment, tmp_path: Path) -> None:
    d, user = deployment, deployment.api.user
    created = _ok(await _bai(d, user, "session-template", "create", stdin=TEMPLATE))
    template_id = created.split()[0]
    assert len(template_id) == 32
    assert template_id in _ok(await _bai(d, user, "session-template", "list"))
    shown = yaml.safe_load(_ok(await _bai(d, user, "session-template", "get", template_id)))
    assert shown["template"]["metadata"]["tag"] == "sdk"
    source = tmp_path / "changed.yaml"
    source.write_text(TEMPLATE.replace("tag: sdk", "tag: cli"))
    _ok(await _bai(d, user, "session-template", "update", template_id, "-f", str(source)))
    as_json = _ok(await _bai(d, user, "session-template", "get", template_id, "--format", "json"))
    assert json.loads(as_json)["template"]["metadata"]["tag"] == "cli"

    name = unique_name("cli")
    started = await _bai(d, user, "start-template", template_id, "-t", name, "-e", "GREETING=cli")
    assert started.exit_code == 0, started.output
    assert "is created and ready" in started.stderr
    out, _ = await d.run(name, "import os; print(os.environ['GREETING'])")
    assert out == "cli\n"
    assert (await d.destroy(name)).status_code == 200

    bad = await _bai(d, user, "session-template", "create", stdin=TEMPLATE + "  extra: 1\n")
    assert bad.exit_code != 0 and "payload.spec.extra" in bad.output
    _ok(await _bai(d, user, "session-template", "delete", "-f", template_id))
    assert template_id not in _ok(await _bai(d, user, "session-template", "list"))
