"""docker-compose.yml: valid by the Compose specification (parsed and validated by the
`compose-spec` bindings of a Compose implementation's parser, YAML merge keys applied), and
consistent with the code — every command is a module of this repository, every file it mounts
exists, every named volume is declared, every GRIDFLOW_* variable is a setting a service reads
(or a secret variable the reference data names), and each service publishes the port it
listens on."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import compose_spec
import pytest
import yaml

from libs.common.refdata import WebhookReceiver, load_reference_data
from libs.common.settings import ServiceSettings
from services.citycare_bridge.settings import CitycareSettings
from services.dispatch.settings import DispatchSettings
from services.hotline_bridge.settings import HotlineSettings
from services.intake.settings import IntakeSettings
from services.sla.settings import SlaSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
SETTINGS: tuple[type[ServiceSettings], ...] = (
    IntakeSettings,
    DispatchSettings,
    SlaSettings,
    HotlineSettings,
    CitycareSettings,
)
# variables read outside the settings classes: the topic job, the demo traffic
OTHER_VARIABLES = {
    "GRIDFLOW_TOPIC_PREFIX",
    "GRIDFLOW_KAFKA_PARTITIONS",
    "GRIDFLOW_KAFKA_REPLICATION_FACTOR",
    "GRIDFLOW_WORKER_JWT_SECRET",
}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def test_the_compose_specification_accepts_it() -> None:
    parsed = compose_spec.PyOptions(apply_merge=True).from_yaml(COMPOSE.read_text("utf-8"))
    parsed.validate()
    assert {"kafka", "postgres", "topics", "intake", "dispatch", "sla"} <= set(
        parsed.service_names()
    )
    assert {"prometheus", "grafana", "demo-department", "demo-traffic"} <= set(
        parsed.service_names()
    )


def test_the_parser_refuses_a_broken_file() -> None:
    broken = COMPOSE.read_text("utf-8").replace("restart: unless-stopped", "restart: sometimes")
    with pytest.raises(ValueError, match="sometimes"):
        compose_spec.PyOptions(apply_merge=True).from_yaml(broken).validate()


def _ours(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).startswith("gridflow:")


def test_commands_are_modules_of_this_repository() -> None:
    for name, service in compose()["services"].items():
        if _ours(service):
            module = service["command"][0]
            assert importlib.util.find_spec(module) is not None, f"{name}: {module}"
            assert (REPO / (module.replace(".", "/") + ".py")).exists() or (
                REPO / module.replace(".", "/") / "__main__.py"
            ).exists(), f"{name}: {module} is not a file of the repository"


def test_mounted_files_exist_and_named_volumes_are_declared() -> None:
    document = compose()
    declared = set(document["volumes"])
    for name, service in document["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./.secrets/"):
                continue  # written by the operator, never committed
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_every_variable_is_read_by_the_code() -> None:
    known = set(OTHER_VARIABLES)
    for settings in SETTINGS:
        for field_name, field in settings.model_fields.items():
            alias = field.validation_alias
            known.add(alias if isinstance(alias, str) else f"GRIDFLOW_{field_name.upper()}")
    refdata = load_reference_data(REPO / "config")
    for department in refdata.departments.values():
        if isinstance(department.receiver, WebhookReceiver):
            known |= set(department.receiver.secret_envs)
    known |= {client.key_env for client in refdata.open311.clients.values()}
    text = COMPOSE.read_text("utf-8")
    # the environment blocks of our own services (and the anchors they merge)
    named = set(re.findall(r"^\s+(GRIDFLOW_[A-Z0-9_]+):", text, flags=re.MULTILINE))
    assert named, "no GRIDFLOW_ variable found"
    assert named <= known, f"not read by any service: {sorted(named - known)}"


def test_each_service_publishes_the_port_it_listens_on() -> None:
    document = compose()
    # service → (its settings, the service whose network publishes its port)
    ports: dict[str, tuple[type[ServiceSettings], str]] = {
        "intake": (IntakeSettings, "intake"),
        "dispatch": (DispatchSettings, "dispatch"),
        "sla": (SlaSettings, "sla"),
        "hotline-bridge": (HotlineSettings, "hotline-bridge"),
        # departments.yaml names its receiver at 127.0.0.1:8005 as dispatch sees it
        "citycare-bridge": (CitycareSettings, "dispatch"),
    }
    scrape = (REPO / "deploy" / "prometheus" / "prometheus.yml").read_text("utf-8")
    for name, (settings, host) in ports.items():
        service = document["services"][name]
        port = str(settings.default_port)
        assert service["environment"]["GRIDFLOW_HTTP_PORT"] == port
        assert f"{port}:{port}" in document["services"][host]["ports"]
        if host != name:
            assert service["network_mode"] == f"service:{host}"
        assert f"{host}:{port}" in scrape, f"{name} is not scraped"
