"""Developer tasks: ``nox -s tests``, ``lint``, ``typecheck``, ``bench``.

The sessions run in the interpreter that runs nox (the project's ``.venv``
made by ``.ci/bootstrap``) instead of building fresh virtualenvs, so CI and
developers test exactly the installed tree and pay for one install only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
ROOT = Path(__file__).parent


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Unit, property and integration tests (extra pytest arguments pass through)."""
    paths = ["tests/unit", "tests/property", "tests/integration"]
    session.run(sys.executable, "-m", "pytest", *(session.posargs or paths))


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
