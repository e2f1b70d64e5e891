"""Standard Webhooks signatures: a known answer computed from the spec, and every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from libs.common.signing import (
    DEFAULT_TOLERANCE_SECONDS,
    SignatureError,
    sign,
    signed_headers,
    verify,
)

KEY = b"gridflow-department-test-key-32b"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
NEXT_SECRET = "whsec_" + base64.b64encode(b"the-rotated-in-key-for-chengguan").decode()
MSG_ID = "E01JDQ7Y8XW2N3K4M5P6Q7R8S9T"
NOW = datetime(2025, 3, 1, 0, 30, tzinfo=UTC)
BODY = '{"case_id":"C01JDQ7Y8XW2N3K4M5P6Q7R8S9T","title":"路边暴露垃圾"}'.encode()


def expected_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The spec's definition, written out independently of the code under test."""
    content = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def test_sign_gives_the_known_answer_of_the_spec() -> None:
    timestamp = int(NOW.timestamp())

    signature = sign(secret=SECRET, msg_id=MSG_ID, timestamp=timestamp, body=BODY)

    assert signature == expected_signature(KEY, MSG_ID, timestamp, BODY)


def test_sign_matches_the_published_example() -> None:
    # the example of the Standard Webhooks / Svix documentation
    signature = sign(
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek",
        timestamp=1614265330,
        body=b'{"test": 2432232314}',
    )

    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_verify_accepts_an_independently_computed_signature() -> None:
    timestamp = int(NOW.timestamp())
    headers = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": expected_signature(KEY, MSG_ID, timestamp, BODY),
    }

    verify(secrets=[SECRET], headers=headers, body=BODY, now=NOW)


def test_signed_headers_verify_within_the_tolerance() -> None:
    headers = signed_headers(secret=SECRET, msg_id=MSG_ID, now=NOW, body=BODY)

    assert headers["webhook-id"] == MSG_ID
    assert headers["webhook-timestamp"] == str(int(NOW.timestamp()))
    for skew in (0, DEFAULT_TOLERANCE_SECONDS, -DEFAULT_TOLERANCE_SECONDS):
        verify(secrets=[SECRET], headers=headers, body=BODY, now=NOW + timedelta(seconds=skew))


def test_verify_refuses_a_wrong_secret() -> None:
    headers = signed_headers(secret=SECRET, msg_id=MSG_ID, now=NOW, body=BODY)

    with pytest.raises(SignatureError, match="no matching signature"):
        verify(secrets=[NEXT_SECRET], headers=headers, body=BODY, now=NOW)


@pytest.mark.parametrize(
    "tampered", [BODY.replace("垃圾".encode(), "垃坂".encode()), BODY + b" ", b""]
)
def test_verify_refuses_a_tampered_body(tampered: bytes) -> None:
    headers = signed_headers(secret=SECRET, msg_id=MSG_ID, now=NOW, body=BODY)

    with pytest.raises(SignatureError, match="no matching signature"):
        verify(secrets=[SECRET], headers=headers, body=tampered, now=NOW)


def test_verify_refuses_a_changed_id_or_timestamp() -> None:
    headers = signed_headers(secret=SECRET, msg_id=MSG_ID, now=NOW, body=BODY)
    later = str(int(NOW.timestamp()) + 1)

    with pytest.raises(SignatureError, match="no matching signature"):
        verify(secrets=[SECRET], headers={**headers, "webhook-id": "E2"}, body=BODY, now=NOW)
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(
            secrets=[SECRET], headers={**headers, "webhook-timestamp": later}, body=BODY, now=NOW
        )


@pytest.mark.parametrize("skew", [DEFAULT_TOLERANCE_SECONDS + 1, -DEFAULT_TOLERANCE_SECONDS - 1])
def test_verify_refuses_a_timestamp_beyond_the_tolerance(skew: int) -> None:
    headers = signed_headers(secret=SECRET, msg_id=MSG_ID, now=NOW, body=BODY)

    with pytest.raises(SignatureError, match="outside the tolerance window"):
        verify(secrets=[SECRET], headers=headers, body=BODY, now=NOW + timedelta(seconds=skew))


def test_verify_honours_a_custom_tolerance() -> None:
    headers = signed_headers(secret=SECRET, msg_id=MSG_ID, now=NOW, body=BODY)
    later = NOW + timedelta(seconds=31)

    with pytest.raises(SignatureError, match="outside the tolerance window"):
        verify(secrets=[SECRET], headers=headers, body=BODY, now=later, tolerance_seconds=30)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_verify_refuses_missing_headers(missing: str) -> None:
    headers = signed_headers(secret=SECRET, msg_id=MSG_ID, now=NOW, body=BODY)
    del headers[missing]

    with pytest.raises(SignatureError, match="missing webhook-id, webhook-timestamp"):
        verify(secrets=[SECRET], headers=headers, body=BODY, now=NOW)


def test_verify_refuses_a_timestamp_that_is_not_an_integer() -> None:
    headers = signed_headers(secret=SECRET, msg_id=MSG_ID, now=NOW, body=BODY)

    with pytest.raises(SignatureError, match="not an integer"):
        verify(
            secrets=[SECRET],
            headers={**headers, "webhook-timestamp": "2025-03-01T00:30:00Z"},
            body=BODY,
            now=NOW,
        )


def test_verify_refuses_signatures_of_another_version() -> None:
    headers = signed_headers(secret=SECRET, msg_id=MSG_ID, now=NOW, body=BODY)
    v2 = headers["webhook-signature"].replace("v1,", "v2,")

    with pytest.raises(SignatureError, match="no matching signature"):
        verify(secrets=[SECRET], headers={**headers, "webhook-signature": v2}, body=BODY, now=NOW)


def test_both_secrets_verify_during_a_rotation() -> None:
    for signing_secret in (SECRET, NEXT_SECRET):
        headers = signed_headers(secret=signing_secret, msg_id=MSG_ID, now=NOW, body=BODY)
        verify(secrets=[SECRET, NEXT_SECRET], headers=headers, body=BODY, now=NOW)


def test_a_sender_may_sign_with_both_secrets_during_a_rotation() -> None:
    timestamp = int(NOW.timestamp())
    old = sign(secret=SECRET, msg_id=MSG_ID, timestamp=timestamp, body=BODY)
    new = sign(secret=NEXT_SECRET, msg_id=MSG_ID, timestamp=timestamp, body=BODY)
    headers = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"{old} {new}",
    }

    verify(secrets=[NEXT_SECRET], headers=headers, body=BODY, now=NOW)
    verify(secrets=[SECRET], headers=headers, body=BODY, now=NOW)


def test_a_secret_that_is_not_base64_is_refused() -> None:
    with pytest.raises(SignatureError, match="not base64"):
        sign(secret="whsec_not base64!", msg_id=MSG_ID, timestamp=0, body=BODY)


def test_a_rotation_sends_two_signatures_and_either_secret_verifies() -> None:
    new_secret = "whsec_" + base64.b64encode(b"the-next-secret-of-32-bytes!!!!!").decode()
    headers = signed_headers(secret=SECRET, msg_id=MSG_ID, now=NOW, body=BODY, also=[new_secret])
    assert len(headers["webhook-signature"].split(" ")) == 2
    verify(secrets=[new_secret], headers=headers, body=BODY, now=NOW)
    verify(secrets=[SECRET], headers=headers, body=BODY, now=NOW)
