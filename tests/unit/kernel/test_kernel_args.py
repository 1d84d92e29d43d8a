"""How the kernel runner is configured: command line first, then BAI_KERNEL_* variables."""

from __future__ import annotations

import sys

import pytest

from bai.kernel.runner import RunnerConfig, parse_args


def test_defaults_are_the_container_ports_and_this_python() -> None:
    config = parse_args([], {})
    assert config == RunnerConfig(
        input_addr="tcp://0.0.0.0:2000",
        output_addr="tcp://0.0.0.0:2001",
        pty_input_addr=None,
        pty_output_addr=None,
        runtime="python",
        runtime_path=sys.executable,
        service_ports="",
        service_defs="/etc/backend.ai/service-defs",
    )


def test_the_environment_fills_in_and_options_win() -> None:
    env = {
        "BAI_KERNEL_INPUT": "ipc:///tmp/k/in",
        "BAI_KERNEL_OUTPUT": "ipc:///tmp/k/out",
        "BAI_KERNEL_PTY_INPUT": "ipc:///tmp/k/pin",
        "BAI_KERNEL_PTY_OUTPUT": "ipc:///tmp/k/pout",
        "BAI_KERNEL_RUNTIME": "shell",
        "BAI_KERNEL_SERVICE_PORTS": "jupyter:http:8080",
    }
    config = parse_args(["--input", "ipc:///tmp/other", "--runtime", "app"], env)
    assert config.input_addr == "ipc:///tmp/other"
    assert config.output_addr == "ipc:///tmp/k/out"
    assert (config.pty_input_addr, config.pty_output_addr) == (
        "ipc:///tmp/k/pin",
        "ipc:///tmp/k/pout",
    )
    assert config.runtime == "app"
    assert config.service_ports == "jupyter:http:8080"


def test_half_a_pty_pair_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--pty-input", "ipc:///tmp/k/pin"], {})
    assert "--pty-input and --pty-output go together" in capsys.readouterr().err


def test_unknown_runtimes_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--runtime", "cobol"], {})
    assert "invalid choice: 'cobol'" in capsys.readouterr().err


def test_values_may_follow_an_equals_sign_and_the_last_one_wins() -> None:
    config = parse_args(["--runtime=shell", "--input=ipc:///tmp/a", "--input", "ipc:///tmp/b"], {})
    assert (config.runtime, config.input_addr) == ("shell", "ipc:///tmp/b")


def test_empty_variables_count_as_unset() -> None:
    config = parse_args([], {"BAI_KERNEL_RUNTIME": "", "BAI_KERNEL_INPUT": ""})
    assert (config.runtime, config.input_addr) == ("python", "tcp://0.0.0.0:2000")


def test_an_unknown_runtime_from_the_environment_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args([], {"BAI_KERNEL_RUNTIME": "cobol"})
    assert exit_info.value.code == 2
    assert "invalid choice: 'cobol'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["--inptu", "ipc:///tmp/x"], "unrecognized arguments: --inptu"),
        (["ipc:///tmp/x"], "unrecognized arguments: ipc:///tmp/x"),
        (["--output"], "argument --output: expected one argument"),
        (
            ["--bootstrap-timeout", "soon"],
            "argument --bootstrap-timeout: not a positive number of seconds: 'soon'",
        ),
        (
            ["--bootstrap-timeout=0"],
            "argument --bootstrap-timeout: not a positive number of seconds: '0'",
        ),
        (
            ["--bootstrap-timeout", "nan"],
            "argument --bootstrap-timeout: not a positive number of seconds: 'nan'",
        ),
        (
            ["--bootstrap-timeout", "inf"],
            "argument --bootstrap-timeout: not a positive number of seconds: 'inf'",
        ),
    ],
)
def test_bad_usage_exits_2_naming_the_problem(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv, {})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m bai.kernel")
    assert f"error: {problem}" in err


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"], {})
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--input", "--output", "--pty-input", "--pty-output", "--runtime"):
        assert f"[{option} " in out
    assert "--runtime-path" in out and "--service-ports" in out and "--service-defs" in out
    assert "--bootstrap" in out and "--bootstrap-timeout" in out


def test_a_bootstrap_script_and_its_time_limit() -> None:
    assert parse_args([], {}).bootstrap is None
    config = parse_args(
        ["--bootstrap", "/home/work/bootstrap.sh"], {"BAI_KERNEL_BOOTSTRAP_TIMEOUT": "2.5"}
    )
    assert (config.bootstrap, config.bootstrap_timeout) == ("/home/work/bootstrap.sh", 2.5)
