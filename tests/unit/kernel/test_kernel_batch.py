"""The default build heuristic that batch mode's ``build: "*"`` stands for."""

from __future__ import annotations

from pathlib import Path

import pytest

from bai.kernel.runtimes.batch import default_build_command


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["Makefile", "main.c"], "make"),
        (["GNUmakefile"], "make"),
        (["CMakeLists.txt", "main.c"], "cmake -S . -B build && cmake --build build"),
        (["pyproject.toml", "requirements.txt"], "/opt/py -m pip install ."),
        (["setup.py"], "/opt/py -m pip install ."),
        (["requirements.txt"], "/opt/py -m pip install -r requirements.txt"),
        (["Cargo.toml"], "cargo build --release"),
        (["go.mod"], "go build -o main ."),
        (["b.c", "a.c", "x.h"], "cc -O2 -Wall -o main a.c b.c -pthread -lm -lrt -ldl"),
        (["main.cpp", "util.cc"], "c++ -O2 -Wall -o main main.cpp util.cc -pthread -lm -lrt -ldl"),
        (["my prog.c"], "cc -O2 -Wall -o main 'my prog.c' -pthread -lm -lrt -ldl"),
        (["README.md", ".hidden.c"], None),
        ([], None),
    ],
)
def test_the_first_matching_rule_wins(
    tmp_path: Path, files: list[str], expected: str | None
) -> None:
    for name in files:
        (tmp_path / name).write_text("")
    assert default_build_command(str(tmp_path), "/opt/py") == expected


def test_the_runtime_path_is_quoted(tmp_path: Path) -> None:
    (tmp_path / "setup.py").write_text("")
    assert default_build_command(str(tmp_path), "/opt/my py") == "'/opt/my py' -m pip install ."


def test_a_missing_directory_has_nothing_to_build(tmp_path: Path) -> None:
    assert default_build_command(str(tmp_path / "absent"), "python") is None
