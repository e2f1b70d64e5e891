"""Identifiers: the ULID layout (48-bit milliseconds, 80 random bits, Crockford base32)."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

import pytest

from libs.common import ids

_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
)


def _reference(value: int) -> str:
    """The same 128-bit value encoded another way: RFC 4648 base32 mapped to Crockford's digits."""
    return base64.b32encode(value.to_bytes(20, "big"))[-26:].translate(_CROCKFORD).decode()


def test_ulid_encodes_time_and_random_bits_like_a_reference_encoder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = datetime(2026, 11, 27, 12, 0, 0, 123000, tzinfo=UTC)
    for random_bits in (0, 1, 2**80 - 1, 0x0123456789ABCDEF0123, 0xFEDCBA9876543210FEDC):
        monkeypatch.setattr(ids._random, "getrandbits", lambda _bits, value=random_bits: value)
        millis = int(at.timestamp() * 1000)
        assert ids.ulid(at) == _reference((millis << 80) | random_bits)


def test_ulid_text_decodes_back_to_its_millisecond() -> None:
    at = datetime(2026, 11, 27, 12, 0, 0, 123000, tzinfo=UTC)
    text = ids.ulid(at)
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", text)
    value = 0
    for char in text:
        value = value * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    assert value >> 80 == int(at.timestamp() * 1000)


def test_ids_sort_by_time_and_carry_their_prefix() -> None:
    start = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    made = [ids.new_case_id(start + timedelta(milliseconds=step)) for step in range(0, 5000, 7)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    assert ids.new_visit_id(start).startswith("V") and ids.new_event_id(start).startswith("E")
