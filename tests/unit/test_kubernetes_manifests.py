"""deploy/kubernetes validated offline against the Kubernetes JSON schemas (the
kubernetes-validate package bundles them), and held to what running the hub there needs."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from hub.config import Settings
from hub.metrics import LAG

MANIFESTS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "kubernetes").glob("*.yaml"))
KUBERNETES = "1.33.0"  # the oldest release still maintained upstream when this was written
DOCS = [d for m in MANIFESTS for d in yaml.safe_load_all(m.read_text()) if d]


def by_kind(kind: str) -> list[dict]:
    return [d for d in DOCS if d["kind"] == kind]


@pytest.mark.parametrize("doc", DOCS, ids=[f"{d['kind']}/{d['metadata']['name']}" for d in DOCS])
def test_every_manifest_is_valid_for_kubernetes(doc):
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_every_container_has_probes_requests_and_only_real_settings():
    known = {f"HUB_{name.upper()}" for name in Settings.model_fields}
    config = {k for c in by_kind("ConfigMap") for k in c["data"]}
    assert config <= known, config - known
    deployments = by_kind("Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {
        "hie-gateway", "hie-ingest", "hie-projections"}
    for d in deployments:
        for c in d["spec"]["template"]["spec"]["containers"]:
            assert c["readinessProbe"]["httpGet"]["path"] == "/ready", d["metadata"]["name"]
            assert c["livenessProbe"]["httpGet"]["path"] == "/health", d["metadata"]["name"]
            assert {"cpu", "memory"} <= set(c["resources"]["requests"])
            assert {e["name"] for e in c.get("env", [])} <= known


def test_each_deployment_has_a_disruption_budget():
    budgets = {tuple(p["spec"]["selector"]["matchLabels"].items()) for p in by_kind(
        "PodDisruptionBudget")}
    for d in by_kind("Deployment"):
        assert tuple(d["spec"]["selector"]["matchLabels"].items()) in budgets


def test_projection_replicas_scale_on_the_lag_the_hub_exports():
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "hie-projections"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == LAG._name  # hub_projection_lag_events
    partitions = int(next(c["data"]["HUB_EVENTS_PARTITIONS"] for c in by_kind("ConfigMap")))
    # A replica beyond the partition count would have nothing to read.
    assert hpa["spec"]["maxReplicas"] <= partitions
