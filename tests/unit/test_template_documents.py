"""Reading template payloads: JSON or YAML, aliases, the wrapper, refusals naming the field."""

from __future__ import annotations

import json
import uuid

import msgspec
import pytest

from bai.manager.templates import (
    MAX_PAYLOAD,
    InvalidTemplate,
    check_cluster_template,
    cluster_payload,
    dump_yaml,
    load_payload,
    task_entries,
)

# The spec's sample session template ("Creating and starting session template").
SPEC_SAMPLE = """---
api_version: v1
kind: taskTemplate
metadata:
  name: template1234
  tag: example-tag
spec:
  kernel:
    environ:
      MYCONFIG: XXX
    git:
      branch: '19.09'
      commit: 10daee9e328876d75e6d0fa4998d4456711730db
      repository: https://github.com/lablup/backend.ai-agent
      destinationDir: /home/work/baiagent
    image: python:3.6-ubuntu18.04
  resources:
    cpu: '2'
    mem: 4g
  mounts:
    hostpath-test: /home/work/hostDesktop
    test-vfolder:
  sessionType: interactive
"""


def _task(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "taskTemplate",
        "metadata": {"name": "t1"},
        "spec": {"kernel": {"image": "python"}, **spec},
    }


def _refusal(payload: str) -> InvalidTemplate:
    with pytest.raises(InvalidTemplate) as caught:
        task_entries(load_payload(payload))
    return caught.value


def test_the_spec_sample_is_stored_with_canonical_names() -> None:
    [entry] = task_entries(load_payload(SPEC_SAMPLE))
    stored = msgspec.to_builtins(entry.template)
    assert entry.name == "template1234"
    assert stored["api_version"] == "v1"
    assert stored["metadata"] == {"name": "template1234", "tag": "example-tag"}
    assert stored["spec"]["session_type"] == "interactive"
    assert stored["spec"]["kernel"]["git"]["dest_dir"] == "/home/work/baiagent"
    assert stored["spec"]["kernel"]["git"]["branch"] == "19.09"
    assert stored["spec"]["mounts"] == {
        "hostpath-test": "/home/work/hostDesktop",
        "test-vfolder": None,
    }
    # What is stored reads back as the same template (the GET/PUT round trip).
    assert task_entries(load_payload(json.dumps(stored)))[0].template == entry.template
    assert task_entries(load_payload(dump_yaml(stored)))[0].template == entry.template


def test_json_lists_yaml_documents_and_the_web_ui_wrapper() -> None:
    two = "---\n" + dump_yaml(_task()) + "---\n" + dump_yaml(_task(sessionType="batch"))
    assert [e.field for e in task_entries(load_payload(two))] == ["payload.0", "payload.1"]
    wrapped = json.dumps([{"template": _task(), "name": "renamed", "group_id": "g"}])
    [entry] = task_entries(load_payload(wrapped))
    assert (entry.name, entry.group_id, entry.template_field) == (
        "renamed",
        "g",
        "payload.template",
    )


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        (json.dumps(_task(colour="red")), "payload.spec.colour", "not a known field"),
        (json.dumps(_task(resources=["cpu"])), "payload.spec.resources", "got `array`"),
        (
            json.dumps({**_task(), "spec": {"kernel": {"image": 3}}}),
            "payload.spec.kernel.image",
            "Expected `str`",
        ),
        (json.dumps({**_task(), "kind": "clusterTemplate"}), "payload.kind", "taskTemplate"),
        (
            json.dumps({**_task(), "api_version": "v1"}),
            "payload.api_version",
            "a second time",
        ),
        (json.dumps(_task(sessionType="forever")), "payload.spec.session_type", "Invalid enum"),
        (json.dumps(_task(mounts={"a/b": None})), "payload.spec.mounts.a/b", "folder name"),
        (json.dumps(_task(mounts={"data": "/etc"})), "payload.spec.mounts.data", "mount path"),
        ("spec: [unclosed", "payload", "neither JSON nor YAML"),
        ("a: &x [1]\nb: *x\n", "payload", "aliases"),
        ("", "payload", "holds no template"),
        ("[1]", "payload", "must be a task template"),
    ],
)
def test_bad_templates_name_the_field(payload: str, field: str, words: str) -> None:
    refusal = _refusal(payload)
    assert refusal.field == field
    assert words in str(refusal)


def test_a_wrapper_refusal_names_the_document_and_the_key() -> None:
    payload = json.dumps([{"template": _task()}, {"template": _task(extra=1)}])
    assert _refusal(payload).field == "payload.1.template.spec.extra"
    assert _refusal(json.dumps({"template": {}, "owner": "x"})).field == "payload.owner"


def test_an_oversized_payload_is_refused_before_parsing() -> None:
    refusal = _refusal("#" * (MAX_PAYLOAD + 1))
    assert refusal.field == "payload" and "at most" in str(refusal)


def _cluster(*nodes: dict[str, object], **top: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "clusterTemplate",
        "mode": "single-node",
        "metadata": {"name": "c1"},
        "spec": {"nodes": list(nodes)},
        **top,
    }


def test_cluster_templates_need_one_main_node_and_unique_roles() -> None:
    main = {"role": "main", "sessionTemplate": str(uuid.uuid4())}
    worker = {"role": "worker", "session_template": str(uuid.uuid4()), "replicas": 3}
    checked = check_cluster_template(_cluster(main, worker))
    assert [(n.role, n.replicas) for n in checked.spec.nodes] == [("main", 1), ("worker", 3)]
    assert cluster_payload(load_payload(dump_yaml(_cluster(main)))).metadata.name == "c1"
    cases = [
        (_cluster(worker), "payload.spec.nodes", "role 'main'"),
        (_cluster(main, {**main}), "payload.spec.nodes.1.role", "only be defined once"),
        (_cluster({**main, "replicas": 2}), "payload.spec.nodes.0.replicas", "exactly one"),
        (
            _cluster({**main, "sessionTemplate": "nope"}),
            "payload.spec.nodes.0.session_template",
            "",
        ),
        (_cluster(main, mode="everywhere"), "payload.mode", "Invalid enum"),
    ]
    for document, field, words in cases:
        with pytest.raises(InvalidTemplate) as caught:
            check_cluster_template(document)
        assert caught.value.field == field and words in str(caught.value)
    with pytest.raises(InvalidTemplate) as caught:
        cluster_payload(load_payload(json.dumps([_cluster(main), _cluster(main)])))
    assert caught.value.field == "payload"
