"""Run output outlives the run's process: the Kubernetes values' S3 compute log manager, for real.

An S3 API (moto in server mode) runs on loopback; the instance's ``compute_logs`` section is what
the chart renders from deploy/helm/values.yaml, with only the endpoint, the staging directory
and the bucket's credentials pointed at this machine. A run that prints and then fails is
executed by ``dagster job execute`` in its own process; once that process has exited and the
local staging directory is deleted (as a run pod's emptyDir is), its stdout and stderr are read
back through a fresh instance's compute log manager, i.e. from the bucket, as the webserver does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from ig_refresh_dagster.devstack.services import ServiceProcess, free_port
from ig_refresh_dagster_tests.support.deploy_files import compute_logs_section, helm_values

boto3 = pytest.importorskip("boto3")

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "not-a-real-key",
    "AWS_SECRET_ACCESS_KEY": "not-a-real-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}

JOB = """
import sys
from dagster import job, op

@op
def shout():
    print("refresh output to stdout", flush=True)
    print("refresh warning to stderr", file=sys.stderr, flush=True)
    raise RuntimeError("the account refresh failed")

@job
def printing_job():
    shout()
"""


@pytest.fixture
def s3_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    port = free_port()
    server = ServiceProcess(
        "moto",
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        port,
        tmp_path / "moto.log",
        start_timeout=60,
    )
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def instance_yaml(endpoint: str, staging: Path) -> dict:
    section = compute_logs_section(helm_values())
    section["config"].update(endpoint_url=endpoint, local_dir=str(staging), use_ssl=False)
    return {"compute_logs": section, "telemetry": {"enabled": False}}


def test_a_failed_runs_stdout_and_stderr_are_read_back_from_the_bucket(
    s3_endpoint: str, tmp_path: Path
) -> None:
    home, staging = tmp_path / "home", tmp_path / "staging"
    home.mkdir()
    config = instance_yaml(s3_endpoint, staging)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    bucket, prefix = (
        config["compute_logs"]["config"]["bucket"],
        config["compute_logs"]["config"]["prefix"],
    )
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    (tmp_path / "printing_job.py").write_text(JOB)

    run = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-f", "printing_job.py"],
        cwd=tmp_path,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0, "the run was meant to fail"
    shutil.rmtree(staging, ignore_errors=True)  # the pod and its emptyDir are gone

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys and all(k.startswith(f"{prefix}/") for k in keys), keys

    with DagsterInstance.from_config(str(home)) as instance:
        (record,) = instance.get_runs()
        assert record.status == DagsterRunStatus.FAILURE
        (captured,) = instance.all_logs(record.run_id, of_type=DagsterEventType.LOGS_CAPTURED)
        file_key = captured.dagster_event.logs_captured_data.file_key
        manager = instance.compute_log_manager
        assert type(manager).__name__ == "S3ComputeLogManager"
        data = manager.get_log_data([record.run_id, "compute_logs", file_key])
    assert b"refresh output to stdout" in (data.stdout or b"")
    assert b"refresh warning to stderr" in (data.stderr or b"")
    assert b"RuntimeError: the account refresh failed" in (data.stderr or b"")


def test_logs_of_a_run_that_never_wrote_are_not_invented(s3_endpoint: str, tmp_path: Path) -> None:
    """An empty bucket reads as no output, not as an error or someone else's output."""
    home = tmp_path / "home"
    home.mkdir()
    config = instance_yaml(s3_endpoint, tmp_path / "staging")
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(
        Bucket=config["compute_logs"]["config"]["bucket"]
    )
    with DagsterInstance.from_config(str(home)) as instance:
        data = instance.compute_log_manager.get_log_data(["no-such-run", "compute_logs", "x"])
    assert (data.stdout, data.stderr) == (None, None)
