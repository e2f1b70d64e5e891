"""The contract documents, generated from the payload models and the topic catalogue.

`python -m libs.common.catalogue --write` writes docs/schemas/<ce type>.json (one JSON Schema per event
type), docs/asyncapi.yaml (AsyncAPI 3.0) and docs/events.md (the topic catalogue for humans);
`--check` exits 1 when any of them differs from what the code says, so CI catches a stale document.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from libs.common.contract import Contract
from libs.common.envelope import JSON_CONTENT_TYPE, SPECVERSION
from libs.common.topics import CATALOGUE, DEADLETTER, Topic

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = Path("docs/schemas")
ASYNCAPI_PATH = Path("docs/asyncapi.yaml")
EVENTS_MD_PATH = Path("docs/events.md")
WRITE_COMMAND = "python -m libs.common.catalogue --write"
TOPIC_PREFIX_VARIABLE = "GRIDFLOW_TOPIC_PREFIX"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
KAFKA_BINDING_VERSION = "0.5.0"
# Validation mode: the schemas describe what a consumer accepts (fields with a default may be absent).
SCHEMA_MODE: JsonSchemaMode = "validation"
_EXAMPLE_EVENT_ID = "E01JDQ7Y8XW2N3K4M5P6Q7R8S9T"


@dataclass(frozen=True)
class Header:
    name: str
    attribute: str
    required: bool
    description: str


HEADERS: tuple[Header, ...] = (
    Header("ce_specversion", "specversion", True, f"always `{SPECVERSION}`"),
    Header(
        "ce_id",
        "id",
        True,
        "unique event id ('E' + a ULID); the idempotency key of every consumer",
    ),
    Header("ce_source", "source", True, "the producing service, e.g. `gridflow/intake`"),
    Header("ce_type", "type", True, "the event type; names the payload schema"),
    Header(
        "ce_time",
        "time",
        True,
        "when the event happened: RFC 3339 with an offset (gridflow writes UTC, microseconds)",
    ),
    Header(
        "ce_subject",
        "subject",
        False,
        "the entity the event is about, equal to the record key (gridflow always sets it)",
    ),
    Header(
        "content-type",
        "datacontenttype",
        False,
        f"`{JSON_CONTENT_TYPE}` (gridflow always sets it; absent means `{JSON_CONTENT_TYPE}`, "
        "and consumers also accept `+json` media types)",
    ),
)


def event_models() -> dict[str, type[Contract]]:
    """Every event type of the catalogue with its payload model, in catalogue order."""
    models: dict[str, type[Contract]] = {}
    for topic in CATALOGUE:
        for ce_type, model in topic.events.items():
            if models.setdefault(ce_type, model) is not model:
                raise ValueError(f"event type {ce_type} names two payload models")
    return models


def schema_id(ce_type: str) -> str:
    return f"urn:gridflow:schema:{ce_type}"


def schema_path(ce_type: str) -> Path:
    return SCHEMA_DIR / f"{ce_type}.json"


def payload_schema(ce_type: str, model: type[Contract]) -> dict[str, Any]:
    """The JSON Schema of one event type's payload, its identity first."""
    generated = model.model_json_schema(mode=SCHEMA_MODE)
    title = generated.pop("title", model.__name__)
    description = generated.pop("description", None) or f"Payload of {ce_type} events."
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_id(ce_type),
        "title": title,
        "description": description,
        **generated,
    }


def render_schemas() -> dict[str, str]:
    """The text of every schema file, by event type."""
    return {
        ce_type: json.dumps(payload_schema(ce_type, model), indent=2, ensure_ascii=False) + "\n"
        for ce_type, model in event_models().items()
    }


def _project_version() -> str:
    with (REPO_ROOT / "pyproject.toml").open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _channel_id(topic: Topic) -> str:
    return _slug(topic.name)


def _topic_of(ce_type: str) -> Topic:
    return next(topic for topic in CATALOGUE if ce_type in topic.events)


def _key_schema(topic: Topic, model: type[Contract]) -> dict[str, Any]:
    field = model.model_json_schema(mode=SCHEMA_MODE)["properties"].get(topic.key)
    if field is None or field.get("type") != "string":
        return {"type": "string", "description": f"the {topic.key}"}
    key: dict[str, Any] = {
        "type": "string",
        "description": f"the payload's `{topic.key}` ({field.get('description', topic.key)})",
    }
    for keyword in ("pattern", "examples"):
        if keyword in field:
            key[keyword] = field[keyword]
    return key


def _headers_schema(ce_type: str) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for header in HEADERS:
        schema: dict[str, Any] = {"type": "string", "description": header.description}
        if header.name == "ce_specversion":
            schema["const"] = SPECVERSION
        elif header.name == "ce_type":
            schema["const"] = ce_type
        elif header.name == "ce_time":
            schema["format"] = "date-time"
        elif header.name == "ce_id":
            schema["examples"] = [_EXAMPLE_EVENT_ID]
        elif header.name == "content-type":
            schema["default"] = JSON_CONTENT_TYPE
        properties[header.name] = schema
    return {
        "type": "object",
        "description": "CloudEvents 1.0 attributes, Kafka binding, binary content mode "
        "(header values are UTF-8); further ce_* headers are CloudEvents extensions.",
        "required": [header.name for header in HEADERS if header.required],
        "properties": properties,
    }


class _SafeDumperWithoutAliases(yaml.SafeDumper):
    """safe_dump's dumper, but repeated values are written out instead of as &anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def asyncapi_document() -> dict[str, Any]:
    models = event_models()
    distinct = list(dict.fromkeys(models.values()))
    refs, definitions = models_json_schema(
        [(model, SCHEMA_MODE) for model in distinct], ref_template="#/components/schemas/{model}"
    )
    messages: dict[str, Any] = {}
    for ce_type, model in models.items():
        topic = _topic_of(ce_type)
        messages[ce_type] = {
            "name": ce_type,
            "title": model.__name__,
            "summary": payload_schema(ce_type, model)["description"],
            "contentType": JSON_CONTENT_TYPE,
            "headers": _headers_schema(ce_type),
            "payload": dict(refs[(model, SCHEMA_MODE)]),
            "bindings": {
                "kafka": {
                    "key": _key_schema(topic, model),
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in CATALOGUE:
        channel = _channel_id(topic)
        channels[channel] = {
            "address": topic.name,
            "title": topic.name,
            "description": f"{topic.description} Key: {topic.key}. On the broker the name "
            f"carries the {TOPIC_PREFIX_VARIABLE} prefix (empty by default).",
            "messages": {
                ce_type: {"$ref": f"#/components/messages/{ce_type}"} for ce_type in topic.events
            },
        }
        for action, services in (("send", topic.producers), ("receive", topic.consumers)):
            for service in services:
                flow = (service, topic.name) if action == "send" else (topic.name, service)
                operations[f"{_slug(service)}_{action}_{channel}"] = {
                    "action": action,
                    "channel": {"$ref": f"#/channels/{channel}"},
                    "title": " → ".join(flow),
                    "tags": [{"name": service}],
                    "messages": [
                        {"$ref": f"#/channels/{channel}/messages/{ce_type}"}
                        for ce_type in topic.events
                    ],
                }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "gridflow",
            "version": _project_version(),
            "description": (
                "The Kafka topics between the gridflow services. Every record is a CloudEvents 1.0 "
                "event in the Kafka binding's binary content mode: ce_* headers, JSON payload as "
                "the value, the entity id (the case id on case topics) as the key. This document "
                "describes all services at once: each operation is named and tagged after the "
                f"service that performs it. Generated by `{WRITE_COMMAND}`; the topic catalogue "
                "for humans is events.md."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": JSON_CONTENT_TYPE,
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "The brokers named by KAFKA_BOOTSTRAP_SERVERS (the embedded broker "
                f"when unset); every topic name carries the {TOPIC_PREFIX_VARIABLE} prefix.",
                "variables": {
                    "bootstrap": {
                        "description": "a host:port of KAFKA_BOOTSTRAP_SERVERS",
                        "examples": ["127.0.0.1:9092"],
                    }
                },
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": definitions["$defs"], "messages": messages},
    }


def render_asyncapi() -> str:
    return yaml.dump(
        asyncapi_document(),
        Dumper=_SafeDumperWithoutAliases,
        allow_unicode=True,
        sort_keys=False,
        width=100,
    )


def _cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|")


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f"`{text}`"


def _ref_name(schema: Mapping[str, Any]) -> str:
    return str(schema["$ref"]).rsplit("/", 1)[-1]


def _non_null(schema: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], bool]:
    options = schema.get("anyOf", [schema])
    kept = [option for option in options if option.get("type") != "null"]
    return kept, len(kept) < len(options)


def _type_text(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    options, nullable = _non_null(schema)
    text = " or ".join(_single_type_text(option, defs) for option in options)
    return f"{text} or null" if nullable else text


def _single_type_text(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    if "$ref" in schema:
        name = _ref_name(schema)
        return f"{name} (enum)" if "enum" in defs[name] else f"{name} (object)"
    if "enum" in schema or "const" in schema:
        return f"{schema.get('type', 'value')} (enum)"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type_text(schema.get('items', {}), defs)}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
        return f"map of string to {_type_text(schema['additionalProperties'], defs)}"
    if "format" in schema:
        return f"{kind} ({schema['format']})"
    return str(kind)


def _notes(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> list[str]:
    notes: list[str] = []
    for option in _non_null(schema)[0]:
        target = defs[_ref_name(option)] if "$ref" in option else option
        values = target.get("enum", [target["const"]] if "const" in target else None)
        if values is not None:
            notes.append("one of " + ", ".join(_code(v) for v in values))
        if "pattern" in option:
            notes.append(f"pattern {_code(option['pattern'])}")
        low, high = option.get("minLength"), option.get("maxLength")
        if high is not None:
            notes.append(f"length {low or 0}–{high}")
        elif low is not None:
            notes.append(f"length ≥ {low}")
        low, high = option.get("minimum"), option.get("maximum")
        if low is not None and high is not None:
            notes.append(f"{low} to {high}")
        elif low is not None:
            notes.append(f"≥ {low}")
        elif high is not None:
            notes.append(f"≤ {high}")
        if "maxItems" in option:
            notes.append(f"at most {option['maxItems']} items")
    if "default" in schema:
        notes.append(f"default {_code(schema['default'])}")
    return notes


def _description(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> str:
    text = schema.get("description")
    for option in _non_null(schema)[0]:
        if text:
            break
        target = defs[_ref_name(option)] if "$ref" in option else option
        text = option.get("description") or target.get("description")
    parts = [str(text).rstrip(".")] if text else []
    return "; ".join(parts + _notes(schema, defs))


def _fields_table(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> list[str]:
    required = set(schema.get("required", []))
    lines = ["| field | type | required | description |", "|---|---|---|---|"]
    for name, field in schema.get("properties", {}).items():
        lines.append(
            f"| `{name}` | {_cell(_type_text(field, defs))} | "
            f"{'yes' if name in required else 'no'} | {_cell(_description(field, defs))} |"
        )
    return lines


def _event_section(ce_type: str, model: type[Contract]) -> list[str]:
    schema = payload_schema(ce_type, model)
    defs: Mapping[str, Any] = schema.get("$defs", {})
    link = schema_path(ce_type).relative_to(EVENTS_MD_PATH.parent).as_posix()
    lines = [
        f"### `{ce_type}`: {schema['title']}",
        "",
        f"{schema['description']} Schema: [{link}]({link}).",
        "",
        *_fields_table(schema, defs),
    ]
    objects = [(name, d) for name, d in defs.items() if d.get("type") == "object"]
    for name, definition in objects:
        lines += ["", f"**{name}**"]
        if definition.get("description"):
            lines += ["", str(definition["description"])]
        lines += ["", *_fields_table(definition, defs)]
    return lines


def _names(values: Iterable[str]) -> str:
    return ", ".join(values)


def render_events_md() -> str:
    models = event_models()
    dead_letter_type = next(iter(DEADLETTER.events))
    lines = [
        "# Events: the topic catalogue",
        "",
        f"> Generated by `{WRITE_COMMAND}`; do not edit by hand.",
        "> Sources: the payload models in `libs/common/events.py`, the topics in "
        "`libs/common/topics.py` and the template in `libs/common/catalogue.py`; "
        "CI runs `python -m libs.common.catalogue --check`.",
        "",
        "Services talk to each other only through these Kafka topics. The same contract, machine-"
        "readable: [asyncapi.yaml](asyncapi.yaml) (AsyncAPI 3.0) and one JSON Schema per event "
        "type under [schemas/](schemas/).",
        "",
        "## The envelope",
        "",
        "Every record is a CloudEvents 1.0 event in the Kafka protocol binding's **binary content "
        "mode**: the event's attributes travel as record headers and its data, JSON in UTF-8, is "
        "the record value. Any CloudEvents SDK decodes these records "
        "(`tests/libs/common/test_envelope.py` proves it against the official Python SDK, both "
        "ways).",
        "",
        "| header | CloudEvents attribute | required | meaning |",
        "|---|---|---|---|",
        *(
            f"| `{h.name}` | `{h.attribute}` | {'yes' if h.required else 'no'} | "
            f"{_cell(h.description)} |"
            for h in HEADERS
        ),
        "",
        "Other `ce_*` headers are CloudEvents extension attributes (e.g. `ce_dataschema`); a "
        "consumer ignores the ones it does not know.",
        "",
        "- **Key**: the record key is the id of the entity the event is about, the case id on "
        "case topics (also in `ce_subject`), so all events of one case land on one partition, "
        "in order.",
        "- **Idempotency**: `ce_id` is unique per event and is the idempotency key of every "
        "consumer: a consumer that meets an id again does nothing more.",
        f"- **Dead letters**: a consumer that cannot decode or handle a record after bounded "
        f"retries publishes a `{dead_letter_type}` event to the `{DEADLETTER.name}` topic, with "
        "the error and the original coordinates (topic, partition, offset, key, headers and "
        "value), and goes on.",
        f"- **Topic names**: the names below are the catalogue's; on the broker each carries the "
        f"prefix `{TOPIC_PREFIX_VARIABLE}` (empty by default), which isolates stacks sharing one "
        "broker.",
        f"- **Payload schemas** are generated from the pydantic models in {SCHEMA_MODE} mode, so "
        "they describe what a consumer accepts: a field with a default may be absent, unknown "
        "fields are refused, date-times must carry an offset, and surrounding whitespace of "
        "strings is stripped. Each schema's `$id` is "
        f"`{schema_id('<ce type>')}`.",
        "",
        "## Topics",
        "",
        "| topic | key | producers | consumers | event types |",
        "|---|---|---|---|---|",
        *(
            f"| `{t.name}` | {_cell(t.key)} | {_names(t.producers)} | {_names(t.consumers)} | "
            + ", ".join(
                f"[`{ce_type}`]({schema_path(ce_type).relative_to(EVENTS_MD_PATH.parent).as_posix()})"
                for ce_type in t.events
            )
            + " |"
            for t in CATALOGUE
        ),
    ]
    for topic in CATALOGUE:
        lines += [
            "",
            f"## `{topic.name}`",
            "",
            topic.description,
            "",
            f"- **Key**: {topic.key}",
            f"- **Producers**: {_names(topic.producers)}",
            f"- **Consumers**: {_names(topic.consumers)}",
            f"- **Event types**: {_names(f'`{ce_type}`' for ce_type in topic.events)}",
        ]
        for ce_type in topic.events:
            lines += ["", *_event_section(ce_type, models[ce_type])]
    return "\n".join(lines) + "\n"


def rendered_files() -> dict[Path, str]:
    """Every generated document by its path relative to the repository root."""
    files: dict[Path, str] = {schema_path(t): text for t, text in render_schemas().items()}
    files[ASYNCAPI_PATH] = render_asyncapi()
    files[EVENTS_MD_PATH] = render_events_md()
    return files


def stale_files(root: Path, files: Mapping[Path, str]) -> list[Path]:
    """Generated files missing or different under `root`, and schema files nothing generates."""
    stale = [
        path
        for path, text in files.items()
        if not (root / path).is_file() or (root / path).read_bytes() != text.encode()
    ]
    orphans = sorted(
        path.relative_to(root)
        for path in (root / SCHEMA_DIR).glob("*.json")
        if path.relative_to(root) not in files
    )
    return stale + orphans


def write_files(root: Path, files: Mapping[Path, str]) -> list[Path]:
    """Bring `root` up to date; returns the paths written or removed."""
    changed = stale_files(root, files)
    for path in changed:
        target = root / path
        if path in files:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files[path].encode())
        else:
            target.unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m libs.common.catalogue",
        description="Generate or check docs/events.md, docs/asyncapi.yaml and docs/schemas/.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="(re)generate the documents")
    mode.add_argument("--check", action="store_true", help="exit 1 if a document is stale")
    parser.add_argument(
        "--root", type=Path, default=REPO_ROOT, help="repository root (default: this checkout)"
    )
    args = parser.parse_args(argv)
    root: Path = args.root
    files = rendered_files()
    if args.write:
        changed = write_files(root, files)
        for path in changed:
            sys.stdout.write(f"{'wrote' if path in files else 'removed'} {path.as_posix()}\n")
        sys.stdout.write(f"{len(files)} documents current ({len(changed)} changed)\n")
        return 0
    stale = stale_files(root, files)
    for path in stale:
        sys.stderr.write(f"stale: {path.as_posix()}; run {WRITE_COMMAND}\n")
    if stale:
        return 1
    sys.stdout.write(f"{len(files)} documents current\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
