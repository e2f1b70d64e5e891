"""Kubernetes manifests as code: `python -m deploy.k8s.build --write | --check`.

Writes deploy/k8s/*.yaml: the reference data as a ConfigMap (mounted at /app/config), a Job that
creates the topics, and per service a Deployment (two replicas or more, probes on /healthz and
/readyz, requests and limits, non-root, read-only root filesystem), a Service and a
PodDisruptionBudget. Secrets are referenced, never written: the city creates the Secret
`gridflow-secrets` with the keys docs/deployment.md lists. tests/deploy/test_k8s.py validates
every document against the Kubernetes schemas (kubernetes-validate, strict) and checks the
files are current.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from deploy.generated import write_or_check

REPO = Path(__file__).resolve().parents[2]
FOLDER = Path(__file__).parent
IMAGE = "gridflow:0.1.0"
SECRET = "gridflow-secrets"  # noqa: S105  # the Secret object's name, not a secret
CONFIG = "gridflow-config"
PARTITIONS = 12
SERVICES: dict[str, dict[str, Any]] = {
    "intake": {"port": 8001, "replicas": 2, "cpu": "500m", "memory": "512Mi"},
    "dispatch": {"port": 8002, "replicas": 2, "cpu": "1", "memory": "768Mi"},
    "sla": {"port": 8003, "replicas": 2, "cpu": "500m", "memory": "512Mi"},
    "hotline-bridge": {"port": 8004, "replicas": 2, "cpu": "500m", "memory": "384Mi"},
    "citycare-bridge": {"port": 8005, "replicas": 2, "cpu": "500m", "memory": "384Mi"},
}
# what a bridge is told about its partner platform and about dispatch (not secret: the city sets
# the partner's URL here before applying; the secrets and tokens come from the Secret)
PLAIN_ENV: dict[str, tuple[tuple[str, str], ...]] = {
    "hotline-bridge": (
        ("GRIDFLOW_PARTNER_URL", "https://hotline12345.invalid/api"),
        ("GRIDFLOW_DISPATCH_URL", "http://dispatch:8002"),
    ),
    "citycare-bridge": (
        ("GRIDFLOW_PARTNER_URL", "https://citycare.invalid/api"),
        ("GRIDFLOW_DISPATCH_URL", "http://dispatch:8002"),
    ),
}
# each service's own secret variables (all come from the one Secret)
SECRET_KEYS: dict[str, tuple[str, ...]] = {
    "intake": (
        "GRIDFLOW_WORKER_JWT_SECRET",
        "GRIDFLOW_OPEN311_KEY_RESIDENT_APP",
        "GRIDFLOW_OPEN311_KEY_VIDEO_AI",
    ),
    "dispatch": (
        "GRIDFLOW_API_JWT_SECRET",
        "GRIDFLOW_WEBHOOK_SECRET_CHENGGUAN",
        "GRIDFLOW_WEBHOOK_SECRET_YINGJI",
        "GRIDFLOW_WEBHOOK_SECRET_XIAOFANG",
        "GRIDFLOW_WEBHOOK_SECRET_MINZHENG",
        "GRIDFLOW_WEBHOOK_SECRET_WEIJIAN",
        "GRIDFLOW_WEBHOOK_SECRET_GONGAN",
        "GRIDFLOW_WEBHOOK_SECRET_ZONGZHI",
        "GRIDFLOW_WEBHOOK_SECRET_GONGDIAN",
    ),
    "sla": ("GRIDFLOW_API_JWT_SECRET",),
    "hotline-bridge": (
        "GRIDFLOW_PARTNER_INBOUND_SECRET",
        "GRIDFLOW_PARTNER_OUTBOUND_SECRET",
        "GRIDFLOW_DISPATCH_TOKEN",
    ),
    "citycare-bridge": (
        "GRIDFLOW_PARTNER_INBOUND_SECRET",
        "GRIDFLOW_PARTNER_OUTBOUND_SECRET",
        "GRIDFLOW_DISPATCH_TOKEN",
        "GRIDFLOW_DEPARTMENT_WEBHOOK_SECRET",
        "GRIDFLOW_DEPARTMENT_TOKEN",
    ),
}
COMMON_SECRETS = ("DATABASE_URL", "GRIDFLOW_METRICS_TOKEN")


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "gridflow"}


def _secret_env(key: str, name: str) -> dict[str, Any]:
    """A variable from the Secret; a bridge's partner secrets are kept under its own prefix there
    (both bridges read GRIDFLOW_PARTNER_…)."""
    stored = key
    if name.endswith("-bridge") and key.startswith(("GRIDFLOW_PARTNER_", "GRIDFLOW_DISPATCH_")):
        stored = f"{module(name).upper()}_{key.removeprefix('GRIDFLOW_')}"
    return {"name": key, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": stored}}}


def module(name: str) -> str:
    """The service's module under services/ (Kubernetes names use hyphens)."""
    return name.replace("-", "_")


def _common_env() -> list[dict[str, Any]]:
    return [
        {"name": "KAFKA_BOOTSTRAP_SERVERS", "value": "kafka:9092"},
        {"name": "GRIDFLOW_CONFIG_DIR", "value": "/app/config"},
        {"name": "GRIDFLOW_KAFKA_PARTITIONS", "value": str(PARTITIONS)},
        {"name": "GRIDFLOW_KAFKA_REPLICATION_FACTOR", "value": "3"},
    ]


def _security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _config_volume() -> dict[str, Any]:
    return {"name": "config", "configMap": {"name": CONFIG}}


def configmap() -> dict[str, Any]:
    files = sorted(p for p in (REPO / "config").iterdir() if p.is_file())
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG, "labels": _labels("config")},
        "data": {p.name: p.read_text(encoding="utf-8") for p in files},
    }


def topics_job() -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "gridflow-topics", "labels": _labels("topics")},
        "spec": {
            "backoffLimit": 10,
            "template": {
                "metadata": {"labels": _labels("topics")},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "containers": [
                        {
                            "name": "topics",
                            "image": IMAGE,
                            "args": ["deploy.topics"],
                            "env": _common_env(),
                            "securityContext": _security(),
                            "resources": {
                                "requests": {"cpu": "100m", "memory": "128Mi"},
                                "limits": {"cpu": "500m", "memory": "256Mi"},
                            },
                        }
                    ],
                },
            },
        },
    }


ATTACHMENTS = "/data/attachments"


def attachments_claim() -> dict[str, Any]:
    """intake's attachment store, shared by its replicas (content-addressed files)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "gridflow-attachments", "labels": _labels("intake")},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "50Gi"}},
        },
    }


def deployment(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    port = spec["port"]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": "/app/config", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
    ]
    volumes: list[dict[str, Any]] = [_config_volume(), {"name": "tmp", "emptyDir": {}}]
    extra_env: list[dict[str, Any]] = []
    if name == "intake":
        mounts.append({"name": "attachments", "mountPath": ATTACHMENTS})
        volumes.append(
            {"name": "attachments", "persistentVolumeClaim": {"claimName": "gridflow-attachments"}}
        )
        extra_env.append({"name": "GRIDFLOW_ATTACHMENTS_DIR", "value": ATTACHMENTS})
    env = [
        *_common_env(),
        {"name": "GRIDFLOW_HTTP_HOST", "value": "0.0.0.0"},  # noqa: S104  # inside the pod
        {"name": "GRIDFLOW_HTTP_PORT", "value": str(port)},
        *extra_env,
        *({"name": key, "value": value} for key, value in PLAIN_ENV.get(name, ())),
        *(_secret_env(key, name) for key in (*COMMON_SECRETS, *SECRET_KEYS[name])),
    ]
    probe = {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 10}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": _labels(name)},
        "spec": {
            "replicas": spec["replicas"],
            "selector": {"matchLabels": _labels(name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": _labels(name),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(port),
                    },
                },
                "spec": {
                    # consumers stop fetching, finish the record in hand and commit on SIGTERM
                    "terminationGracePeriodSeconds": 30,
                    "containers": [
                        {
                            "name": name,
                            "image": IMAGE,
                            "args": [f"services.{module(name)}"],
                            "ports": [{"name": "http", "containerPort": port}],
                            "env": env,
                            "volumeMounts": mounts,
                            "livenessProbe": {**probe, "failureThreshold": 6},
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": port},
                                "periodSeconds": 5,
                                "failureThreshold": 3,
                            },
                            "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": 60},
                            "resources": {
                                "requests": {"cpu": "250m", "memory": "256Mi"},
                                "limits": {"cpu": spec["cpu"], "memory": spec["memory"]},
                            },
                            "securityContext": _security(),
                        }
                    ],
                    "volumes": volumes,
                },
            },
        },
    }


def service(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": _labels(name)},
        "spec": {
            "selector": _labels(name),
            "ports": [{"name": "http", "port": spec["port"], "targetPort": "http"}],
        },
    }


def disruption_budget(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "labels": _labels(name)},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": _labels(name)}},
    }


def manifests() -> dict[str, list[dict[str, Any]]]:
    files: dict[str, list[dict[str, Any]]] = {
        "config.yaml": [configmap()],
        "topics-job.yaml": [topics_job()],
    }
    for name, spec in SERVICES.items():
        documents = [deployment(name, spec), service(name, spec), disruption_budget(name)]
        files[f"{name}.yaml"] = [attachments_claim(), *documents] if name == "intake" else documents
    return files


def rendered() -> dict[str, str]:
    header = "# generated by python -m deploy.k8s.build --write; do not edit by hand\n"
    return {
        name: header + yaml.safe_dump_all(documents, allow_unicode=True, sort_keys=False, width=100)
        for name, documents in manifests().items()
    }


def main(argv: list[str] | None = None) -> int:
    return write_or_check(argv, prog="deploy.k8s.build", folder=FOLDER, render=rendered)


if __name__ == "__main__":
    raise SystemExit(main())
