"""deploy/kubernetes/ validates offline against the Kubernetes API's schemas, and KEDA watches
the Redis lists Celery really uses."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from smartroute.infra.settings import Settings

ROOT = Path(__file__).resolve().parent.parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes release still commonly run, and the newest the package knows.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "Kustomization"}


def _documents() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


DOCUMENTS = _documents()


def _kind(kind: str) -> list[dict]:
    return [doc for _, doc in DOCUMENTS if doc["kind"] == kind]


def _workloads() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in _kind("Deployment")}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("file", "doc"),
    [d for d in DOCUMENTS if d[1]["kind"] not in CUSTOM_KINDS],
    ids=lambda v: v if isinstance(v, str) else v.get("kind"),
)
def test_core_kinds_validate_strictly(file, doc, version):
    # Strict: a misspelt field (readinesProbe) is an error, not silently ignored.
    kubernetes_validate.validate(doc, version, strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    files = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_every_service_has_probes_resources_and_a_disruption_budget():
    budgets = {doc["metadata"]["name"]: doc for doc in _kind("PodDisruptionBudget")}
    for name, deployment in _workloads().items():
        spec = deployment["spec"]["template"]["spec"]
        for container in spec["containers"]:
            assert "livenessProbe" in container, name
            if name != "beat":  # Beat serves nothing to be ready for.
                assert "readinessProbe" in container, name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
        if name != "beat":
            selector = deployment["spec"]["selector"]["matchLabels"]
            assert budgets[name]["spec"]["selector"]["matchLabels"] == selector, name


def test_exactly_one_beat_and_it_is_never_rolled_over():
    beat = _workloads()["beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    targets = [so["spec"]["scaleTargetRef"]["name"] for so in _kind("ScaledObject")]
    assert "beat" not in targets


def test_migrations_run_as_a_job_straight_to_postgres():
    job = _kind("Job")[0]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["smartroute", "db", "upgrade"]
    database = [e for e in container["env"] if e["name"] == "DATABASE_URL"]
    assert len(database) == 1
    assert database[0]["valueFrom"]["secretKeyRef"]["key"] == "database-direct-url"


def test_keda_scales_the_worker_on_each_celery_queue():
    """KEDA's CRD is not shipped offline in any package; its required structure (spec
    .scaleTargetRef.name, triggers[].type and .metadata with string values, authenticationRef
    .name) is checked here, and each listName against the queues Celery consumes."""
    scaled = _kind("ScaledObject")
    assert len(scaled) == 1
    spec = scaled[0]["spec"]
    assert spec["scaleTargetRef"]["name"] in _workloads()
    assert spec["scaleTargetRef"]["name"] == "worker"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    auths = {doc["metadata"]["name"]: doc for doc in _kind("TriggerAuthentication")}
    lists = []
    for trigger in spec["triggers"]:
        assert trigger["type"] == "redis"
        metadata = trigger["metadata"]
        assert all(isinstance(v, str) for v in metadata.values()), metadata
        assert int(metadata["listLength"]) > 0
        lists.append(metadata["listName"])
        auth = auths[trigger["authenticationRef"]["name"]]
        for ref in auth["spec"]["secretTargetRef"]:
            assert {"parameter", "name", "key"} <= set(ref)
    # Celery's Redis transport keeps each queue in a list of the queue's name.
    assert sorted(lists) == sorted(Settings().queues)


def test_the_operations_guides_keda_example_watches_real_queues():
    text = (ROOT / "docs" / "operations.md").read_text()
    blocks = [
        yaml.safe_load(b.split("```", 1)[0])
        for b in text.split("```yaml")[1:]
        if "kind: ScaledObject" in b.split("```", 1)[0]
    ]
    assert len(blocks) == 1
    lists = [t["metadata"]["listName"] for t in blocks[0]["spec"]["triggers"]]
    assert sorted(lists) == sorted(Settings().queues)
