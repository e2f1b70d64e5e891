"""Standard Webhooks signatures: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<b64>`.

The signed content is "{id}.{timestamp}.{body}", HMAC-SHA256 with the base64-decoded secret
(the `whsec_` prefix is stripped). Several secrets may be valid at once during a rotation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

SECRET_PREFIX = "whsec_"  # noqa: S105  # the format's prefix, not a secret
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    pass


MIN_KEY_BYTES = 24  # the spec recommends 24 to 64 random bytes


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise SignatureError("webhook secret is not base64 (whsec_...)") from exc
    if len(key) < MIN_KEY_BYTES:
        raise SignatureError(f"webhook secret must decode to at least {MIN_KEY_BYTES} bytes")
    return key


def sign(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def validate_secret(secret: str) -> None:
    """Raise SignatureError unless `secret` is a usable `whsec_` + base64 key (checked at start)."""
    _key(secret)


def signed_headers(
    *, secret: str, msg_id: str, now: datetime, body: bytes, also: Sequence[str] = ()
) -> dict[str, str]:
    """The three headers; `also` adds a signature per further secret (a rotation: receivers that
    know either secret accept), space separated as the spec says."""
    timestamp = int(now.timestamp())
    signatures = [
        sign(secret=key, msg_id=msg_id, timestamp=timestamp, body=body) for key in (secret, *also)
    ]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }


def verify(
    *,
    secrets: Iterable[str],
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Raise SignatureError unless one of the signatures matches one of the secrets."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError as exc:
        raise SignatureError("webhook-timestamp is not an integer") from exc
    if abs(now.timestamp() - timestamp) > tolerance_seconds:
        raise SignatureError("webhook-timestamp outside the tolerance window")
    offered = [s.split(",", 1)[1] for s in signatures.split() if s.startswith("v1,")]
    for secret in secrets:
        try:
            expected = sign(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body)
        except SignatureError:
            continue  # one malformed secret of a rotation must not hide the others
        digest = expected.split(",", 1)[1]
        if any(hmac.compare_digest(digest, candidate) for candidate in offered):
            return
    raise SignatureError("no matching signature")
