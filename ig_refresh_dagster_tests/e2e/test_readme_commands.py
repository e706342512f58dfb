"""The README's first command, run the way a newcomer runs it: `ig-refresh demo` with no
service variables set, so it starts every embedded service itself and stops them at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

SERVICE_VARIABLES = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "REDIS_URL",
    "MONGODB_URI",
    "INSTAGRAM_GRAPH_API_URL",
    "INSTAGRAM_WEB_URL",
    "INSTAGRAM_ACCESS_TOKEN",
    "INSTAGRAM_GRAPH_CREDENTIALS",
    "DAGSTER_HOME",
)


def clean_environment(data_dir: Path) -> dict[str, str]:
    """A newcomer's shell: no service variables, so the command starts its own stack."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env["IG_REFRESH_DATA_DIR"] = str(data_dir)
    return env


@pytest.mark.timeout(420)
def test_demo_refreshes_every_seeded_account_and_dead_letters_bad_events(tmp_path: Path) -> None:
    env = clean_environment(tmp_path)
    demo = subprocess.run(
        [str(Path(sys.executable).parent / "ig-refresh"), "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = demo.stdout
    assert demo.returncode == 0, out + demo.stderr[-3000:]
    assert "demo: OK" in out
    for account in ("acme.studio", "sam.outdoors", "lena.fotografie", "busy.bee", "gone.account"):
        assert account in out
    assert out.count("COMPLETED") == 5
    assert "malformed_json" in out and "unsupported_platform" in out
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == [], "the demo stops every process it started"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _wait_for(url: str, status: int, deadline: float) -> str:
    while time.monotonic() < deadline:
        code, body = _get(url)
        if code == status:
            return body
        time.sleep(1)
    pytest.fail(f"{url} never answered {status}; last: {_get(url)}")


@pytest.mark.timeout(300)
def test_dev_serves_ui_and_health_then_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """`ig-refresh dev` binds the fixed ports 3000 and 3053, as the README promises."""
    env = clean_environment(tmp_path)
    dev = subprocess.Popen(
        [str(Path(sys.executable).parent / "ig-refresh"), "dev"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        assert '"healthy"' in _wait_for("http://127.0.0.1:3053/health", 200, deadline)
        _wait_for("http://127.0.0.1:3000/server_info", 200, deadline)
        ready = json.loads(_wait_for("http://127.0.0.1:3053/ready", 200, deadline))
        assert ready["checks"]["instagram_graph"]["ok"] is True
        dev.send_signal(signal.SIGINT)
        assert dev.wait(60) == 0
    finally:
        if dev.poll() is None:
            dev.kill()
    assert "Dagster UI" in dev.stdout.read()
    assert _get("http://127.0.0.1:3053/health")[0] == 0
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout.split() == []
