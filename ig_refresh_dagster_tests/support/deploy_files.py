"""The deployment files under `deploy/`, loaded once for the tests that check them."""

from __future__ import annotations

from typing import Any

import yaml

from ig_refresh_dagster.devstack.stack import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
RELEASE = NAMESPACE = "ig-refresh"


def load(relative: str) -> Any:
    return yaml.safe_load((DEPLOY / relative).read_text())


def helm_values() -> dict[str, Any]:
    return load("helm/values.yaml")


def k8s_instance() -> dict[str, Any]:
    return load("dagster-k8s-instance.yaml")


def sidecar_manifests() -> dict[str, dict[str, Any]]:
    """The health sidecar's objects by kind."""
    docs = yaml.safe_load_all((DEPLOY / "k8s" / "health-sidecar.yaml").read_text())
    return {doc["kind"]: doc for doc in docs}


def sidecar_container() -> dict[str, Any]:
    (container,) = sidecar_manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def user_deployment() -> dict[str, Any]:
    (deployment,) = helm_values()["dagster-user-deployments"]["deployments"]
    return deployment


# The chart's helpers/instance/_compute-log-manager.tpl (dagster-io/dagster at 84842bc4), S3
# branch: each key set in the values, renamed to the dagster.yaml key; `verify` always rendered.
S3_COMPUTE_LOG_KEYS = {
    "bucket": "bucket",
    "localDir": "local_dir",
    "prefix": "prefix",
    "useSsl": "use_ssl",
    "verifyCertPath": "verify_cert_path",
    "endpointUrl": "endpoint_url",
    "skipEmptyFiles": "skip_empty_files",
    "uploadInterval": "upload_interval",
    "uploadExtraArgs": "upload_extra_args",
    "showUrlOnly": "show_url_only",
    "region": "region",
}


def compute_logs_section(values: dict[str, Any]) -> dict[str, Any]:
    """The instance's ``compute_logs`` as the chart renders it from ``computeLogManager``."""
    manager = values["computeLogManager"]
    assert manager["type"] == "S3ComputeLogManager", "only the S3 branch is mirrored here"
    s3 = manager["config"]["s3ComputeLogManager"]
    config = {S3_COMPUTE_LOG_KEYS[k]: v for k, v in s3.items() if k != "verify" and v}
    config["verify"] = s3.get("verify") is not False
    return {
        "module": "dagster_aws.s3.compute_log_manager",
        "class": "S3ComputeLogManager",
        "config": config,
    }
