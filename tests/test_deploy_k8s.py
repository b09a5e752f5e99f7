"""infra/k8s/: every manifest against the Kubernetes schemas (kubernetes-validate, strict), and their
cross-references, settings and commands checked against the code. KEDA's kinds have no schema in
kubernetes-validate, so their fields are checked by parsing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pisar.queue import priority_lists
from pisar.settings import Settings
from tests.helpers.cli import run_pisar
from tests.helpers.deploy import READ_BY_LIBRARIES
from tests.helpers.paths import REPO

K8S = REPO / "infra" / "k8s"
KUBERNETES_VERSION = "1.32"  # a release current clusters run; the schema is the one that release serves


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] == kind}


def pods() -> dict[str, dict[str, Any]]:
    """The pod templates of every Deployment and Job, by workload name."""
    return {name: doc["spec"]["template"]["spec"] for kind in ("Deployment", "Job") for name, doc in by_kind(kind).items()}


@pytest.mark.parametrize("path", sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"))
def test_manifests_are_valid_kubernetes_objects(path: str) -> None:
    for doc in yaml.safe_load_all((K8S / path).read_text()):
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked below
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises on any unknown or wrong field


def test_kustomization_lists_every_manifest_but_the_per_campaign_job() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "producer-job.yaml"}
    assert {doc["metadata"].get("namespace", doc["metadata"]["name"]) for _, doc in manifests() if "metadata" in doc} == {"pisar"}


def test_worker_gets_one_gpu_and_the_stop_timeout_as_grace_period() -> None:
    worker = by_kind("Deployment")["pisar-worker"]
    pod = worker["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][0] == "worker" and container["image"].endswith("-cuda")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1 == container["resources"]["requests"]["nvidia.com/gpu"]
    settings = by_kind("ConfigMap")["pisar-settings"]["data"]
    assert pod["terminationGracePeriodSeconds"] == int(settings["PISAR_STOP_TIMEOUT_SECONDS"])
    assert "replicas" not in worker["spec"]  # KEDA owns the count
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert container["startupProbe"]["httpGet"]["path"] == "/metrics"
    assert container["ports"][0]["containerPort"] == int(settings["PISAR_METRICS_PORT"])


def test_keda_scales_workers_on_every_priority_list_of_the_queue_down_to_zero() -> None:
    scaled = by_kind("ScaledObject")["pisar-worker"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] in by_kind("Deployment")
    assert spec["minReplicaCount"] == 0 < spec["maxReplicaCount"]
    queue = by_kind("ConfigMap")["pisar-settings"]["data"]["PISAR_QUEUE"]
    assert {t["metadata"]["listName"] for t in spec["triggers"]} == {name for _, name in priority_lists(queue)}
    auth = by_kind("TriggerAuthentication")
    secrets = by_kind("Secret")
    redis_service = by_kind("Service")["redis"]
    for trigger in spec["triggers"]:
        assert trigger["type"] == "redis"
        meta = trigger["metadata"]
        assert set(meta) == {"address", "databaseIndex", "listLength", "activationListLength", "listName"}
        assert all(isinstance(v, str) for v in meta.values())  # KEDA's metadata is a map of strings
        host, port = meta["address"].rsplit(":", 1)
        assert host == "redis.pisar.svc.cluster.local" and int(port) == redis_service["spec"]["ports"][0]["port"]
        (ref,) = auth[trigger["authenticationRef"]["name"]]["spec"]["secretTargetRef"]
        assert ref["parameter"] == "password" and ref["key"] in secrets[ref["name"]]["stringData"]
    secret = secrets["pisar-secrets"]["stringData"]
    assert f":{secret['REDIS_PASSWORD']}@redis:6379/0" in secret["PISAR_REDIS_URL"]  # the scaler and the app share the password


def test_references_resolve_and_every_variable_is_read() -> None:
    config_maps, secrets, claims = by_kind("ConfigMap"), by_kind("Secret"), by_kind("PersistentVolumeClaim")
    fields = {f"PISAR_{name.upper()}" for name in Settings.model_fields}
    scaler_only = {"REDIS_PASSWORD"}  # read by KEDA's TriggerAuthentication
    for name, pod in pods().items():
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001, name
        for container in pod["containers"]:
            assert container["image"].startswith("registry.example.org/pisar:0.1.0-"), name
            names = {e["name"] for e in container.get("env", [])}
            for source in container["envFrom"]:
                if "configMapRef" in source:
                    names |= set(config_maps[source["configMapRef"]["name"]]["data"])
                else:
                    names |= set(secrets[source["secretRef"]["name"]]["stringData"])
            unread = {n for n in names if n not in fields and n not in READ_BY_LIBRARIES} - scaler_only
            assert not unread, (name, unread)
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
    for service in by_kind("Service").values():
        if service["spec"].get("type") == "ExternalName":
            continue
        selected = [
            d
            for d in by_kind("Deployment").values()
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        port_names = {p["name"] for c in selected[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    Settings(
        **{
            k.removeprefix("PISAR_").lower(): v
            for k, v in {**config_maps["pisar-settings"]["data"], **secrets["pisar-secrets"]["stringData"]}.items()
            if k in fields
        }
    )


def test_every_container_command_is_a_pisar_command(embedded_env: dict[str, str]) -> None:
    for name, pod in pods().items():
        for container in pod["containers"]:
            result = run_pisar([*container["args"], "--help"], embedded_env)
            assert result.returncode == 0, f"{name}: {result.stderr}"


def test_the_validator_refuses_what_a_cluster_would() -> None:
    """The schema check is real: a misspelt field or a wrong type fails it."""
    worker = by_kind("Deployment")["pisar-worker"]
    misspelt = yaml.safe_load(yaml.safe_dump(worker))
    misspelt["spec"]["template"]["spec"]["terminationGracePeriod"] = 600
    wrong_type = yaml.safe_load(yaml.safe_dump(worker))
    wrong_type["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "ten minutes"
    for bad in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def test_detect_workers_run_on_cpu_nodes_and_keda_scales_them_on_the_detect_queue() -> None:
    from pisar.queue import detect_queue

    worker = by_kind("Deployment")["pisar-detect-worker"]
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert container["args"][:3] == ["worker", "--queues", "detect"] and container["image"].endswith("-cpu")
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    scaled = by_kind("ScaledObject")["pisar-detect-worker"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "pisar-detect-worker" and scaled["minReplicaCount"] == 0
    queue = by_kind("ConfigMap")["pisar-settings"]["data"]["PISAR_QUEUE"]
    assert {t["metadata"]["listName"] for t in scaled["triggers"]} == {name for _, name in priority_lists(detect_queue(queue))}
