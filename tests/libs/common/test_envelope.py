"""Our binary-mode codec against the official CloudEvents SDK, both ways, and its refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, to_binary
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from libs.common.envelope import Envelope, EnvelopeError, KafkaRecord, decode, encode
from libs.common.events import CaseSubmitted
from libs.common.topics import (
    CASES_LIFECYCLE,
    CASES_SUBMITTED,
    PayloadError,
    build_envelope,
    parse_payload,
)

CASE_ID = "C01JDQ7Y8XW2N3K4M5P6Q7R8S9T"
BEIJING = timezone(timedelta(hours=8))
NOW = datetime(2025, 3, 1, 8, 30, 15, 123456, tzinfo=BEIJING)


def make_case_submitted(**overrides: Any) -> CaseSubmitted:
    values: dict[str, Any] = {
        "case_id": CASE_ID,
        "source": "grid_worker",
        "category": {"code": "city.garbage"},
        "title": "路边暴露垃圾",
        "description": "人民路与解放路交叉口东北角有一堆生活垃圾未清运。",
        "location": {"unit_grid": "430281001001001", "address": "人民路 12 号旁"},
        "reporter": {"kind": "grid_worker", "worker_id": "W0001", "name": "李四"},
        "occurred_at": NOW - timedelta(minutes=20),
        "reported_at": NOW - timedelta(minutes=15),
    }
    values.update(overrides)
    return CaseSubmitted.model_validate(values)


def make_envelope(**overrides: Any) -> Envelope:
    values: dict[str, Any] = {
        "id": "E01JDQ7Y8XW2N3K4M5P6Q7R8S9T",
        "source": "gridflow/intake",
        "type": "gridflow.case.submitted",
        "time": NOW,
        "subject": CASE_ID,
        "key": CASE_ID,
        "data": make_case_submitted().model_dump(mode="json"),
    }
    values.update(overrides)
    return Envelope(**values)


def as_sdk_message(record: KafkaRecord) -> KafkaMessage:
    return KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)


def decode_record(record: KafkaRecord) -> Envelope:
    return decode(record.key, record.value, record.headers)


def test_what_encode_writes_the_sdk_reads() -> None:
    envelope = make_envelope(extensions={"traceparent": "00-0af7651916cd43dd-01"})

    event = from_binary(as_sdk_message(encode(envelope)), JSONFormat())

    assert isinstance(event, CloudEvent)
    assert event.get_specversion() == "1.0"
    assert event.get_id() == envelope.id
    assert event.get_source() == envelope.source
    assert event.get_type() == envelope.type
    assert event.get_subject() == CASE_ID
    assert event.get_time() == NOW
    assert event.get_datacontenttype() == "application/json"
    assert event.get_data() == envelope.data
    assert event.get_extension("partitionkey") == CASE_ID
    assert event.get_extension("traceparent") == "00-0af7651916cd43dd-01"


def test_what_the_sdk_writes_decode_reads() -> None:
    data = make_case_submitted().model_dump(mode="json")
    event = CloudEvent(
        attributes={
            "id": "4f6e1c2a-sdk-generated",
            "source": "urn:partner:hotline12345",
            "type": "gridflow.case.submitted",
            "time": NOW,
            "subject": CASE_ID,
            "datacontenttype": "application/json",
            "partitionkey": CASE_ID,
            "traceparent": "00-0af7651916cd43dd-01",
        },
        data=data,
    )
    message = to_binary(event, JSONFormat())
    assert message.key == CASE_ID
    key = message.key.encode() if isinstance(message.key, str) else message.key

    envelope = decode(key, message.value, message.headers.items())

    assert envelope == Envelope(
        id="4f6e1c2a-sdk-generated",
        source="urn:partner:hotline12345",
        type="gridflow.case.submitted",
        time=NOW,
        subject=CASE_ID,
        key=CASE_ID,
        data=data,
        datacontenttype="application/json",
        extensions={"traceparent": "00-0af7651916cd43dd-01"},
    )


def test_the_sdk_default_event_decodes_too() -> None:
    event = CloudEvent(attributes={"source": "/sdk", "type": "gridflow.case.submitted"}, data={})

    message = to_binary(event, JSONFormat())

    envelope = decode(None, message.value, message.headers.items())

    assert envelope.id == event.get_id()
    assert envelope.time == event.get_time()
    assert envelope.key is None
    assert envelope.data == {}


def test_a_real_case_submitted_round_trips_with_chinese_text() -> None:
    payload = make_case_submitted()
    envelope = build_envelope(
        CASES_SUBMITTED, payload, source="gridflow/intake", key=payload.case_id, now=NOW
    )

    record = encode(envelope)
    decoded = decode_record(record)

    assert decoded == envelope
    assert parse_payload(CASES_SUBMITTED, decoded) == payload
    assert record.key == CASE_ID.encode()
    assert "人民路与解放路交叉口".encode() in record.value, (
        "JSON is written as UTF-8, not \\u escapes"
    )
    assert dict(record.headers)["ce_time"] == b"2025-03-01T00:30:15.123456Z"
    assert dict(record.headers)["ce_subject"] == CASE_ID.encode()


def good_headers() -> list[tuple[str, bytes]]:
    return encode(make_envelope()).headers


def without(name: str) -> list[tuple[str, bytes]]:
    return [(n, v) for n, v in good_headers() if n != name]


def replaced(name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [*without(name), (name, value)]


GOOD_VALUE = encode(make_envelope()).value


@pytest.mark.parametrize(
    ("headers", "value", "problem"),
    [
        (without("ce_id"), GOOD_VALUE, "missing CloudEvents attributes: ce_id"),
        (without("ce_source"), GOOD_VALUE, "missing CloudEvents attributes: ce_source"),
        (without("ce_type"), GOOD_VALUE, "missing CloudEvents attributes: ce_type"),
        (without("ce_specversion"), GOOD_VALUE, "missing CloudEvents attributes: ce_specversion"),
        (replaced("ce_id", b""), GOOD_VALUE, "missing CloudEvents attributes: ce_id"),
        (replaced("ce_specversion", b"0.3"), GOOD_VALUE, "unsupported specversion '0.3'"),
        (good_headers(), b"{not json", "value is not JSON"),
        (good_headers(), b"\xff\xfe\x00", "value is not JSON"),
        (good_headers(), b'{"x": NaN}', "NaN is not JSON"),
        (good_headers(), b'{"x": -Infinity}', "-Infinity is not JSON"),
        (replaced("ce_subject", b"\xff\xfe"), GOOD_VALUE, "header 'ce_subject' is not UTF-8"),
        (without("ce_time"), GOOD_VALUE, "missing ce_time"),
        (replaced("ce_time", b"2025-03-01T08:30:00"), GOOD_VALUE, "is not RFC 3339"),
        (replaced("ce_time", b"yesterday"), GOOD_VALUE, "is not RFC 3339"),
        (replaced("ce_time", b"2025-02-30T08:30:00Z"), GOOD_VALUE, "is not RFC 3339"),
        (replaced("content-type", b"text/plain"), GOOD_VALUE, "unsupported content-type"),
        (replaced("content-type", b"application/xml"), GOOD_VALUE, "unsupported content-type"),
        (good_headers(), None, "record has no value"),
    ],
)
def test_decode_refuses_a_malformed_record(
    headers: list[tuple[str, bytes]], value: bytes | None, problem: str
) -> None:
    with pytest.raises(EnvelopeError) as refused:
        decode(CASE_ID.encode(), value, headers)
    assert problem in str(refused.value)


def test_decode_refuses_a_key_that_is_not_utf8() -> None:
    with pytest.raises(EnvelopeError, match="record key is not UTF-8"):
        decode(b"\xff", GOOD_VALUE, good_headers())


def test_decode_accepts_json_media_types_and_header_case() -> None:
    headers = [(n.upper(), v) for n, v in replaced("content-type", b"application/cloudevents+json")]
    headers = [*headers, ("content-type", b"application/json; charset=utf-8")]

    envelope = decode(CASE_ID.encode(), GOOD_VALUE, headers)

    assert envelope.id == "E01JDQ7Y8XW2N3K4M5P6Q7R8S9T"
    assert envelope.datacontenttype == "application/json; charset=utf-8"


def test_encode_refuses_a_naive_time_and_a_bad_extension_name() -> None:
    with pytest.raises(EnvelopeError, match="timezone-aware"):
        encode(make_envelope(time=datetime(2025, 3, 1, 8, 30)))  # noqa: DTZ001
    with pytest.raises(EnvelopeError, match="invalid extension attribute name 'Trace-Parent'"):
        encode(make_envelope(extensions={"Trace-Parent": "x"}))
    with pytest.raises(EnvelopeError, match="invalid extension attribute name 'subject'"):
        encode(make_envelope(extensions={"subject": "x"}))


def test_encode_writes_compact_json_and_utc_time() -> None:
    record = encode(make_envelope(data={"标题": "垃圾", "n": 1}))

    assert json.loads(record.value) == {"标题": "垃圾", "n": 1}
    assert record.value == '{"标题":"垃圾","n":1}'.encode()
    assert decode_record(record).time.utcoffset() == timedelta(0)
    assert decode_record(record).time == NOW.astimezone(UTC)


def test_parse_payload_refuses_an_event_type_the_topic_does_not_carry() -> None:
    envelope = make_envelope(type="gridflow.case.lifecycle")

    with pytest.raises(PayloadError, match=r"not carried by topic cases\.submitted"):
        parse_payload(CASES_SUBMITTED, envelope)
    with pytest.raises(PayloadError, match=r"'gridflow\.case\.submitted' is not carried"):
        parse_payload(CASES_LIFECYCLE, make_envelope())


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"title": None}, "title"),
        ({"title": "   "}, "title"),
        ({"case_id": "not-a-case-id"}, "case_id"),
        ({"occurred_at": "2025-03-01T08:10:00"}, "occurred_at"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_parse_payload_refuses_data_that_fails_the_model(
    change: dict[str, Any], problem: str
) -> None:
    data = {**make_case_submitted().model_dump(mode="json"), **change}
    data = {k: v for k, v in data.items() if v is not None}

    with pytest.raises(PayloadError, match=f"(?s)gridflow.case.submitted: .*{problem}") as refused:
        parse_payload(CASES_SUBMITTED, make_envelope(data=data))
    assert refused.value.__cause__ is not None


@pytest.mark.parametrize("name", ["data", "aé"])
def test_encode_refuses_extension_names_the_sdk_refuses(name: str) -> None:
    with pytest.raises(EnvelopeError, match="invalid extension attribute name"):
        encode(make_envelope(extensions={name: "x"}))
