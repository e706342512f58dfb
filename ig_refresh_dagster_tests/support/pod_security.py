"""The Kubernetes "restricted" Pod Security Standard, encoded as our own checks (no cluster and
no admission controller run here), plus our stricter rule: a read-only root filesystem with
emptyDir volumes as the only writable ones.

Rules from the standard (kubernetes.io, "Pod Security Standards", restricted profile, which
includes baseline): no privileged containers; no host namespaces, host ports or hostPath; only
the restricted volume types; no privilege escalation; runAsNonRoot and no runAsUser 0;
seccompProfile RuntimeDefault or Localhost; capabilities drop ALL and add at most
NET_BIND_SERVICE. Pods are plain dicts in manifest form (camelCase), as the values and the
manifests write them.
"""

from __future__ import annotations

from typing import Any

RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SECCOMP_TYPES = {"RuntimeDefault", "Localhost"}


def _effective(pod: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    """A field set on the container, else on the pod (how Kubernetes resolves it)."""
    own = (container.get("securityContext") or {}).get(key)
    return own if own is not None else (pod.get("securityContext") or {}).get(key)


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Every rule ``pod`` (a PodSpec dict) breaks; empty when it is admitted."""
    found: list[str] = []
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(host):
            found.append(f"pod: {host}")
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for name, volume in volumes.items():
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            found.append(f"volume {name}: type {sorted(kinds - RESTRICTED_VOLUME_TYPES)}")
    containers = [*(pod.get("initContainers") or []), *pod["containers"]]
    for container in containers:
        where = f"container {container['name']}"
        security = container.get("securityContext") or {}
        if security.get("privileged"):
            found.append(f"{where}: privileged")
        if security.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation is not false")
        if _effective(pod, container, "runAsNonRoot") is not True:
            found.append(f"{where}: runAsNonRoot is not true")
        if _effective(pod, container, "runAsUser") == 0:
            found.append(f"{where}: runAsUser 0")
        seccomp = _effective(pod, container, "seccompProfile") or {}
        if seccomp.get("type") not in SECCOMP_TYPES:
            found.append(f"{where}: seccompProfile is not RuntimeDefault or Localhost")
        capabilities = security.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{where}: capabilities do not drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{where}: adds capabilities {capabilities['add']}")
        if any(port.get("hostPort") for port in container.get("ports") or []):
            found.append(f"{where}: hostPort")
        found += _writable_only_on_emptydir(where, security, container, volumes)
    return found


def _writable_only_on_emptydir(
    where: str, security: dict[str, Any], container: dict[str, Any], volumes: dict[str, Any]
) -> list[str]:
    found = []
    if security.get("readOnlyRootFilesystem") is not True:
        found.append(f"{where}: readOnlyRootFilesystem is not true")
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None:
            found.append(f"{where}: mounts undefined volume {mount['name']}")
        elif "emptyDir" not in volume and not mount.get("readOnly") and "configMap" not in volume:
            found.append(f"{where}: {mount['mountPath']} is writable and not an emptyDir")
    return found
