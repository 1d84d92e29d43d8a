"""Developer tasks: ``nox -s tests``, ``lint``, ``typecheck``, ``bench``.

The sessions run in the interpreter that runs nox (the project's ``.venv``
made by ``.ci/bootstrap``) instead of building fresh virtualenvs, so CI and
developers test exactly the installed tree and pay for one install only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
ROOT = Path(__file__).parent
#: pytest-xdist workers of ``nox -s tests`` unless ``BAI_TEST_WORKERS`` says otherwise.
#: Most tests wait on subprocesses, sockets and databases rather than a CPU, so more
#: workers than cores pay; measured on a 2-core machine (README, "Developing").
DEFAULT_TEST_WORKERS = "4"


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Unit, property and integration tests (extra pytest arguments pass through), spread
    over ``BAI_TEST_WORKERS`` pytest-xdist worker processes (0: all in one process)."""
    paths = ["tests/unit", "tests/property", "tests/integration"]
    workers = os.environ.get("BAI_TEST_WORKERS", "").strip() or DEFAULT_TEST_WORKERS
    if not (workers.isdigit() or workers in ("auto", "logical")):
        session.error(
            f"BAI_TEST_WORKERS must be a number of workers, 'auto' or 'logical', not {workers!r}"
        )
    # worksteal: idle workers take queued tests from busy ones, so a few 20 s tests at the
    # end of one worker's share do not leave the others waiting.
    parallel = ["-n", workers, "--dist", "worksteal"] if workers != "0" else []
    session.run(sys.executable, "-m", "pytest", *parallel, *(session.posargs or paths))


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """ruff: lint rules and formatting; import-linter: the import contracts of pyproject.toml."""
    session.run(sys.executable, "-m", "ruff", "check", ".")
    session.run(sys.executable, "-m", "ruff", "format", "--check", ".")
    session.run(str(Path(sys.executable).with_name("lint-imports")), "--no-cache")


@nox.session(venv_backend="none")
def typecheck(session: nox.Session) -> None:
    """mypy in strict mode over the bai package."""
    session.run(sys.executable, "-m", "mypy")


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Every benchmark in bench/, each printing one JSON line of figures."""
    for script in sorted((ROOT / "bench").glob("*.py")):
        session.run(sys.executable, str(script))
