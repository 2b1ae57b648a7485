"""config/k8s validates offline: built-in kinds against the Kubernetes schemas (kubernetes-validate,
strict), the KEDA objects against what the Redis Streams scaler accepts, and the manifests against
the project's own contracts (probe paths, metrics port, setting names, stream and group names)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from backend.settings import REPO_ROOT, Settings

K8S = REPO_ROOT / "config" / "k8s"
KUBERNETES_VERSION = "1.30.0"
# The redis-streams trigger's metadata keys (KEDA docs, scalers/redis-streams).
KEDA_STREAM_KEYS = {
    "address",
    "host",
    "port",
    "usernameFromEnv",
    "passwordFromEnv",
    "stream",
    "consumerGroup",
    "pendingEntriesCount",
    "streamLength",
    "lagCount",
    "activationLagCount",
    "enableTLS",
    "unsafeSsl",
    "databaseIndex",
    "addressFromEnv",
    "hostFromEnv",
    "portFromEnv",
}


def documents() -> list[tuple[Path, dict]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        found += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def of_kind(kind: str) -> list[dict]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


@pytest.mark.parametrize(
    "path,doc",
    [(p, d) for p, d in documents() if not d["apiVersion"].startswith("keda.sh/")],
    ids=lambda value: value.name if isinstance(value, Path) else value["kind"],
)
def test_builtin_kinds_match_the_kubernetes_schema(path, doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_every_part_has_a_deployment_with_probes_resources_and_a_pdb():
    deployments = {doc["metadata"]["name"]: doc for doc in of_kind("Deployment")}
    assert set(deployments) == {"repairbot-worker", "repairbot-notifier", "repairbot-telegram", "repairbot-discord"}
    port = int(of_kind("ConfigMap")[0]["data"]["METRICS_PORT"])
    budgets = of_kind("PodDisruptionBudget")
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]
        main = pod["spec"]["containers"][0]
        assert main["args"] == [name.removeprefix("repairbot-")]
        assert {p["name"]: p["containerPort"] for p in main["ports"]}["metrics"] == port
        assert main["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert main["resources"]["requests"] and main["resources"]["limits"]["memory"]
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        assert pod["spec"]["hostname"] == "repairbot"  # stable consumer names: host + lease slot
        labels = pod["metadata"]["labels"]
        assert any(
            all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items()) for pdb in budgets
        ), f"no PodDisruptionBudget selects {name}"


def test_configmap_holds_only_real_settings_and_no_secret():
    names = {name.upper() for name in Settings.model_fields}
    data = of_kind("ConfigMap")[0]["data"]
    assert set(data) <= names
    assert not any("TOKEN" in key or "SECRET" in key for key in data)
    secret_keys = set(of_kind("Secret")[0]["stringData"])
    assert secret_keys - {"REDIS_PASSWORD"} <= names  # REDIS_PASSWORD is for KEDA's TriggerAuthentication
    assert not any(of_kind("Secret")[0]["stringData"].values())  # names only, never values


def test_keda_scales_workers_on_the_groups_lag_and_pending():
    settings = Settings(_env_file=None)
    [scaled] = of_kind("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "repairbot-worker"
    triggers = scaled["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"redis-streams"}
    for trigger in triggers:
        meta = trigger["metadata"]
        assert set(meta) <= KEDA_STREAM_KEYS, set(meta) - KEDA_STREAM_KEYS
        assert meta["stream"] == settings.tasks_stream and meta["consumerGroup"] == settings.workers_group
        assert all(isinstance(value, str) for value in meta.values())  # KEDA metadata is strings only
        assert "lagCount" not in meta or "activationLagCount" in meta
    assert {key for t in triggers for key in t["metadata"]} >= {"lagCount", "pendingEntriesCount"}
    auth_names = {doc["metadata"]["name"] for doc in of_kind("TriggerAuthentication")}
    assert {t["authenticationRef"]["name"] for t in triggers} <= auth_names
    [auth] = of_kind("TriggerAuthentication")
    assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} <= {"username", "password"}
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
