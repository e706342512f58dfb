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


def test_a_domain_module_importing_dagster_breaks_a_contract(tmp_path: Path) -> None:
    """The contracts bite: the same check over a copy with one forbidden import fails."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(PROJECT_ROOT / "ig_refresh_dagster", copy / "ig_refresh_dagster")
    shutil.copy(PROJECT_ROOT / ".importlinter", copy / ".importlinter")
    events = copy / "ig_refresh_dagster" / "intake" / "events.py"
    events.write_text(events.read_text() + "\nfrom ig_refresh_dagster.refresh import ops\n")
    result = subprocess.run(
        [str(BIN / "lint-imports")],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(copy), "PATH": str(BIN)},
    )
    assert result.returncode != 0
    assert "BROKEN" in result.stdout


@pytest.mark.parametrize("args", [("check", "."), ("format", "--check", ".")])
def test_ruff_is_clean(args: tuple[str, ...]) -> None:
    result = run(str(BIN / "ruff"), *args)
    assert result.returncode == 0, result.stdout[-3000:]
