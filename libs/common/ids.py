"""Time-ordered identifiers (ULID layout: 48-bit milliseconds + 80 random bits, Crockford base32)."""

from __future__ import annotations

import os
import random
from datetime import datetime

# ids must be unique, not secret: a fast generator seeded from the OS per process
_random = random.Random(os.urandom(32))  # noqa: S311
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# every pair of Crockford digits, indexed by the 10 bits it encodes: 13 lookups make an id
_PAIRS = tuple(high + low for high in _CROCKFORD for low in _CROCKFORD)


def ulid(at: datetime) -> str:
    """26 Crockford base32 digits of the 128-bit value (130 bits: two leading zero bits)."""
    value = (int(at.timestamp() * 1000) << 80) | _random.getrandbits(80)
    pairs = _PAIRS
    return "".join(
        (
            pairs[value >> 120],
            pairs[(value >> 110) & 1023],
            pairs[(value >> 100) & 1023],
            pairs[(value >> 90) & 1023],
            pairs[(value >> 80) & 1023],
            pairs[(value >> 70) & 1023],
            pairs[(value >> 60) & 1023],
            pairs[(value >> 50) & 1023],
            pairs[(value >> 40) & 1023],
            pairs[(value >> 30) & 1023],
            pairs[(value >> 20) & 1023],
            pairs[(value >> 10) & 1023],
            pairs[value & 1023],
        )
    )


def new_case_id(at: datetime) -> str:
    return "C" + ulid(at)


def new_visit_id(at: datetime) -> str:
    return "V" + ulid(at)


def new_event_id(at: datetime) -> str:
    return "E" + ulid(at)
