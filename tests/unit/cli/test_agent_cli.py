"""``bai agent`` refuses a bad config with one clear line and exit code 2."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from bai.cli.main import cli


def test_a_missing_or_broken_config_is_named(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["agent", "--config", str(tmp_path / "absent.toml")])
    assert result.exit_code == 2
    assert "absent.toml" in result.output
    broken = tmp_path / "agent.toml"
    broken.write_text('[agent]\nheartbeat-interval = "soon"\n')
    result = runner.invoke(cli, ["agent", "--config", str(broken)])
    assert result.exit_code == 2
    assert "heartbeat-interval" in result.output


def test_the_command_is_listed() -> None:
    result = CliRunner().invoke(cli, ["agent", "--help"])
    assert result.exit_code == 0
    assert "--config" in result.output
