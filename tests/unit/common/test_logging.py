"""Logging drivers: what an operator sees on the console and in the log files."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bai.common.logging import get_logger, setup_logging


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    yield
    setup_logging(drivers=())
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def test_console_driver_prints_component_and_message() -> None:
    stream = io.StringIO()
    setup_logging(drivers=["console"], console_stream=stream, console_format="simple")
    get_logger("agent").info("agent %s started", "i-1")
    get_logger("agent").debug("hidden at INFO")
    assert stream.getvalue() == "INFO    bai.agent: agent i-1 started\n"


def test_console_colors_only_when_asked() -> None:
    plain, colored = io.StringIO(), io.StringIO()
    setup_logging(drivers=["console"], console_stream=plain)
    get_logger("x").warning("w")
    setup_logging(drivers=["console"], console_stream=colored, console_colored=True)
    get_logger("x").warning("w")
    assert "\x1b[" not in plain.getvalue()
    assert "\x1b[33m" in colored.getvalue()


def test_file_driver_rotates(tmp_path: Path) -> None:
    setup_logging(
        drivers=["file"],
        file_path=tmp_path / "logs",
        file_name="agent.log",
        file_backup_count=2,
        file_rotation_size=500,
    )
    log = get_logger("agent")
    for i in range(100):
        log.warning("line %03d with some padding to fill the file", i)
    names = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert names == ["agent.log", "agent.log.1", "agent.log.2"]
    assert "line 099" in (tmp_path / "logs" / "agent.log").read_text()


def test_setting_up_twice_does_not_duplicate_lines() -> None:
    stream = io.StringIO()
    setup_logging(drivers=["console"], console_stream=stream, console_format="simple")
    setup_logging(drivers=["console"], console_stream=stream, console_format="simple")
    get_logger("m").error("once")
    assert stream.getvalue().count("once") == 1


def test_package_levels_apply() -> None:
    stream = io.StringIO()
    setup_logging(
        drivers=["console"],
        console_stream=stream,
        level="WARNING",
        pkg_levels={"bai.manager": "DEBUG"},
    )
    get_logger("manager").debug("shown")
    get_logger("agent").info("not shown")
    assert "shown" in stream.getvalue() and "not shown" not in stream.getvalue()


def test_unknown_driver_is_named() -> None:
    with pytest.raises(ValueError, match="logstash"):
        setup_logging(drivers=["logstash"])


def test_a_daemons_logging_section_drives_the_setup(tmp_path: Path) -> None:
    from bai.common.config import AgentConfig, parse_config
    from bai.common.logging import setup_logging_from

    text = f"""
[logging]
level = "DEBUG"
drivers = ["file"]
[logging.file]
path = "{tmp_path / "logs"}"
filename = "agent.log"
"""
    setup_logging_from(parse_config(AgentConfig, text).logging)
    get_logger("agent").info("from the config")
    assert "from the config" in (tmp_path / "logs" / "agent.log").read_text()
