"""Time-ordered identifiers (ULID layout: 48-bit milliseconds + 80 random bits, Crockford base32)."""

from __future__ import annotations

import base64
import os
import random
from datetime import datetime

# ids must be unique, not secret: a fast generator seeded from the OS per process
_random = random.Random(os.urandom(32))  # noqa: S311
_RFC4648 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_CROCKFORD = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TO_CROCKFORD = bytes.maketrans(_RFC4648, _CROCKFORD)


def ulid(at: datetime) -> str:
    millis = int(at.timestamp() * 1000)
    value = (millis << 80) | _random.getrandbits(80)
    # 130 bits = 26 base32 digits; two leading zero bits pad 128 bits to a multiple of 5
    encoded = base64.b32encode(value.to_bytes(20, "big"))[-26:]
    return encoded.translate(_TO_CROCKFORD).decode()


def new_case_id(at: datetime) -> str:
    return "C" + ulid(at)


def new_visit_id(at: datetime) -> str:
    return "V" + ulid(at)


def new_event_id(at: datetime) -> str:
    return "E" + ulid(at)
