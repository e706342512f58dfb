"""The README's first command, run the way a newcomer runs it: `ig-refresh demo` with no
service variables set, so it starts every embedded service itself and stops them at the end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SERVICE_VARIABLES = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "REDIS_URL",
    "MONGODB_URI",
    "INSTAGRAM_GRAPH_API_URL",
    "INSTAGRAM_WEB_URL",
    "INSTAGRAM_ACCESS_TOKEN",
    "DAGSTER_HOME",
)


@pytest.mark.timeout(420)
def test_demo_refreshes_every_seeded_account_and_dead_letters_bad_events(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env["IG_REFRESH_DATA_DIR"] = str(tmp_path)
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
