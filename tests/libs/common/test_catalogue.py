"""The generated contract documents: current, complete, resolvable, and true to the models.

`jsonschema` is not installed, so the schemas are tied to the models structurally (required fields,
known properties) while the models validate the example payloads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from libs.common.catalogue import (
    ASYNCAPI_PATH,
    EVENTS_MD_PATH,
    REPO_ROOT,
    SCHEMA_DIR,
    TOPIC_PREFIX_VARIABLE,
    WRITE_COMMAND,
    event_models,
    main,
    render_asyncapi,
    render_events_md,
    render_schemas,
    rendered_files,
    schema_path,
)
from libs.common.settings import ServiceSettings
from libs.common.topics import CATALOGUE

CASE_ID = "C01JDQ7Y8XW2N3K4M5P6Q7R8S9T"

EXAMPLES: dict[str, dict[str, Any]] = {
    "gridflow.visit.overdue": {
        "resident_id": "R0001",
        "category": "elderly_alone",
        "frequency": "weekly",
        "worker_id": "W0001",
        "unit_grid": "430281001001001",
        "town": "430281001",
        "period_start": "2026-11-16T00:00:00+08:00",
        "period_end": "2026-11-23T00:00:00+08:00",
        "last_visit_at": "2026-11-12T10:30:00+08:00",
        "at": "2026-11-23T00:00:00+08:00",
    },
    "gridflow.assessment.published": {
        "period": "2026-11",
        "period_start": "2026-11-01T00:00:00+08:00",
        "period_end": "2026-12-01T00:00:00+08:00",
        "level": "city",
        "node": "430281",
        "due": 972,
        "closed": 911,
        "closed_on_time": 737,
        "closure_rate": 93.72,
        "on_time_closure_rate": 75.82,
    },
    "gridflow.case.submitted": {
        "case_id": CASE_ID,
        "source": "hotline",
        "external_ref": {
            "system": "hotline12345",
            "id": "GD20250301000123",
            "due_at": "2026-03-20T17:30:00+08:00",
        },
        "category": {
            "code": "city.garbage",
            "origin": {"code": "0101", "standard": "GB/T 30428.2-2013", "name": "暴露垃圾"},
        },
        "urgency": "urgent",
        "title": "路边暴露垃圾",
        "description": "人民路与解放路交叉口东北角有一堆生活垃圾未清运。",
        "location": {
            "unit_grid": "430281001001001",
            "address": "人民路 12 号旁",
            "coordinates": {"lat": 28.14, "lon": 113.64},
        },
        "reporter": {"kind": "resident", "name": "张三", "phone": "13800138000"},
        "attachments": [
            {"sha256": "ab" * 32, "media_type": "image/jpeg", "size": 48213, "name": "现场.jpg"}
        ],
        "occurred_at": "2025-03-01T08:10:00+08:00",
        "reported_at": "2025-03-01T08:12:30+08:00",
    },
    "gridflow.case.lifecycle": {  # the re-route after a return (退单)
        "case_id": CASE_ID,
        "version": 5,
        "transition": "assigned",
        "from_state": "reported",
        "to_state": "assigned",
        "at": "2025-03-01T02:13:00Z",
        "actor": {"kind": "system", "id": "dispatch"},
        "category": "city.garbage",
        "unit_grid": "430281001001001",
        "department": "chengguan",
        "routing": {"rule_id": "garbage-default", "ruleset_version": "2025-02-20.1"},
        "previous_department": "zhujian",
        "co_handling": ["yingji"],
        "owner_node": "430281001001001",
        "return_count": 1,
        "rework_count": 0,
        "suspended": False,
        "extension_pending": False,
        "supervised": True,
    },
    "gridflow.deadletter": {
        "service": "gridflow/dispatch",
        "consumer_group": "dispatch",
        "topic": "cases.submitted",
        "partition": 3,
        "offset": 1207,
        "error": "PayloadError: gridflow.case.submitted: 1 validation error",
        "attempts": 5,
        "failed_at": "2025-03-01T00:14:00Z",
        "original_key": CASE_ID,
        "original_headers": {"ce_id": "E01JDQ7Y8XW2N3K4M5P6Q7R8S9T", "ce_specversion": "1.0"},
        "original_value": "e30=",
        "original_event_id": "E01JDQ7Y8XW2N3K4M5P6Q7R8S9T",
    },
    "gridflow.sla.signal": {
        "case_id": CASE_ID,
        "kind": "breach",
        "stage": "handle",
        "due_at": "2025-03-03T17:30:00+08:00",
        "at": "2025-03-03T17:30:01+08:00",
        "case_version": 3,
        "department": "chengguan",
        "policy": "city.garbage/routine@v2-1a2b3c4d5e6f",
    },
    "gridflow.visit.recorded": {
        "visit_id": "V01JDQ7Y8XW2N3K4M5P6Q7R8S9T",
        "resident_id": "KR-000117",
        "worker_id": "W0001",
        "unit_grid": "430281001001001",
        "visited_at": "2025-03-01T09:30:00+08:00",
        "recorded_at": "2025-03-01T09:41:00+08:00",
        "outcome": "met",
        "follow_up_needed": True,
        "note": "老人腿脚不便，需协调上门送药。",
    },
}


def load_schema(ce_type: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((REPO_ROOT / schema_path(ce_type)).read_text())
    return loaded


def load_asyncapi() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / ASYNCAPI_PATH).read_text())
    return loaded


def refs_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "$ref":
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs_in(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} is not a local reference"
    node: Any = document
    for token in ref[2:].split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def test_committed_documents_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0, capsys.readouterr().err


def test_regenerating_is_byte_identical() -> None:
    assert rendered_files() == rendered_files()
    assert all(text.endswith("\n") for text in rendered_files().values())


def test_check_names_each_stale_file_and_write_repairs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--write", "--root", str(tmp_path)]) == 0
    assert main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / EVENTS_MD_PATH).write_text("# edited by hand\n")
    (tmp_path / ASYNCAPI_PATH).unlink()
    orphan = tmp_path / SCHEMA_DIR / "gridflow.retired.json"
    orphan.write_text("{}\n")
    capsys.readouterr()

    assert main(["--check", "--root", str(tmp_path)]) == 1

    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"stale: {ASYNCAPI_PATH.as_posix()}; run {WRITE_COMMAND}",
        f"stale: {EVENTS_MD_PATH.as_posix()}; run {WRITE_COMMAND}",
        f"stale: {SCHEMA_DIR.as_posix()}/gridflow.retired.json; run {WRITE_COMMAND}",
    ]
    assert main(["--write", "--root", str(tmp_path)]) == 0
    assert not orphan.exists()
    assert main(["--check", "--root", str(tmp_path)]) == 0


def test_check_or_write_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "--write" in capsys.readouterr().err


def test_every_event_type_of_every_topic_has_a_schema() -> None:
    schemas = render_schemas()
    for topic in CATALOGUE:
        for ce_type, model in topic.events.items():
            schema = json.loads(schemas[ce_type])
            assert (REPO_ROOT / schema_path(ce_type)).is_file()
            assert list(schema)[:4] == ["$schema", "$id", "title", "description"]
            assert schema["$id"].endswith(ce_type)
            assert schema["title"] == model.__name__
            assert schema["description"]
    assert set(EXAMPLES) == set(event_models()), "every event type needs an example payload"


@pytest.mark.parametrize("ce_type", sorted(EXAMPLES))
def test_schema_fits_the_example_payload(ce_type: str) -> None:
    model = event_models()[ce_type]
    schema = load_schema(ce_type)
    example = EXAMPLES[ce_type]

    model.model_validate(example)
    assert schema["required"] == [n for n, f in model.model_fields.items() if f.is_required()]
    assert set(schema["required"]) <= set(example)
    assert set(schema["properties"]) == set(model.model_fields)
    assert set(example) <= set(schema["properties"])


@pytest.mark.parametrize("ce_type", sorted(EXAMPLES))
def test_schema_and_model_refuse_a_broken_payload(ce_type: str) -> None:
    model = event_models()[ce_type]
    schema = load_schema(ce_type)
    example = EXAMPLES[ce_type]

    for name in schema["required"]:
        broken = {k: v for k, v in example.items() if k != name}
        with pytest.raises(ValidationError, match=name):
            model.model_validate(broken)
    assert schema["additionalProperties"] is False
    with pytest.raises(ValidationError, match="extra_field"):
        model.model_validate({**example, "extra_field": 1})


def test_asyncapi_parses_and_every_reference_resolves() -> None:
    document = load_asyncapi()

    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == "gridflow"
    assert document["info"]["version"]
    refs = list(refs_in(document))
    assert refs
    for ref in refs:
        assert isinstance(resolve(document, ref), dict), ref
    assert "&id" not in render_asyncapi(), "YAML anchors make the document hard to read"


def test_asyncapi_describes_every_topic_message_and_service() -> None:
    document = load_asyncapi()
    channels = {c["address"]: c for c in document["channels"].values()}
    operations = document["operations"].values()

    for topic in CATALOGUE:
        channel = channels[topic.name]
        assert set(channel["messages"]) == set(topic.events)
        for ce_type, model in topic.events.items():
            message = resolve(document, channel["messages"][ce_type]["$ref"])
            payload = resolve(document, message["payload"]["$ref"])
            assert set(payload["properties"]) == set(load_schema(ce_type)["properties"])
            assert payload["required"] == load_schema(ce_type)["required"]
            assert payload["title"] == model.__name__
            headers = message["headers"]
            assert headers["properties"]["ce_type"]["const"] == ce_type
            assert set(headers["required"]) == {
                "ce_specversion",
                "ce_id",
                "ce_source",
                "ce_type",
                "ce_time",
            }
            assert {"ce_subject", "content-type"} <= set(headers["properties"])
            assert message["bindings"]["kafka"]["key"]["type"] == "string"
        for action, services in (("send", topic.producers), ("receive", topic.consumers)):
            for service in services:
                assert any(
                    op["action"] == action
                    and resolve(document, op["channel"]["$ref"]) is channel
                    and {"name": service} in op["tags"]
                    for op in operations
                ), f"no {action} operation of {service} on {topic.name}"


def test_case_topics_are_keyed_by_the_case_id() -> None:
    document = load_asyncapi()
    messages = document["components"]["messages"]
    for topic in CATALOGUE:
        if topic.key != "case_id":
            continue
        for ce_type in topic.events:
            key = messages[ce_type]["bindings"]["kafka"]["key"]
            assert key["pattern"] == load_schema(ce_type)["properties"]["case_id"]["pattern"]


def test_events_md_is_the_generated_catalogue() -> None:
    text = (REPO_ROOT / EVENTS_MD_PATH).read_text()

    assert text == render_events_md()
    assert f"Generated by `{WRITE_COMMAND}`; do not edit by hand." in text.splitlines()[2]
    for topic in CATALOGUE:
        assert f"## `{topic.name}`" in text
        for ce_type in topic.events:
            link = schema_path(ce_type).relative_to(EVENTS_MD_PATH.parent).as_posix()
            assert f"]({link})" in text
            for field in load_schema(ce_type)["properties"]:
                assert f"| `{field}` |" in text


def test_the_documented_topic_prefix_variable_is_the_setting() -> None:
    prefix = ServiceSettings.model_config.get("env_prefix", "")
    assert "topic_prefix" in ServiceSettings.model_fields
    assert f"{prefix}TOPIC_PREFIX" == TOPIC_PREFIX_VARIABLE
