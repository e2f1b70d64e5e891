"""deploy/k8s: generated, current, valid against the Kubernetes schemas (strict: unknown fields
refused), and shaped as issue 7 asks — two replicas or more, probes on the service's /healthz
and /readyz, requests and limits, a PodDisruptionBudget per Deployment, the configuration folder
as a ConfigMap, secrets only by reference to variables the services read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kubernetes

from deploy.k8s.build import FOLDER, SECRET, SERVICES, main, manifests, module
from tests.deploy.test_compose import SETTINGS

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = "1.30.0"


def documents() -> list[dict[str, Any]]:
    found = []
    for path in sorted(FOLDER.glob("*.yaml")):
        found += [d for d in yaml.safe_load_all(path.read_text("utf-8")) if d]
    return found


def test_the_committed_manifests_are_current() -> None:
    assert main(["--check"]) == 0
    assert {p.name for p in FOLDER.glob("*.yaml")} == set(manifests())


@pytest.mark.parametrize(
    "document", documents(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}"
)
def test_every_document_is_valid_kubernetes(document: dict[str, Any]) -> None:
    kubernetes.validate(document, KUBERNETES, strict=True)


def test_the_validator_refuses_a_broken_document() -> None:
    broken = next(d for d in documents() if d["kind"] == "Deployment")
    broken = {**broken, "spec": {**broken["spec"], "replicaz": 2}}
    with pytest.raises(kubernetes.ValidationError):
        kubernetes.validate(broken, KUBERNETES, strict=True)


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == kind}


def test_every_service_is_deployed_twice_or_more_with_probes_limits_and_a_budget() -> None:
    deployments, services, budgets = (
        by_kind("Deployment"),
        by_kind("Service"),
        by_kind("PodDisruptionBudget"),
    )
    assert set(deployments) == set(SERVICES) == set(services) == set(budgets)
    for name, deployment in deployments.items():
        assert deployment["spec"]["replicas"] >= 2
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        port = SERVICES[name]["port"]
        assert container["args"] == [f"services.{module(name)}"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        assert set(container["resources"]) == {"requests", "limits"}
        assert container["securityContext"]["runAsNonRoot"] is True
        env = {e["name"]: e for e in container["env"]}
        assert env["GRIDFLOW_HTTP_PORT"]["value"] == str(port)
        assert budgets[name]["spec"]["selector"] == deployment["spec"]["selector"]


def test_secrets_are_referenced_and_every_variable_is_read_by_the_code() -> None:
    from libs.common.refdata import WebhookReceiver, load_reference_data  # noqa: PLC0415

    known = {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "GRIDFLOW_KAFKA_REPLICATION_FACTOR"}
    for settings in SETTINGS:
        known |= {f"GRIDFLOW_{name.upper()}" for name in settings.model_fields}
    refdata = load_reference_data(REPO / "config")
    for department in refdata.departments.values():
        if isinstance(department.receiver, WebhookReceiver):
            known |= set(department.receiver.secret_envs)
    known |= {client.key_env for client in refdata.open311.clients.values()}
    for deployment in by_kind("Deployment").values():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        for variable in container["env"]:
            assert variable["name"] in known, variable["name"]
            if "SECRET" in variable["name"] or variable["name"] in ("DATABASE_URL",):
                assert variable["valueFrom"]["secretKeyRef"]["name"] == SECRET


def test_the_configmap_holds_the_whole_configuration_folder() -> None:
    [config] = by_kind("ConfigMap").values()
    files = {p.name for p in (REPO / "config").iterdir() if p.is_file()}
    assert set(config["data"]) == files
    assert sum(len(v.encode()) for v in config["data"].values()) < 1_000_000  # ConfigMap limit
