"""The migration note for the code location's rename (deploy/README.md, "Code location name"),
run as written: the sensor's cursor stored under the old location `ig_refresh_dagster` is read
with the note's command and set on the renamed location with the note's `dagster sensor cursor`
line, on a real instance (SQLite here; the commands are the same on PostgreSQL)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from dagster import DagsterInstance

from ig_refresh_dagster.devstack.stack import PROJECT_ROOT
from ig_refresh_dagster.refresh.launch.intake_sensor import instagram_refresh_sensor
from ig_refresh_dagster_tests.health.test_sidecar_metrics import store_sensor_cursor

OLD = "ig_refresh_dagster"
CURSOR = '{"topic": "data-refresh-instagram", "offsets": {"0": 4242}}'
VENV_BIN = Path(sys.executable).parent


def note() -> str:
    text = (PROJECT_ROOT / "deploy" / "README.md").read_text()
    return text[text.index("## Code location name") :]


def sensor_cursors(home: Path) -> dict[str, str | None]:
    with DagsterInstance.from_config(str(home)) as instance:
        return {
            state.origin.repository_origin.code_location_origin.location_name: (
                state.instigator_data.cursor if state.instigator_data else None
            )
            for state in instance.all_instigator_state()
            if state.name == instagram_refresh_sensor.name
        }


def test_the_migration_note_carries_the_sensor_cursor_to_the_renamed_location(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}}))
    with DagsterInstance.from_config(str(home)) as instance:
        store_sensor_cursor(instance, CURSOR, location=OLD)
    env = {**os.environ, "DAGSTER_HOME": str(home)}

    read = re.search(r'`python -c "(.+?)"`', note())[1]
    printed = subprocess.run(
        [sys.executable, "-c", read], env=env, capture_output=True, text=True, timeout=120
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == CURSOR

    command = re.search(r"`(dagster sensor cursor .+?)`", note())[1]
    argv = command.replace("'<cursor>'", "CURSOR").split()
    argv = [printed.stdout.strip() if a == "CURSOR" else a for a in argv]
    argv[0] = str(VENV_BIN / "dagster")
    set_ = subprocess.run(
        argv, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300
    )
    assert set_.returncode == 0, set_.stdout + set_.stderr

    local = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())
    new = local["load_from"][0]["python_module"]["location_name"]
    assert sensor_cursors(home) == {OLD: CURSOR, new: CURSOR}
