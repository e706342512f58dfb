"""The embedded stack: every service the pipeline needs, on loopback, for the README commands.

A service whose variable is already set is used as it is; only the unset ones are started
here. Children (Dagster daemon, webserver, health sidecar) receive the resolved addresses in
their environment, so the code location reads them through ``EnvVar`` as in production.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from ig_refresh_dagster import settings
from ig_refresh_dagster.devstack.instagram_standin import InstagramStandin
from ig_refresh_dagster.devstack.services import (
    ServiceProcess,
    kafka_bootstrap,
    redis_url,
    start_broker,
    start_valkey,
)
from ig_refresh_dagster.stores.mongo import litemongo_uri

# The dev stack runs from a source checkout (``make run``): dagster.yaml and workspace.yaml
# live at its top.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_TOKEN = "demo-token-not-a-secret"
# The embedded broker holds a fetch that includes a caught-up partition for the whole
# fetch.wait.max.ms; at librdkafka's 500 ms default, data on other partitions could miss a
# tick's first-message window. Production brokers answer as soon as any partition has data.
EMBEDDED_BROKER_FETCH_WAIT_MS = "100"


def data_dir() -> Path:
    """The checkout's local data folder: embedded Mongo files, Dagster home, logs."""
    return Path(os.environ.get("IG_REFRESH_DATA_DIR") or PROJECT_ROOT / ".data").resolve()


DEMO_BUSINESS_ACCOUNT_ID = "17841400000000000"


class EmbeddedStack:
    """Starts what is missing, hands out one environment, stops everything it started."""

    def __init__(self, data_dir: Path, dagster_home: Path) -> None:
        self.data_dir = data_dir
        self.dagster_home = dagster_home
        self.logs = data_dir / "logs"
        self.env: dict[str, str] = {}
        self.started: list[str] = []
        self._processes: list[ServiceProcess] = []
        self._standin: InstagramStandin | None = None

    def start(self) -> EmbeddedStack:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / "dagster.yaml", self.dagster_home / "dagster.yaml")
        env = {k: v for k, v in os.environ.items() if v}
        if "KAFKA_BOOTSTRAP_SERVERS" not in env:
            broker = self._own(start_broker(log_path=self.logs / "kafka.log"))
            env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap(broker)
            env.setdefault("KAFKA_FETCH_WAIT_MAX_MS", EMBEDDED_BROKER_FETCH_WAIT_MS)
        if "REDIS_URL" not in env:
            valkey = self._own(start_valkey(log_path=self.logs / "valkey.log"))
            env["REDIS_URL"] = redis_url(valkey)
        if "MONGODB_URI" not in env:
            env["MONGODB_URI"] = litemongo_uri(self.data_dir / "mongo")
            self.started.append("mongo")
        if "INSTAGRAM_GRAPH_API_URL" not in env and "INSTAGRAM_WEB_URL" not in env:
            # Its per-request access log would drown the demo's own output.
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
            self._standin = InstagramStandin(token=DEMO_TOKEN)
            self._standin.start()
            self.started.append("instagram")
            env.update(
                INSTAGRAM_GRAPH_API_URL=self._standin.graph_url,
                INSTAGRAM_WEB_URL=self._standin.web_url,
                INSTAGRAM_ACCESS_TOKEN=DEMO_TOKEN,
                INSTAGRAM_BUSINESS_ACCOUNT_ID=DEMO_BUSINESS_ACCOUNT_ID,
            )
        env["DAGSTER_HOME"] = str(self.dagster_home)
        self.env = env
        return self

    def _own(self, process: ServiceProcess) -> ServiceProcess:
        self._processes.append(process)
        self.started.append(process.name)
        return process

    def setting(self, name: str) -> str:
        """A setting as the stack's children see it; raises for one that has no value."""
        value = self.env.get(name) or settings.value(name)
        if value is None:
            raise KeyError(f"{name} is not set and has no default")
        return value

    def launch(self, name: str, argv: list[str], port: int | None = None) -> ServiceProcess:
        """A Dagster or sidecar process with the stack's environment, in its own session so
        Ctrl-C reaches us first and we stop it by PID."""
        return self._own(
            ServiceProcess(
                name,
                argv,
                port,
                self.logs / f"{name}.log",
                env=self.env,
                cwd=PROJECT_ROOT,
                start_timeout=120,
            )
        )

    def stop(self) -> None:
        for proc in reversed(self._processes):
            proc.stop()
        self._processes.clear()
        if self._standin is not None:
            self._standin.stop()
            self._standin = None


def venv_bin(name: str) -> str:
    """A console script next to the running interpreter (the project's virtualenv)."""
    return str(Path(sys.executable).parent / name)


@contextlib.contextmanager
def embedded_stack(data_dir: Path, dagster_home: Path) -> Iterator[EmbeddedStack]:
    stack = EmbeddedStack(data_dir, dagster_home)
    try:
        yield stack.start()
    finally:
        stack.stop()
