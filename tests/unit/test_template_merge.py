"""From a template and a caller's overrides to the body of ``POST /session``."""

from __future__ import annotations

import uuid

import pytest

from bai.manager.templates import (
    InvalidTemplate,
    check_cluster_template,
    check_task_template,
    cluster_body,
    merged_body,
    task_body,
)


def _template(**kernel: object) -> dict[str, object]:
    return {
        "api_version": "v1",
        "kind": "task_template",
        "metadata": {"name": "t", "tag": "from-template"},
        "spec": {
            "type": "batch",
            "kernel": {
                "image": "python",
                "environ": {"A": "1"},
                "run": {"bootstrap": "echo boot", "startup": "python main.py"},
                **kernel,
            },
            "resources": {"cpu": "1", "mem": "256m"},
            "mounts": {"data": "/data/in", "plain": None},
            "scalingGroup": "default",
        },
    }


TEMPLATE = check_task_template(_template())
BASE = task_body(TEMPLATE, domain="default", group="research")


def test_a_template_gives_every_key_the_original_maps() -> None:
    assert BASE == {
        "image": "python",
        "type": "batch",
        "tag": "from-template",
        "bootstrap_script": "echo boot",
        "startupCommand": "python main.py",
        "domain": "default",
        "group": "research",
        "config": {
            "scalingGroup": "default",
            "mounts": ["data", "plain"],
            "mount_map": {"data": "/data/in"},
            "environ": {"A": "1"},
            "resources": {"cpu": "1", "mem": "256m"},
        },
    }


def test_overrides_replace_key_by_key_and_null_gives_way() -> None:
    merged = merged_body(
        BASE,
        {
            "template_id": "ignored",
            "name": "mine",
            "tag": None,
            "lang": "python-alias",
            "callbackURL": "http://127.0.0.1:1/cb",
            "config": {"resources": {"cpu": "2"}, "environ": None, "scalingGroup": None},
        },
    )
    assert "template_id" not in merged and "image" not in merged
    assert merged["lang"] == "python-alias" and merged["name"] == "mine"
    assert merged["tag"] == "from-template"
    assert merged["callback_url"] == "http://127.0.0.1:1/cb"
    assert merged["config"]["resources"] == {"cpu": "2"}  # replaced, not merged
    assert merged["config"]["environ"] == {"A": "1"}
    assert merged["config"]["scalingGroup"] == "default"


@pytest.mark.parametrize(
    ("given", "mounts", "mount_map"),
    [
        # The official SDK sends an empty list whenever the caller names no folder.
        ({"mounts": []}, ["data", "plain"], {"data": "/data/in"}),
        # Its --no-mount adds an empty mount_map: the template's folders are dropped.
        ({"mounts": [], "mount_map": {}}, [], {}),
        ({"mounts": ["other"]}, ["other"], None),
    ],
)
def test_folders_are_replaced_never_appended(
    given: dict[str, object], mounts: list[str], mount_map: dict[str, str] | None
) -> None:
    config = merged_body(BASE, {"config": given})["config"]
    assert config["mounts"] == mounts
    assert config.get("mount_map") == mount_map


def test_git_appends_a_quoted_clone_to_the_bootstrap_script() -> None:
    git = {
        "repository": "https://example.invalid/team/repo.git",
        "branch": "main; rm -rf /",
        "commit": "abc123",
        "credential": {"username": "me", "password": "p@ss word"},
    }
    template = check_task_template(_template(git=git))
    merged = merged_body(task_body(template, domain=None, group=None), {}, template)
    assert merged["bootstrap_script"] == (
        "echo boot\n"
        "git clone -b 'main; rm -rf /' -- https://me:p%40ss%20word@example.invalid/team/repo.git"
        " repo\n"
        "(cd repo && git checkout abc123)\n"
    )
    replaced = merged_body(
        task_body(template, domain=None, group=None), {"bootstrap_script": "echo mine"}, template
    )
    assert replaced["bootstrap_script"].startswith("echo mine\ngit clone")


def _cluster(nodes: list[dict[str, object]]) -> object:
    return check_cluster_template(
        {
            "api_version": "v1",
            "kind": "clusterTemplate",
            "mode": "multi-node",
            "metadata": {"name": "c"},
            "spec": {"environ": {"B": "2"}, "mounts": {"shared": None}, "nodes": nodes},
        }
    )


def test_a_cluster_is_its_main_template_times_all_replicas() -> None:
    cluster = _cluster(
        [
            {"role": "main", "session_template": str(uuid.uuid4())},
            {"role": "worker", "session_template": str(uuid.uuid4()), "replicas": 2},
        ]
    )
    body = cluster_body(cluster, [TEMPLATE, TEMPLATE], domain="d", group="g")  # type: ignore[arg-type]
    assert body["cluster_size"] == 3 and body["cluster_mode"] == "multi-node"
    assert body["config"]["environ"] == {"A": "1", "B": "2"}
    assert body["config"]["mounts"] == ["shared"] and body["config"]["mount_map"] == {}
    other = check_task_template({**_template(), "spec": {"kernel": {"image": "other"}}})
    with pytest.raises(InvalidTemplate) as caught:
        cluster_body(cluster, [TEMPLATE, other], domain="d", group="g")  # type: ignore[arg-type]
    assert caught.value.field == "payload.spec.nodes.1.session_template"
