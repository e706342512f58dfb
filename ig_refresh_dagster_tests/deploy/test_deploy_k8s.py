"""deploy/ checked without a cluster, a helm binary or a Docker engine (none exists here):
the Helm values against the chart's schema (our encoded subset), the instance yaml they render
under Dagster's own config machinery, the health sidecar's manifests as Kubernetes models, and
the Dockerfile's shape. The image's install and commands run in test_production_install.py.
"""

from __future__ import annotations

import copy
import importlib
import re
from pathlib import Path
from typing import Any

import dagster
import jsonschema
import pytest
import yaml
from dagster import DagsterInstance

from ig_refresh_dagster.devstack.stack import PROJECT_ROOT
from ig_refresh_dagster.settings import SETTINGS, default
from ig_refresh_dagster_tests.support.deploy_files import (
    DEPLOY,
    NAMESPACE,
    RELEASE,
    helm_values,
    k8s_instance,
    load,
    sidecar_manifests,
    user_deployment,
)
from ig_refresh_dagster_tests.support.dockerfile import exec_form, instructions, only
from ig_refresh_dagster_tests.support.helm_schema_subset import VALUES

CHART_FULLNAME = f"{RELEASE}-dagster"  # the chart's "dagster.fullname" for this release
SUBCHART_FULLNAME = f"{RELEASE}-dagster-user-deployments"


def test_helm_values_fit_the_charts_values_schema() -> None:
    jsonschema.Draft7Validator(VALUES).validate(helm_values())


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("dagsterDaemon", "runCordinator"), {"enabled": True}),
        (
            (
                "dagsterDaemon",
                "runCoordinator",
                "config",
                "queuedRunCoordinator",
                "maxConcurrentRuns",
            ),
            "4",
        ),
        (("computeLogManager", "type"), "LocalComputeLogManger"),
        (("runLauncher", "config", "k8sRunLauncher", "loadInClusterConfig"), True),
        (("retention", "sensor", "purgeAfterDays", "skiped"), 7),
    ],
)
def test_the_schema_subset_rejects_misspelt_keys_and_wrong_types(
    path: tuple[str, ...], value: Any
) -> None:
    values = copy.deepcopy(helm_values())
    node = values
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(VALUES).validate(values)


def test_chart_version_is_the_pinned_dagster_version() -> None:
    pinned = re.search(r'DAGSTER = "([^"]+)"', (PROJECT_ROOT / "setup.py").read_text())[1]
    readme = (DEPLOY / "README.md").read_text()
    header = (DEPLOY / "helm" / "values.yaml").read_text()
    assert set(re.findall(r"--version (\S+)", readme)) == {pinned}
    assert re.search(r"chart version (\S+):", header)[1] == pinned == dagster.__version__


def render_instance(values: dict[str, Any]) -> dict[str, Any]:
    """The parts of the chart's templates/configmap-instance.yaml and helpers/instance/*.tpl
    (dagster-io/dagster at 835892b4, a07d616f, 7b875469, 3f2daa0d) that these values reach,
    so the hand-written deploy/dagster-k8s-instance.yaml cannot drift from the values."""
    pg = values["postgresql"]
    storage = {
        "postgres_db": {
            "username": pg["postgresqlUsername"],
            "password": {"env": "DAGSTER_PG_PASSWORD"},
            "hostname": pg["postgresqlHost"],
            "db_name": pg["postgresqlDatabase"],
            "port": pg["service"]["port"],
            "params": pg.get("postgresqlParams", {}),
            "scheme": pg["postgresqlScheme"],
        }
    }
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    daemon = values["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    retention = values["retention"]
    return {
        "schedule_storage": {"config": storage},
        "run_storage": {"config": storage},
        "event_log_storage": {"config": storage},
        "run_launcher": {
            "class": values["runLauncher"]["type"],
            "config": {
                "load_incluster_config": k8s["loadInclusterConfig"],
                "job_namespace": k8s.get("jobNamespace") or NAMESPACE,
                "image_pull_policy": k8s["imagePullPolicy"],
                "service_account_name": CHART_FULLNAME,
                "dagster_home": "/opt/dagster/dagster_home",
                "instance_config_map": f"{CHART_FULLNAME}-instance",
                "postgres_password_secret": values["global"]["postgresqlSecretName"],
                "run_k8s_config": {"job_spec_config": k8s["runK8sConfig"]["jobSpecConfig"]},
            },
        },
        "run_coordinator": {
            "class": daemon["runCoordinator"]["type"],
            "config": {
                "max_concurrent_runs": queued["maxConcurrentRuns"],
                "tag_concurrency_limits": queued["tagConcurrencyLimits"],
                "dequeue_interval_seconds": queued["dequeueIntervalSeconds"],
                "dequeue_use_threads": queued["dequeueUseThreads"],
            },
        },
        "compute_logs": {"class": values["computeLogManager"]["type"]},
        "python_logs": {"python_log_level": values["pythonLogs"]["pythonLogLevel"]},
        "sensors": {
            "use_threads": daemon["sensors"]["useThreads"],
            "num_workers": daemon["sensors"]["numWorkers"],
        },
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
        "retention": {
            kind: {"purge_after_days": retention[kind]["purgeAfterDays"]}
            for kind in ("sensor", "schedule")
        },
        **values["additionalInstanceConfig"],
    }


def subset(actual: Any, expected: Any) -> Any:
    """``actual`` cut down to the keys ``expected`` has."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return {k: subset(actual.get(k), v) for k, v in expected.items()}
    return actual


def test_rendered_instance_is_what_the_helm_values_imply() -> None:
    expected = render_instance(helm_values())
    assert subset(k8s_instance(), expected) == expected
    # The chart renders run monitoring and retries once: from additionalInstanceConfig only.
    daemon = helm_values()["dagsterDaemon"]
    assert not daemon["runMonitoring"]["enabled"] and not daemon["runRetries"]["enabled"]


def configurable_sections(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in config.items() if isinstance(v, dict) and "module" in v}


def test_k8s_instance_loads_under_dagsters_config_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster's own machinery (internal `dagster._config`, as `dagster.yaml` is validated on
    load): the instance schema, then each class's config schema with env sources resolved,
    then the K8sRunLauncher built from its config with a kubeconfig file in place of the
    in-cluster one (no cluster here)."""
    from dagster._config import process_config, validate_config
    from dagster._core.instance.config import dagster_instance_config_schema
    from dagster._serdes import ConfigurableClassData

    config = k8s_instance()
    checked = validate_config(dagster_instance_config_schema(), config)
    assert checked.success, [e.message for e in checked.errors]
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-a-real-password")
    processed = {}
    for name, section in configurable_sections(config).items():
        klass = getattr(importlib.import_module(section["module"]), section["class"])
        result = process_config(klass.config_type(), section.get("config", {}))
        assert result.success, (name, [e.message for e in result.errors])
        processed[name] = result.value
    assert set(processed) >= {"run_launcher", "run_coordinator", "event_log_storage"}

    launcher = config["run_launcher"]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    built = ConfigurableClassData(
        launcher["module"],
        launcher["class"],
        yaml.safe_dump(
            {
                **launcher["config"],
                "load_incluster_config": False,
                "kubeconfig_file": str(kubeconfig),
            }
        ),
    ).rehydrate()
    assert type(built).__name__ == "K8sRunLauncher"
    assert built.job_namespace == NAMESPACE


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: not-a-token}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def test_k8s_instance_opens_its_postgres_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same file as a real instance on the machine's PostgreSQL (skipped where none
    answers): storage migrates, and the daemons it needs include run monitoring and retries."""
    from ig_refresh_dagster_tests.support.postgres_helpers import HOST, PORT, USER, fresh_database

    config = k8s_instance()
    with fresh_database() as database:
        local = {"hostname": HOST, "port": PORT, "username": USER, "db_name": database}
        for name in ("run_storage", "event_log_storage", "schedule_storage"):
            config[name]["config"]["postgres_db"].update(local)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG)
        config["run_launcher"]["config"].update(
            load_incluster_config=False, kubeconfig_file=str(kubeconfig)
        )
        (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
        monkeypatch.setenv("DAGSTER_PG_PASSWORD", "")
        with DagsterInstance.from_config(str(tmp_path)) as instance:
            assert type(instance.run_launcher).__name__ == "K8sRunLauncher"
            assert instance.get_runs() == []
            daemons = set(instance.get_required_daemon_types())
    assert {"QUEUED_RUN_COORDINATOR", "MONITORING", "EVENT_LOG_CONSUMER"} <= daemons


def test_every_instance_shares_the_coordinator_and_bounded_storage_settings() -> None:
    dev = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    single, cluster = load("dagster-postgres.yaml"), k8s_instance()
    for section in ("run_coordinator", "python_logs", "retention", "sensors", "telemetry"):
        assert dev[section] == single[section] == cluster[section], section
    assert single["compute_logs"] == cluster["compute_logs"]


def test_user_code_env_holds_known_settings_and_secrets_stay_in_the_secret() -> None:
    deployment = user_deployment()
    env = deployment["env"]
    assert set(env) <= set(SETTINGS), sorted(set(env) - set(SETTINGS))
    secret_settings = {name for name, s in SETTINGS.items() if s.secret}
    assert not secret_settings & set(env), "secrets belong in the Secret, not the ConfigMap"
    assert deployment["envSecrets"] == [{"name": "ig-refresh-secrets"}]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}


def test_health_sidecar_manifests_are_valid_kubernetes_objects_with_probes() -> None:
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
    from kubernetes.client import V1Deployment, V1Service

    manifests = sidecar_manifests()
    deployment = k8s_model_from_dict(
        V1Deployment, k8s_snake_case_dict(V1Deployment, manifests["Deployment"])
    )
    service = k8s_model_from_dict(V1Service, k8s_snake_case_dict(V1Service, manifests["Service"]))
    pod = deployment.spec.template.spec
    (container,) = pod.containers
    assert container.command == ["ig-refresh", "health"]
    env = {e.name: e for e in container.env}
    assert env["HOST"].value == "0.0.0.0"
    assert env["PORT"].value == str(default("PORT"))
    (port,) = container.ports
    assert (port.name, port.container_port) == ("health", default("PORT"))
    assert (container.liveness_probe.http_get.path, container.liveness_probe.http_get.port) == (
        "/health",
        "health",
    )
    assert container.readiness_probe.http_get.path == "/ready"
    assert pod.security_context.run_as_non_root

    image = user_deployment()["image"]
    assert container.image == f"{image['repository']}:{image['tag']}"
    refs = {(r.config_map_ref or r.secret_ref).name for r in container.env_from}
    assert refs == {
        f"{SUBCHART_FULLNAME}-{user_deployment()['name']}-user-env",
        "ig-refresh-secrets",
    }
    password = env["DAGSTER_PG_PASSWORD"].value_from.secret_key_ref
    assert password.name == helm_values()["global"]["postgresqlSecretName"]
    assert password.key == "postgresql-password"
    instance = k8s_instance()["run_launcher"]["config"]
    (volume,) = pod.volumes
    assert volume.config_map.name == instance["instance_config_map"]
    (mount,) = container.volume_mounts
    assert mount.mount_path == f"{instance['dagster_home']}/dagster.yaml"
    assert env["DAGSTER_HOME"].value == instance["dagster_home"]
    assert service.spec.selector == deployment.spec.selector.match_labels
    assert service.spec.ports[0].port == default("PORT")


def test_kubernetes_models_reject_a_misspelt_probe() -> None:
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
    from kubernetes.client import V1Deployment

    manifest = copy.deepcopy(sidecar_manifests()["Deployment"])
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(Exception, match="Unexpected keys"):
        k8s_model_from_dict(V1Deployment, k8s_snake_case_dict(V1Deployment, manifest))


def test_dockerfile_installs_without_extras_runs_as_non_root_and_serves_the_location() -> None:
    steps = instructions()
    install = only("RUN", "pip install")
    assert re.fullmatch(r"pip install --no-cache-dir \.", install.value), "no extras"
    user = only("USER")
    assert user.value not in ("root", "0")
    assert steps.index(user) > steps.index(install)
    assert not [i for i in steps if i.keyword == "ENTRYPOINT"], "the chart passes its own args"
    argv = exec_form(only("CMD"))
    assert argv[:3] == ["dagster", "code-server", "start"]
    deployment = user_deployment()
    assert " ".join(deployment["codeServerArgs"]) in " ".join(argv)
    assert argv[argv.index("-p") + 1] == str(deployment["port"])
    home = k8s_instance()["run_launcher"]["config"]["dagster_home"]
    assert f"DAGSTER_HOME={home}" in only("ENV", "DAGSTER_HOME").value
