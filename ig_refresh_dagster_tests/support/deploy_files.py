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
