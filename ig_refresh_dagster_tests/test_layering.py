"""The layout's rules, checked as `make lint` checks them: import-linter contracts and ruff."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ig_refresh_dagster.devstack.stack import PROJECT_ROOT

BIN = Path(sys.executable).parent


def run(*argv: str, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept() -> None:
    result = run(str(BIN / "lint-imports"))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def lint_copy_with(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    """import-linter over a copy of the package with ``line`` appended to ``module``."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(PROJECT_ROOT / "ig_refresh_dagster", copy / "ig_refresh_dagster")
    shutil.copy(PROJECT_ROOT / ".importlinter", copy / ".importlinter")
    target = copy / "ig_refresh_dagster" / module
    target.write_text(target.read_text() + f"\n{line}\n")
    return subprocess.run(
        [str(BIN / "lint-imports")],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(copy), "PATH": str(BIN)},
    )


@pytest.mark.parametrize(
    ("module", "line"),
    [
        ("intake/events.py", "from ig_refresh_dagster.refresh import ops"),
        # launch/ and housekeeping/ stand on run/, never on each other
        (
            "refresh/launch/freshness.py",
            "from ig_refresh_dagster.refresh.housekeeping import retention",
        ),
        ("refresh/run/stages.py", "from ig_refresh_dagster.refresh.launch import backfill"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, module: str, line: str) -> None:
    """The contracts bite: the same check over a copy with one forbidden import fails."""
    result = lint_copy_with(tmp_path, module, line)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout


@pytest.mark.parametrize("args", [("check", "."), ("format", "--check", ".")])
def test_ruff_is_clean(args: tuple[str, ...]) -> None:
    result = run(str(BIN / "ruff"), *args)
    assert result.returncode == 0, result.stdout[-3000:]
