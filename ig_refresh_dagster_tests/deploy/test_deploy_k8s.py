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
    compute_logs_section,
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
        (("computeLogManager", "config", "s3ComputeLogManager", "uploadInterval"), "30"),
        (("dagsterWebserver", "podSecurityContxt"), {}),
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
    (dagster-io/dagster at 835892b4, a07d616f, 7b875469, 3f2daa0d, 84842bc4) that these values
    reach, mirrored by hand, so the hand-made deploy/dagster-k8s-instance.yaml cannot drift
    from the values. Neither is the chart's own rendering (no helm binary here)."""
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
                "volumes": k8s["volumes"],
                "volume_mounts": k8s["volumeMounts"],
                "run_k8s_config": {
                    "pod_spec_config": k8s["runK8sConfig"]["podSpecConfig"],
                    "container_config": k8s["runK8sConfig"]["containerConfig"],
                    "job_spec_config": k8s["runK8sConfig"]["jobSpecConfig"],
                },
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
        "compute_logs": compute_logs_section(values),
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


def test_handmade_instance_follows_the_helm_values() -> None:
    """Checks a hand-made copy (deploy/dagster-k8s-instance.yaml) against our hand-mirrored
    templates: it catches drift between the two files, not a difference from the chart."""
    expected = render_instance(helm_values())
    assert subset(k8s_instance(), expected) == expected
    # The chart renders run monitoring and retries once: from additionalInstanceConfig only.
    daemon = helm_values()["dagsterDaemon"]
    assert not daemon["runMonitoring"]["enabled"] and not daemon["runRetries"]["enabled"]


def configurable_sections(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in config.items() if isinstance(v, dict) and "module" in v}


def test_handmade_k8s_instance_loads_under_dagsters_config_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand-made instance under Dagster's own machinery (internal `dagster._config`, as
    `dagster.yaml` is validated on load): the instance schema, then each class's config
    schema with env sources resolved, then the K8sRunLauncher built from its config with a
    kubeconfig file in place of the in-cluster one (no cluster here)."""
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


def test_handmade_k8s_instance_opens_its_postgres_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hand-made instance as a real instance on the machine's PostgreSQL (skipped where
    none answers): storage migrates with the values' connection parameters (sslmode relaxed to
    `prefer`: this PostgreSQL has no TLS), and the daemons it needs include run monitoring and
    retries. The S3 compute log manager is built too (it opens no connection until used)."""
    from ig_refresh_dagster_tests.support.postgres_helpers import HOST, PORT, USER, fresh_database

    config = k8s_instance()
    with fresh_database() as database:
        local = {"hostname": HOST, "port": PORT, "username": USER, "db_name": database}
        for name in ("run_storage", "event_log_storage", "schedule_storage"):
            config[name]["config"]["postgres_db"].update(local)
            config[name]["config"]["postgres_db"]["params"]["sslmode"] = "prefer"
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
            assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
            daemons = set(instance.get_required_daemon_types())
    assert {"QUEUED_RUN_COORDINATOR", "MONITORING", "EVENT_LOG_CONSUMER"} <= daemons


def test_every_instance_shares_the_coordinator_and_bounded_storage_settings() -> None:
    dev = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    single, cluster = load("dagster-postgres.yaml"), k8s_instance()
    for section in ("run_coordinator", "python_logs", "retention", "sensors", "telemetry"):
        assert dev[section] == single[section] == cluster[section], section
    # One machine: the warm launcher (it hands runs of a separate code server to that server);
    # a cluster: a Kubernetes Job per run.
    assert dev["run_launcher"] == single["run_launcher"]
    assert cluster["run_launcher"]["class"] == "K8sRunLauncher"
    # Run output: kept on the machine (the run worker's log) on one machine; in object storage
    # on Kubernetes, where the pod and its log are deleted (test_compute_logs_s3.py).
    assert single["compute_logs"]["class"] == "NoOpComputeLogManager"
    assert cluster["compute_logs"]["class"] == "S3ComputeLogManager"


def test_user_code_env_holds_known_settings_and_secrets_stay_in_the_secret() -> None:
    deployment = user_deployment()
    env = deployment["env"]
    assert set(env) <= set(SETTINGS), sorted(set(env) - set(SETTINGS))
    secret_settings = {name for name, s in SETTINGS.items() if s.secret}
    assert not secret_settings & set(env), "secrets belong in the Secret, not the ConfigMap"
    assert deployment["envSecrets"] == [
        {"name": "ig-refresh-secrets"},
        {"name": "ig-refresh-compute-logs"},
    ]
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
    # Both probes ask whether the sidecar answers; /ready (dependencies) is for alerting.
    assert container.readiness_probe.http_get.path == "/health"
    assert container.readiness_probe.http_get.port == "health"

    image = user_deployment()["image"]
    assert container.image == f"{image['repository']}:{image['tag']}"
    refs = {(r.config_map_ref or r.secret_ref).name for r in container.env_from}
    assert refs == {
        f"{SUBCHART_FULLNAME}-{user_deployment()['name']}-user-env",
        *(secret["name"] for secret in user_deployment()["envSecrets"]),
    }
    password = env["DAGSTER_PG_PASSWORD"].value_from.secret_key_ref
    assert password.name == helm_values()["global"]["postgresqlSecretName"]
    assert password.key == "postgresql-password"
    instance = k8s_instance()["run_launcher"]["config"]
    volumes = {v.name: v for v in pod.volumes}
    assert volumes["dagster-instance"].config_map.name == instance["instance_config_map"]
    mounts = {m.name: m for m in container.volume_mounts}
    assert mounts["dagster-instance"].mount_path == f"{instance['dagster_home']}/dagster.yaml"
    assert mounts["dagster-home"].mount_path == instance["dagster_home"]
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
    assert install.value.endswith("pip install --no-cache-dir --no-deps ."), "no extras"
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


# --- restricted Pod Security, resources, deadlines, names ----------------------------------------

INSTANCE_VOLUME = {"name": "dagster-instance", "configMap": {"name": f"{CHART_FULLNAME}-instance"}}
INSTANCE_MOUNT = {
    "name": "dagster-instance",
    "mountPath": "/opt/dagster/dagster_home/dagster.yaml",
    "subPath": "dagster.yaml",
}


def chart_pod(component: dict[str, Any], name: str) -> dict[str, Any]:
    """The pod a chart component's values configure, with the instance ConfigMap the chart
    mounts itself (our approximation: the chart's templates add more, never less)."""
    return {
        "securityContext": component.get("podSecurityContext"),
        "containers": [
            {
                "name": name,
                "securityContext": component.get("securityContext"),
                "volumeMounts": [*(component.get("volumeMounts") or []), INSTANCE_MOUNT],
            }
        ],
        "volumes": [*(component.get("volumes") or []), INSTANCE_VOLUME],
    }


def run_pod(values: dict[str, Any]) -> dict[str, Any]:
    """A run's Job pod as K8sRunLauncher's runK8sConfig and volumes shape it."""
    k8s = values["runLauncher"]["config"]["k8sRunLauncher"]
    config = k8s["runK8sConfig"]
    return {
        **config["podSpecConfig"],
        "containers": [
            {
                "name": "dagster",
                **config["containerConfig"],
                "volumeMounts": [*k8s["volumeMounts"], INSTANCE_MOUNT],
            }
        ],
        "volumes": [*k8s["volumes"], INSTANCE_VOLUME],
    }


def every_pod(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every pod we define (the sidecar) or configure (the chart's)."""
    sidecar = sidecar_manifests()["Deployment"]["spec"]["template"]["spec"]
    return {
        "health sidecar": sidecar,
        "webserver": chart_pod(values["dagsterWebserver"], "dagster-webserver"),
        "daemon": chart_pod(values["dagsterDaemon"], "dagster-daemon"),
        **{
            f"code server {d['name']}": chart_pod(d, d["name"])
            for d in values["dagster-user-deployments"]["deployments"]
        },
        "run": run_pod(values),
    }


def test_every_pod_meets_the_restricted_pod_security_standard() -> None:
    from ig_refresh_dagster_tests.support.pod_security import restricted_violations

    pods = every_pod(helm_values())
    assert {name: restricted_violations(pod) for name, pod in pods.items()} == {
        name: [] for name in pods
    }


@pytest.mark.parametrize(
    ("break_it", "violation"),
    [
        (lambda pod: pod["securityContext"].pop("seccompProfile"), "seccompProfile"),
        (lambda pod: pod["securityContext"].update(runAsUser=0), "runAsUser 0"),
        (
            lambda pod: pod["containers"][0]["securityContext"].pop("capabilities"),
            "do not drop ALL",
        ),
        (
            lambda pod: pod["containers"][0]["securityContext"].update(privileged=True),
            "privileged",
        ),
        (
            lambda pod: pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
            "volume h",
        ),
        (
            lambda pod: pod["containers"][0]["securityContext"].pop("readOnlyRootFilesystem"),
            "readOnlyRootFilesystem",
        ),
    ],
)
def test_the_pod_security_checks_catch_a_planted_violation(break_it: Any, violation: str) -> None:
    from ig_refresh_dagster_tests.support.pod_security import restricted_violations

    pod = copy.deepcopy(sidecar_manifests()["Deployment"]["spec"]["template"]["spec"])
    break_it(pod)
    assert any(violation in v for v in restricted_violations(pod)), restricted_violations(pod)


def test_security_contexts_and_volumes_are_valid_kubernetes_objects() -> None:
    """Kubernetes' own models reject a misspelt key (e.g. `seccompProfle`) in what the values
    hand to the chart, which passes them through unchecked."""
    from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
    from kubernetes.client import V1PodSpec

    for name, pod in every_pod(helm_values()).items():
        model = k8s_model_from_dict(V1PodSpec, k8s_snake_case_dict(V1PodSpec, pod))
        assert model.containers[0].security_context.allow_privilege_escalation is False, name
    broken = copy.deepcopy(every_pod(helm_values())["daemon"])
    broken["securityContext"]["seccompProfle"] = broken["securityContext"].pop("seccompProfile")
    with pytest.raises(Exception, match="Unexpected keys"):
        k8s_model_from_dict(V1PodSpec, k8s_snake_case_dict(V1PodSpec, broken))


def test_daemon_and_webserver_have_requests_and_memory_limits() -> None:
    values = helm_values()
    for component in (values["dagsterDaemon"], values["dagsterWebserver"]):
        resources = component["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"])
        assert "memory" in resources["limits"]


def test_the_job_deadline_lets_dagsters_own_max_runtime_path_end_a_run_first() -> None:
    """Kubernetes' activeDeadlineSeconds counts from the Job's start, scheduling and image pull
    included; Dagster's max_runtime_seconds from the run's start. The deadline must exceed the
    longest path by which run monitoring ends a run itself, plus a stated margin (30 s)."""
    values = helm_values()
    monitoring = values["additionalInstanceConfig"]["run_monitoring"]
    job = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["jobSpecConfig"]
    dagsters_path = (
        monitoring["start_timeout_seconds"]
        + monitoring["max_runtime_seconds"]
        + monitoring["poll_interval_seconds"]
        + monitoring["cancel_timeout_seconds"]
    )
    assert job["activeDeadlineSeconds"] == dagsters_path + 30
    assert k8s_instance()["run_launcher"]["config"]["run_k8s_config"]["job_spec_config"] == job


def test_one_code_location_name_everywhere() -> None:
    """Sensor cursors and schedule state are keyed by the location's name: the local
    workspace, the one-machine workspace, the chart's user deployment and the deploy steps
    name the same location, and the chart can use it in Kubernetes object names."""
    local = yaml.safe_load((PROJECT_ROOT / "workspace.yaml").read_text())
    grpc = load("workspace-grpc.yaml")
    names = {
        "workspace.yaml": local["load_from"][0]["python_module"]["location_name"],
        "workspace-grpc.yaml": grpc["load_from"][0]["grpc_server"]["location_name"],
        "values deployments[].name": user_deployment()["name"],
    }
    assert len(set(names.values())) == 1, names
    (name,) = set(names.values())
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), "a DNS label"
    readme = (DEPLOY / "README.md").read_text()
    assert set(re.findall(r"the location `([^`]+)` is loaded", readme)) == {name}


def test_deploy_steps_give_the_budgets_their_own_redis() -> None:
    readme = (DEPLOY / "README.md").read_text()
    assert "--from-literal=INSTAGRAM_BUDGET_REDIS_URL=" in readme
    assert "noeviction" in readme
