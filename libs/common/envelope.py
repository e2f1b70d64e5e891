"""CloudEvents 1.0 in the Kafka protocol binding's binary content mode: our own small codec.

Attributes travel as `ce_*` headers, `datacontenttype` as the `content-type` header, the JSON data as
the record value, and the entity id (the case id for case topics) as the record key. Any CloudEvents
SDK reads what this writes; tests/libs/common/test_envelope.py proves it both ways.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

SPECVERSION = "1.0"
JSON_CONTENT_TYPE = "application/json"
_REQUIRED = ("id", "source", "type", "specversion")
_CORE = {"id", "source", "type", "specversion", "time", "subject", "dataschema"}
# names an extension may not take: core attributes, the data members, and the Kafka binding's key
_RESERVED = _CORE | {"datacontenttype", "data", "data_base64", "partitionkey"}
_EXTENSION_NAME = re.compile(r"[a-z0-9]{1,20}")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


class EnvelopeError(ValueError):
    """A Kafka record that is not a well-formed binary-mode CloudEvent."""


@dataclass(frozen=True)
class RawJson:
    """Data that is already JSON text (e.g. read back from an outbox): written as it is."""

    text: str


@dataclass(frozen=True)
class Envelope:
    id: str
    source: str
    type: str
    time: datetime
    data: Any
    subject: str | None = None
    key: str | None = None
    dataschema: str | None = None
    datacontenttype: str = JSON_CONTENT_TYPE
    extensions: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KafkaRecord:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


_SPECVERSION_BYTES = SPECVERSION.encode()
_JSON_CONTENT_TYPE_BYTES = JSON_CONTENT_TYPE.encode()


def format_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise EnvelopeError("ce_time must be timezone-aware")
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.removesuffix("+00:00") + "Z"


def encode_stored(
    *, id: str, source: str, type: str, time: str, key: str, data: str
) -> KafkaRecord:
    """`encode` of an envelope stored in an outbox row: JSON data, no schema or extensions, the
    key as subject, and the time already formatted (`format_time`; the relay has PostgreSQL
    format it). The same record as `encode` of that envelope, without building the envelope."""
    key_bytes = key.encode()
    return KafkaRecord(
        key=key_bytes,
        value=data.encode(),
        headers=[
            ("ce_specversion", _SPECVERSION_BYTES),
            ("ce_id", id.encode()),
            ("ce_source", source.encode()),
            ("ce_type", type.encode()),
            ("ce_time", time.encode()),
            ("content-type", _JSON_CONTENT_TYPE_BYTES),
            ("ce_subject", key_bytes),
        ],
    )


def encode(envelope: Envelope) -> KafkaRecord:
    headers: list[tuple[str, bytes]] = [
        ("ce_specversion", SPECVERSION.encode()),
        ("ce_id", envelope.id.encode()),
        ("ce_source", envelope.source.encode()),
        ("ce_type", envelope.type.encode()),
        ("ce_time", format_time(envelope.time).encode()),
        ("content-type", envelope.datacontenttype.encode()),
    ]
    if envelope.subject is not None:
        headers.append(("ce_subject", envelope.subject.encode()))
    if envelope.dataschema is not None:
        headers.append(("ce_dataschema", envelope.dataschema.encode()))
    for name, text in sorted(envelope.extensions.items()):
        if name in _RESERVED or not _EXTENSION_NAME.fullmatch(name):
            raise EnvelopeError(f"invalid extension attribute name {name!r}")
        headers.append((f"ce_{name}", text.encode()))
    if isinstance(envelope.data, RawJson):
        value = envelope.data.text.encode()
    else:
        value = json.dumps(envelope.data, ensure_ascii=False, separators=(",", ":")).encode()
    key = envelope.key.encode() if envelope.key is not None else None
    return KafkaRecord(key=key, value=value, headers=headers)


def decode(
    key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]]
) -> Envelope:
    attributes: dict[str, str] = {}
    content_type = None
    for name, raw in headers:
        lowered = name.lower()
        try:
            text = raw.decode()
        except (UnicodeDecodeError, AttributeError) as exc:
            raise EnvelopeError(f"header {name!r} is not UTF-8") from exc
        if lowered.startswith("ce_"):
            if lowered[3:] in attributes:
                raise EnvelopeError(f"header {name!r} appears more than once")
            attributes[lowered[3:]] = text
        elif lowered == "content-type":
            content_type = text
    missing = [name for name in _REQUIRED if not attributes.get(name)]
    if missing:
        raise EnvelopeError(
            f"missing CloudEvents attributes: {', '.join('ce_' + m for m in missing)}"
        )
    if attributes["specversion"] != SPECVERSION:
        raise EnvelopeError(f"unsupported specversion {attributes['specversion']!r}")
    media_type = (content_type or JSON_CONTENT_TYPE).split(";")[0].strip().lower()
    if media_type not in (JSON_CONTENT_TYPE, "text/json") and not media_type.endswith("+json"):
        raise EnvelopeError(f"unsupported content-type {content_type!r}")
    if value is None:
        raise EnvelopeError("record has no value")
    try:
        data = _JSON.decode(value.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise EnvelopeError(f"value is not JSON (UTF-8): {exc}") from exc
    time = _parse_time(attributes.get("time"))
    extensions = {k: v for k, v in attributes.items() if k not in _CORE and k != "partitionkey"}
    try:
        key_text = key.decode() if key is not None else None
    except UnicodeDecodeError as exc:
        raise EnvelopeError("record key is not UTF-8") from exc
    return Envelope(
        id=attributes["id"],
        source=attributes["source"],
        type=attributes["type"],
        time=time,
        data=data,
        subject=attributes.get("subject"),
        key=key_text,
        dataschema=attributes.get("dataschema"),
        datacontenttype=content_type or JSON_CONTENT_TYPE,
        extensions=extensions,
    )


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# one decoder for every record: json.loads with an argument builds a new one per call (a third
# of the time it takes to decode a lifecycle event)
_JSON = json.JSONDecoder(parse_constant=_refuse_constant)


def _parse_time(text: str | None) -> datetime:
    if not text:
        raise EnvelopeError("missing ce_time")
    if not _RFC3339.fullmatch(text):
        raise EnvelopeError(f"ce_time {text!r} is not RFC 3339")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise EnvelopeError(f"ce_time {text!r} is not RFC 3339") from exc
    return moment
