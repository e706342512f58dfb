"""The part of the Dagster chart's `values.schema.json` that deploy/helm/values.yaml relies on,
encoded here as our own JSON Schema (the chart's file is not copied into the repository, and
nothing is downloaded at run time).

Source, read with the code-search tools: dagster-io/dagster `helm/dagster/values.schema.json`
at commit bdb8547fab497826eeec292bc160b549a0a329ef, the only stored version. It is older than
chart 1.13.27; the chart generates it ("@generated") from the pydantic models under
`helm/dagster/schema/schema/charts/`, and the models for the keys used here were checked at
newer commits (`subschema/daemon.py` and `subschema/postgresql.py` at 835892b4 / 00701070,
`dagster_user_deployments/subschema/user_deployments.py` at 00701070, `values.py` at 0f2d9d8e).

Rules kept from the chart: property types, enums, and `additionalProperties: false` where the
chart has it (so a misspelt key fails instead of being ignored). Not checked: `required` keys
that the chart's own values.yaml supplies (Helm validates values merged over its defaults,
which are not stored here), and Kubernetes objects (probes, resources, env entries), which the
chart delegates to Kubernetes' schema. Stricter than the chart: an unknown top-level key.
"""

from __future__ import annotations

from typing import Any

STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
BOOL: dict[str, Any] = {"type": "boolean"}
OBJ: dict[str, Any] = {"type": "object"}
NULL: dict[str, Any] = {"type": "null"}
ANY: dict[str, Any] = {}
LIST: dict[str, Any] = {"type": "array"}
STR_MAP = {"type": "object", "additionalProperties": STR}
OBJ_LIST = {"type": "array", "items": OBJ}
STR_LIST = {"type": "array", "items": STR}


def optional(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, NULL]}


def closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object the chart declares with `additionalProperties: false`."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def open_object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


# definitions.PullPolicy, definitions.Image (tag: string | integer | null)
PULL_POLICY = {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]}
IMAGE = open_object(
    {"repository": STR, "tag": {"anyOf": [STR, INT, NULL]}, "pullPolicy": PULL_POLICY},
    required=("repository", "pullPolicy"),
)
# definitions.UserDeployment.env: a map of strings, or a list of Kubernetes EnvVar objects.
ENV = {"anyOf": [STR_MAP, OBJ_LIST]}
# definitions.Source: {env: NAME}; IntSource = integer | Source
SOURCE = closed({"env": STR}, required=("env",))
INT_SOURCE = {"anyOf": [INT, SOURCE, NULL]}

# definitions.UserDeployment (required: name, image, port) and definitions.UserDeployments
USER_DEPLOYMENT = open_object(
    {
        "name": STR,
        "image": IMAGE,
        "dagsterApiGrpcArgs": STR_LIST,
        "codeServerArgs": STR_LIST,
        "includeConfigInLaunchedRuns": open_object({"enabled": BOOL}, required=("enabled",)),
        "deploymentNamespace": STR,
        "port": INT,
        "env": ENV,
        "envConfigMaps": OBJ_LIST,
        "envSecrets": OBJ_LIST,
        "annotations": STR_MAP,
        "nodeSelector": STR_MAP,
        "affinity": OBJ,
        "tolerations": LIST,
        "podSecurityContext": OBJ,
        "securityContext": OBJ,
        "resources": OBJ,
        "livenessProbe": OBJ,
        "readinessProbe": OBJ,
        "startupProbe": OBJ,
        "labels": STR_MAP,
        "volumeMounts": OBJ_LIST,
        "volumes": OBJ_LIST,
        "schedulerName": STR,
        "initContainers": OBJ_LIST,
        "sidecarContainers": OBJ_LIST,
    },
    required=("name", "image", "port"),
)
USER_DEPLOYMENTS = open_object(
    {
        "enabled": BOOL,
        "enableSubchart": BOOL,
        "imagePullSecrets": OBJ_LIST,
        "deployments": {"type": "array", "items": USER_DEPLOYMENT},
    }
)

# definitions.PostgreSQL and its Service (required: port)
POSTGRESQL = open_object(
    {
        "image": ANY,
        "enabled": BOOL,
        "postgresqlHost": STR,
        "postgresqlUsername": STR,
        "postgresqlPassword": STR,
        "postgresqlDatabase": STR,
        "postgresqlParams": OBJ,
        "postgresqlScheme": STR,
        "service": open_object({"port": INT}, required=("port",)),
    }
)

# definitions.Global
GLOBAL = open_object(
    {
        "postgresqlSecretName": STR,
        "dagsterHome": STR,
        "serviceAccountName": STR,
        "celeryConfigSecretName": STR,
    }
)

# definitions.RunK8sConfig, K8sRunLauncherConfig, RunLauncherConfig, RunLauncher (+ its allOf:
# type K8sRunLauncher requires config.k8sRunLauncher)
RUN_K8S_CONFIG = closed(
    {
        name: optional(OBJ)
        for name in (
            "containerConfig",
            "podSpecConfig",
            "podTemplateSpecMetadata",
            "jobSpecConfig",
            "jobMetadata",
        )
    }
)
K8S_RUN_LAUNCHER = closed(
    {
        "image": optional(IMAGE),
        "imagePullPolicy": PULL_POLICY,
        "jobNamespace": optional(STR),
        "loadInclusterConfig": BOOL,
        "kubeconfigFile": optional(STR),
        "envConfigMaps": OBJ_LIST,
        "envSecrets": OBJ_LIST,
        "envVars": STR_LIST,
        "volumeMounts": OBJ_LIST,
        "volumes": OBJ_LIST,
        "labels": optional(STR_MAP),
        "failPodOnRunFailure": optional(BOOL),
        "resources": optional(OBJ),
        "schedulerName": optional(STR),
        "securityContext": optional(OBJ),
        "runK8sConfig": optional(RUN_K8S_CONFIG),
    },
    required=(
        "imagePullPolicy",
        "loadInclusterConfig",
        "envConfigMaps",
        "envSecrets",
        "envVars",
        "volumeMounts",
        "volumes",
    ),
)
RUN_LAUNCHER = {
    **closed(
        {
            "type": {
                "type": "string",
                "enum": ["CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"],
            },
            "config": open_object(
                {
                    "celeryK8sRunLauncher": ANY,
                    "k8sRunLauncher": optional(K8S_RUN_LAUNCHER),
                    "customRunLauncher": ANY,
                }
            ),
        },
        required=("type", "config"),
    ),
    "allOf": [
        {
            "if": {"properties": {"type": {"const": "K8sRunLauncher"}}},
            "then": {"properties": {"config": {"required": ["k8sRunLauncher"]}}},
        }
    ],
}

# definitions.TagConcurrencyLimit(+Config), QueuedRunCoordinatorConfig, RunCoordinator
TAG_CONCURRENCY_LIMIT = closed(
    {
        "key": STR,
        "value": {
            "anyOf": [
                STR,
                closed({"applyLimitPerUniqueValue": BOOL}, required=("applyLimitPerUniqueValue",)),
                NULL,
            ]
        },
        "limit": INT,
    },
    required=("key", "limit"),
)
QUEUED_RUN_COORDINATOR = closed(
    {
        "maxConcurrentRuns": INT_SOURCE,
        "tagConcurrencyLimits": optional({"type": "array", "items": TAG_CONCURRENCY_LIMIT}),
        "dequeueIntervalSeconds": INT_SOURCE,
        "dequeueNumWorkers": INT_SOURCE,
        "dequeueUseThreads": optional(BOOL),
        "blockOpConcurrencyLimitedRuns": ANY,
    }
)
RUN_COORDINATOR = {
    **closed(
        {
            "enabled": BOOL,
            "type": {"type": "string", "enum": ["QueuedRunCoordinator", "CustomRunCoordinator"]},
            "config": open_object(
                {
                    "queuedRunCoordinator": optional(QUEUED_RUN_COORDINATOR),
                    "customRunCoordinator": ANY,
                }
            ),
        },
        required=("enabled", "type", "config"),
    ),
    "allOf": [
        {
            "if": {"properties": {"type": {"const": "QueuedRunCoordinator"}}},
            "then": {"properties": {"config": {"required": ["queuedRunCoordinator"]}}},
        }
    ],
}

# definitions.Sensors (required: useThreads) and definitions.Daemon (closed; runMonitoring and
# runRetries are free-form objects)
SENSORS = open_object(
    {"useThreads": BOOL, "numWorkers": optional(INT), "numSubmitWorkers": optional(INT)},
    required=("useThreads",),
)
DAEMON = closed(
    {
        **{
            name: ANY
            for name in (
                "enabled",
                "image",
                "heartbeatTolerance",
                "env",
                "envConfigMaps",
                "envSecrets",
                "deploymentLabels",
                "labels",
                "nodeSelector",
                "affinity",
                "tolerations",
                "podSecurityContext",
                "securityContext",
                "resources",
                "livenessProbe",
                "readinessProbe",
                "startupProbe",
                "annotations",
                "schedules",
                "schedulerName",
                "volumeMounts",
                "volumes",
                "initContainerResources",
            )
        },
        "runCoordinator": RUN_COORDINATOR,
        "runMonitoring": OBJ,
        "runRetries": OBJ,
        "sensors": SENSORS,
    }
)

# definitions.S3ComputeLogManager (subschema/compute_log_manager.py at 00701070: bucket required;
# the rest optional StringSource / bool / int / dict). Left open: whether the chart's BaseModel
# forbids extra keys here was not established from the stored sources.
STRING_SOURCE = {"anyOf": [STR, SOURCE]}
S3_COMPUTE_LOG_MANAGER = open_object(
    {
        "bucket": STRING_SOURCE,
        "localDir": STRING_SOURCE,
        "prefix": STRING_SOURCE,
        "useSsl": optional(BOOL),
        "verify": optional(BOOL),
        "verifyCertPath": STRING_SOURCE,
        "endpointUrl": STRING_SOURCE,
        "skipEmptyFiles": optional(BOOL),
        "uploadInterval": optional(INT),
        "uploadExtraArgs": optional(OBJ),
        "showUrlOnly": optional(BOOL),
        "region": STRING_SOURCE,
    },
    required=("bucket",),
)

# definitions.ComputeLogManager(+Config): closed, type is an enum
COMPUTE_LOG_MANAGER = closed(
    {
        "type": {
            "type": "string",
            "enum": [
                "NoOpComputeLogManager",
                "AzureBlobComputeLogManager",
                "GCSComputeLogManager",
                "S3ComputeLogManager",
                "CustomComputeLogManager",
            ],
        },
        "config": closed(
            {
                "azureBlobComputeLogManager": ANY,
                "gcsComputeLogManager": ANY,
                "s3ComputeLogManager": optional(S3_COMPUTE_LOG_MANAGER),
                "customComputeLogManager": ANY,
            }
        ),
    }
)

# definitions.Webserver (subschema/webserver.py at 00701070: extra=forbid); Kubernetes objects
# are left to Kubernetes' models (test_deploy_k8s.py checks them with those).
WEBSERVER = closed(
    {
        **{
            name: ANY
            for name in (
                "replicaCount",
                "image",
                "nameOverride",
                "service",
                "workspace",
                "env",
                "deploymentLabels",
                "labels",
                "nodeSelector",
                "affinity",
                "tolerations",
                "readinessProbe",
                "livenessProbe",
                "startupProbe",
                "annotations",
                "enableReadOnly",
                "dbStatementTimeout",
                "dbPoolRecycle",
                "logLevel",
                "schedulerName",
                "pathPrefix",
            )
        },
        "envConfigMaps": OBJ_LIST,
        "envSecrets": OBJ_LIST,
        "podSecurityContext": OBJ,
        "securityContext": OBJ,
        "resources": OBJ,
        "volumeMounts": OBJ_LIST,
        "volumes": OBJ_LIST,
    }
)

# definitions.PythonLogs (closed) and PythonLogLevel
PYTHON_LOGS = closed(
    {
        "pythonLogLevel": {
            "type": "string",
            "enum": ["CRITICAL", "FATAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG", "NOTSET"],
        },
        "managedPythonLoggers": STR_LIST,
        "dagsterHandlerConfig": OBJ,
    }
)

# definitions.TickRetentionByType (closed, all four required), TickRetention, Retention (closed,
# required: enabled, sensor, schedule)
TICK_RETENTION_BY_TYPE = closed(
    {"skipped": INT, "success": INT, "failure": INT, "started": INT},
    required=("skipped", "success", "failure", "started"),
)
TICK_RETENTION = open_object(
    {"purgeAfterDays": {"anyOf": [INT, TICK_RETENTION_BY_TYPE]}}, required=("purgeAfterDays",)
)
RETENTION = closed(
    {
        "enabled": BOOL,
        "sensor": TICK_RETENTION,
        "schedule": TICK_RETENTION,
        "autoMaterialize": TICK_RETENTION,
    },
    required=("enabled", "sensor", "schedule"),
)

# definitions.Telemetry (closed, required: enabled)
TELEMETRY = closed({"enabled": BOOL}, required=("enabled",))

# The top level (DagsterHelmValues.properties): every key the chart knows, typed where we set it.
VALUES = closed(
    {
        **{
            name: ANY
            for name in (
                "rabbitmq",
                "redis",
                "flower",
                "ingress",
                "imagePullSecrets",
                "generateCeleryConfigSecret",
                "scheduler",
                "busybox",
                "migrate",
                "serviceAccount",
                "concurrency",
            )
        },
        "global": GLOBAL,
        "dagsterWebserver": WEBSERVER,
        "generatePostgresqlPasswordSecret": BOOL,
        "postgresql": POSTGRESQL,
        "dagster-user-deployments": USER_DEPLOYMENTS,
        "runLauncher": RUN_LAUNCHER,
        "dagsterDaemon": DAEMON,
        "computeLogManager": COMPUTE_LOG_MANAGER,
        "pythonLogs": PYTHON_LOGS,
        "retention": RETENTION,
        "telemetry": TELEMETRY,
        "additionalInstanceConfig": OBJ,
    }
)
