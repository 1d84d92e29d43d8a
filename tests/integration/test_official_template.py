"""The official client's session templates (``backend.ai-client==23.9.10``) against ``bai up``.

``backend.ai session-template create/list/get/update/delete`` and
``backend.ai session create-from-template``, run unchanged as a separate
process (:mod:`support.official`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from bai.embedded import EmbeddedHandle
from bai.manager.models import sessions
from bai.manager.models.session import session_templates

from support.official import embedded_cluster, official, official_cli_path

TEMPLATE = """---
api_version: v1
kind: taskTemplate
metadata:
  name: official-template
  tag: official-tag
spec:
  kernel:
    image: python
    environ:
      FROM_TEMPLATE: "yes"
  resources:
    cpu: '1'
    mem: 256m
"""


@pytest.fixture
def official_cli() -> Path:
    return official_cli_path()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[EmbeddedHandle]:
    async with embedded_cluster(tmp_path / "data") as handle:
        yield handle


async def test_session_template_commands_and_create_from_template(
    official_cli: Path, cluster: EmbeddedHandle, tmp_path: Path
) -> None:
    (tmp_path / "template.yaml").write_text(TEMPLATE)

    async def cli(*args: str) -> str:
        code, out, err = await official(official_cli, cluster, tmp_path, *args)
        assert code == 0, (args, out, err)
        assert "Traceback" not in err, err
        return out + err

    created = await cli("session-template", "create", "-f", "template.yaml")
    found = re.search(r"Task template ([0-9a-f]{32}) created and ready", created)
    assert found is not None, created
    template_id = found.group(1)

    listed = await cli("session-template", "list")
    assert template_id in listed and "official-template" in listed

    shown = yaml.safe_load(await cli("session-template", "get", template_id))
    assert shown["name"] == "official-template"
    assert shown["template"]["spec"]["kernel"]["environ"] == {"FROM_TEMPLATE": "yes"}

    (tmp_path / "changed.yaml").write_text(TEMPLATE.replace("official-tag", "changed-tag"))
    updated = await cli("session-template", "update", template_id, "-f", "changed.yaml")
    assert f"Task template {template_id} updated" in updated
    shown = yaml.safe_load(await cli("session-template", "get", template_id, "-f", "json"))
    assert shown["template"]["metadata"]["tag"] == "changed-tag"

    started = await cli("session", "create-from-template", "-t", "from-template-1", template_id)
    assert "Session ID from-template-1 is created and ready." in started, started
    db = cluster.manager.ctx.db
    rows = await db.fetch(
        sa.select(sessions.c.status, sessions.c.tag, sessions.c.environ).where(
            sessions.c.name == "from-template-1"
        )
    )
    [(status, tag, environ)] = [tuple(row) for row in rows]
    assert (status, tag) == ("RUNNING", "changed-tag")
    assert environ["FROM_TEMPLATE"] == "yes"
    await cli("session", "destroy", "from-template-1")

    deleted = await cli("session-template", "delete", "-f", template_id)
    assert f"Task template {template_id} deleted" in deleted
    assert template_id not in await cli("session-template", "list")
    active = await db.fetch(sa.select(session_templates.c.is_active))
    assert list(active.scalars()) == [False]

    # A bad template: the client shows the manager's problem, naming the field.
    (tmp_path / "bad.yaml").write_text(TEMPLATE.replace("image: python", "image: nowhere"))
    code, out, err = await official(
        official_cli, cluster, tmp_path, "session-template", "create", "-f", "bad.yaml"
    )
    assert "payload.spec.kernel.image" in out + err, (code, out, err)
    assert "Traceback" not in err
