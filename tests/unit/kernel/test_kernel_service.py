"""The service-ports label and the service definition DSL (spec lines 2720-2886)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bai.kernel.service import (
    PrestartAction,
    ServiceError,
    ServicePort,
    load_service_definition,
    parse_service_definition,
    parse_service_ports,
    prepare,
)

# The spec's sample definition for "jupyter", verbatim.
JUPYTER = json.loads(
    r"""
{
    "prestart": [
      {
        "action": "write_tempfile",
        "args": {
          "body": [
            "c.NotebookApp.allow_root = True\n",
            "c.NotebookApp.ip = \"0.0.0.0\"\n",
            "c.NotebookApp.port = {ports[0]}\n",
            "c.NotebookApp.token = \"\"\n",
            "c.FileContentsManager.delete_to_trash = False\n"
          ]
        },
        "ref": "jupyter_cfg"
      }
    ],
    "command": [
        "{runtime_path}",
        "-m", "jupyterlab",
        "--no-browser",
        "--config", "{jupyter_cfg}"
    ],
    "url_template": "http://{host}:{port}/"
}
"""
)


def test_the_spec_label_example_parses() -> None:
    assert parse_service_ports("jupyter:http:8080,tensorboard:http:6006") == [
        ServicePort("jupyter", "http", (8080,)),
        ServicePort("tensorboard", "http", (6006,)),
    ]


def test_a_service_may_declare_several_ports() -> None:
    assert parse_service_ports("vnc:tcp:[5900,5901], shell:pty:7000") == [
        ServicePort("vnc", "tcp", (5900, 5901)),
        ServicePort("shell", "pty", (7000,)),
    ]


def test_an_empty_label_declares_nothing() -> None:
    assert parse_service_ports("") == []


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("jupyter:http", "expected name:protocol:port"),
        ("jupyter:ftp:8080", "protocol must be one of"),
        ("jupyter:http:80a", "expected a port number"),
        ("jupyter:http:70000", "expected a port number"),
        ("jupyter:http:2000", "port reserved for bai itself (got 2000)"),
        ("jupyter:http:7681", "reserved"),
        ("a:http:8080,a:http:8081", "service declared twice (got 'a')"),
        ("a:http:8080,b:http:8080", "port declared twice"),
        ("a:http:8080,,b:http:8081", "empty declaration"),
        ("../x:http:8080", "bad service name"),
        ("jüpyter:http:8080", "bad service name"),
    ],
)
def test_bad_labels_are_refused_naming_the_entry(label: str, expected: str) -> None:
    with pytest.raises(ServiceError, match="service-ports") as info:
        parse_service_ports(label)
    assert expected in str(info.value)


def test_the_spec_jupyter_definition_parses() -> None:
    definition = parse_service_definition(JUPYTER)
    assert definition.command[:3] == ("{runtime_path}", "-m", "jupyterlab")
    assert definition.url_template == "http://{host}:{port}/"
    (action,) = definition.prestart
    assert (action.action, action.ref, action.args["mode"]) == (
        "write_tempfile",
        "jupyter_cfg",
        0o755,
    )


def test_the_dry_run_renders_every_template_without_side_effects(tmp_path: Path) -> None:
    rendered = prepare(
        parse_service_definition(JUPYTER), ports=[8080], runtime_path="/usr/bin/python3"
    )
    assert rendered.command[:5] == [
        "/usr/bin/python3",
        "-m",
        "jupyterlab",
        "--no-browser",
        "--config",
    ]
    assert rendered.command[5].endswith("placeholder")
    assert not Path(rendered.command[5]).exists()


def test_refs_flow_from_action_to_action_in_order() -> None:
    definition = parse_service_definition(
        {
            "prestart": [
                {"action": "run_command", "args": {"command": ["echo", "{ports[1]}"]}, "ref": "r"},
                {"action": "write_file", "args": {"filename": "/w/{r[out]}", "body": ["x"]}},
            ],
            "command": ["serve", "--port={ports[0]}", "{r[out]}"],
            "env": {"CFG": "{runtime_path}.cfg"},
        }
    )
    calls: list[tuple[str, dict[str, Any]]] = []

    def run(action: PrestartAction, args: dict[str, Any], field: str) -> Any:
        calls.append((action.action, args))
        return {"out": "OUT", "err": ""} if action.action == "run_command" else None

    rendered = prepare(definition, ports=[9000, 9001], runtime_path="/py", run_action=run)
    assert calls[0] == ("run_command", {"command": ["echo", "9001"]})
    assert calls[1][1]["filename"] == "/w/OUT"
    assert rendered.command == ["serve", "--port=9000", "OUT"]
    assert rendered.env == {"CFG": "/py.cfg"}


@pytest.mark.parametrize(
    ("definition", "expected"),
    [
        ({"command": ["x", "{ports[3]}"]}, "command[1]: cannot fill in the template"),
        (
            {"command": ["x", "{nope}"]},
            "command[1]: cannot fill in the template (KeyError('nope'))",
        ),
        ({"command": ["x", "{ports"]}, "command[1]"),
        (
            {"prestart": [{"action": "log", "args": {"body": "{later}"}}], "command": ["x"]},
            "prestart[0].args.body",
        ),
        (
            {
                "prestart": [{"action": "mkdir", "args": {"path": "d"}, "ref": "made"}],
                "command": ["x", "{made[0]}"],
            },
            "command[1]",
        ),
    ],
)
def test_broken_templates_are_named(definition: dict[str, Any], expected: str) -> None:
    with pytest.raises(ServiceError) as info:
        prepare(parse_service_definition(definition), ports=[8080], runtime_path="/py")
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("definition", "expected"),
    [
        ([], "definition: expected a JSON object"),
        ({}, "definition.command: expected a list of strings (got None)"),
        ({"command": []}, "definition.command: must not be empty"),
        ({"command": ["x", 1]}, "definition.command: expected a list of strings"),
        ({"command": ["x"], "prestart": {}}, "definition.prestart: expected a list"),
        ({"command": ["x"], "prestart": [{"action": "rm", "args": {}}]}, "prestart[0].action"),
        (
            {"command": ["x"], "prestart": [{"action": "log"}]},
            "prestart[0].args: expected an object",
        ),
        (
            {"command": ["x"], "prestart": [{"action": "write_file", "args": {"body": []}}]},
            "prestart[0].args.filename",
        ),
        (
            {
                "command": ["x"],
                "prestart": [{"action": "write_tempfile", "args": {"body": [], "mode": "9"}}],
            },
            "prestart[0].args.mode: expected an octal permission string",
        ),
        (
            {
                "command": ["x"],
                "prestart": [{"action": "log", "args": {"body": "b", "debug": "yes"}}],
            },
            "prestart[0].args.debug",
        ),
        (
            {"command": ["x"], "prestart": [{"action": "log", "args": {"body": "b"}, "ref": "1x"}]},
            "prestart[0].ref",
        ),
        ({"command": ["x"], "url_template": 5}, "definition.url_template"),
        ({"command": ["x"], "env": {"A": 1}}, "definition.env"),
    ],
)
def test_bad_definitions_are_refused_naming_the_field(definition: Any, expected: str) -> None:
    with pytest.raises(ServiceError) as info:
        parse_service_definition(definition)
    assert expected in str(info.value)


def test_definition_files_are_found_by_service_name(tmp_path: Path) -> None:
    (tmp_path / "jupyter.json").write_text(json.dumps(JUPYTER))
    (tmp_path / "broken.json").write_text("{not json")
    assert load_service_definition(str(tmp_path), "jupyter").url_template == "http://{host}:{port}/"
    with pytest.raises(ServiceError, match="unreadable service definition"):
        load_service_definition(str(tmp_path), "broken")
    with pytest.raises(ServiceError, match="no service definition file"):
        load_service_definition(str(tmp_path), "absent")
    with pytest.raises(ServiceError, match="bad service name"):
        load_service_definition(str(tmp_path), "../jupyter")
