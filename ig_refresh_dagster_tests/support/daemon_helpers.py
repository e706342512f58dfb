"""Starting a real ``dagster-daemon`` against the test's services, as production runs it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ig_refresh_dagster.devstack.instagram_standin import InstagramStandin
from ig_refresh_dagster.devstack.services import ServiceProcess
from ig_refresh_dagster.devstack.stack import PROJECT_ROOT
from ig_refresh_dagster_tests.conftest import Topics

BUSINESS_ID = "17841400000000000"


def dagster_home(tmp_path: Path) -> Path:
    """A fresh instance folder with the project's own ``dagster.yaml``."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def daemon_env(
    home: Path,
    topics: Topics,
    redis_url: str,
    mongo_uri: str,
    standin: InstagramStandin,
    **extra_env: str,
) -> dict[str, str]:
    """What the production deployment sets, pointed at the test's services, and nothing else."""
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "DAGSTER_HOME": str(home),
        "KAFKA_BOOTSTRAP_SERVERS": topics.bootstrap,
        "INSTAGRAM_REFRESH_TOPIC": topics.refresh,
        "INSTAGRAM_REFRESH_DLQ_TOPIC": topics.dlq,
        "REDIS_URL": redis_url,
        "MONGODB_URI": mongo_uri,
        "INSTAGRAM_GRAPH_API_URL": standin.graph_url,
        "INSTAGRAM_WEB_URL": standin.web_url,
        "INSTAGRAM_ACCESS_TOKEN": standin.token,
        "INSTAGRAM_BUSINESS_ACCOUNT_ID": BUSINESS_ID,
        **extra_env,
    }


def launch_daemon(env: dict[str, str], log_path: Path) -> ServiceProcess:
    """``dagster-daemon run -w workspace.yaml`` with ``env``; stop it with ``.stop()``."""
    workspace = str(PROJECT_ROOT / "workspace.yaml")
    daemon = str(Path(sys.executable).parent / "dagster-daemon")
    return ServiceProcess(
        "dagster-daemon",
        [daemon, "run", "-w", workspace],
        None,
        log_path,
        env=env,
        cwd=PROJECT_ROOT,
    )


def start_daemon(
    home: Path,
    topics: Topics,
    redis_url: str,
    mongo_uri: str,
    standin: InstagramStandin,
    log_path: Path,
    **extra_env: str,
) -> ServiceProcess:
    return launch_daemon(
        daemon_env(home, topics, redis_url, mongo_uri, standin, **extra_env), log_path
    )
