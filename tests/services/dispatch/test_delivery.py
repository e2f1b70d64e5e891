"""Pure delivery decisions: classification, the retry schedule, Retry-After, the circuit breaker,
what a department receives and the published schema of the webhook body."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from libs.common.events import CaseSubmitted, Reporter, ServiceRequest
from libs.common.refdata import WebhookReceiver, load_reference_data
from services.dispatch.delivery import (
    SCHEMA_PATH,
    Breaker,
    BreakerPhase,
    Outcome,
    WebhookPayload,
    breaker_after,
    breaker_phase,
    breaker_probing,
    classify,
    next_attempt_at,
    retry_after_seconds,
    webhook_body,
    webhook_json,
    webhook_schema,
)
from services.dispatch.webhooks import MissingSecretError, webhook_secrets
from tests.factories import REPO_CONFIG, department_secret
from tests.services.dispatch.test_flow import make_case

NOW = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[3]
DAY = 86400.0


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (410, Outcome.GONE),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (404, Outcome.RETRY),
        (None, Outcome.RETRY),
    ],
)
def test_classify(status: int | None, outcome: Outcome) -> None:
    assert classify(status) is outcome


def _delay(attempts: int, jitter: float, **kw: float) -> float:
    at = next_attempt_at(
        attempts=attempts,
        now=NOW,
        base_seconds=kw.get("base", 2.0),
        max_seconds=kw.get("cap", DAY),
        jitter=jitter,
        retry_after=kw.get("retry_after"),
    )
    return (at - NOW).total_seconds()


def test_the_schedule_doubles_from_seconds_and_is_capped_at_a_day() -> None:
    full = [_delay(n, 1.0) for n in range(1, 18)]
    assert full[:4] == [2.0, 4.0, 8.0, 16.0]
    assert full[15] == 65536.0
    assert full[16] == DAY  # attempt 17: the cap
    assert _delay(200, 1.0) == DAY  # no overflow far past the cap


def test_jitter_scales_the_delay_into_half_to_all_of_it() -> None:
    assert _delay(3, 0.0) == 4.0
    assert _delay(3, 0.5) == 6.0
    assert _delay(3, 1.0) == 8.0
    with pytest.raises(ValueError, match="jitter"):
        _delay(3, 1.5)


def test_retry_after_wins_and_is_clamped_to_base_and_cap() -> None:
    assert _delay(1, 0.0, retry_after=120.0) == 120.0
    assert _delay(1, 0.0, retry_after=0.0) == 2.0  # never sooner than the base
    assert _delay(1, 0.0, retry_after=10 * DAY) == DAY  # never later than the cap


@pytest.mark.parametrize(
    ("status", "header", "seconds"),
    [
        (429, "120", 120.0),
        (503, " 30 ", 30.0),
        (429, "Fri, 27 Nov 2026 08:05:00 GMT", 300.0),
        (503, "Fri, 27 Nov 2026 07:00:00 GMT", 0.0),  # in the past: now
        (429, "soon", None),
        (429, "-5", None),
        (429, None, None),
        (500, "120", None),  # only 429 and 503 are honoured
    ],
)
def test_retry_after_is_seconds_or_an_http_date(
    status: int, header: str | None, seconds: float | None
) -> None:
    assert retry_after_seconds(status, header, now=NOW) == seconds


def _fail(breaker: Breaker, now: datetime = NOW) -> Breaker:
    return breaker_after(
        breaker,
        succeeded=False,
        now=now,
        threshold=5,
        cooldown_seconds=60,
        max_cooldown_seconds=3600,
    )


def test_the_breaker_opens_after_n_consecutive_failures() -> None:
    breaker = Breaker()
    for _ in range(4):
        breaker = _fail(breaker)
        assert breaker_phase(breaker, now=NOW) is BreakerPhase.CLOSED
    breaker = _fail(breaker)
    assert breaker.open_until == NOW + timedelta(seconds=60)
    assert breaker_phase(breaker, now=NOW + timedelta(seconds=59)) is BreakerPhase.OPEN
    assert breaker_phase(breaker, now=NOW + timedelta(seconds=60)) is BreakerPhase.HALF_OPEN


def test_a_success_resets_the_count() -> None:
    breaker = _fail(_fail(_fail(_fail(Breaker()))))
    breaker = breaker_after(
        breaker,
        succeeded=True,
        now=NOW,
        threshold=5,
        cooldown_seconds=60,
        max_cooldown_seconds=3600,
    )
    assert breaker == Breaker()
    assert breaker_phase(_fail(breaker), now=NOW) is BreakerPhase.CLOSED


def test_a_failed_probe_doubles_the_cooldown_up_to_the_maximum() -> None:
    breaker = Breaker(failures=5, open_until=NOW, cooldown_seconds=60)
    cooldowns = []
    now = NOW
    for _ in range(8):
        probing = breaker_probing(breaker, now=now, lease_seconds=40)
        assert breaker_phase(probing, now=now) is BreakerPhase.OPEN  # no second probe
        breaker = _fail(probing, now)
        cooldowns.append(breaker.cooldown_seconds)
        assert breaker.open_until == now + timedelta(seconds=breaker.cooldown_seconds)
        assert not breaker.probing
        now = breaker.open_until
    assert cooldowns == [120, 240, 480, 960, 1920, 3600, 3600, 3600]


def test_a_straggler_failing_while_open_does_not_extend_the_cooldown() -> None:
    breaker = Breaker(failures=5, open_until=NOW + timedelta(seconds=60), cooldown_seconds=60)
    after = _fail(breaker)
    assert after.open_until == breaker.open_until and after.failures == 6


def _proxy_case() -> CaseSubmitted:
    case = make_case()
    return case.model_copy(
        update={
            "reporter": Reporter(
                kind="resident", name="李秀英", phone="13800138000", id_number="110105199001010123"
            ),
            "beneficiary": Reporter(kind="resident", name="王大爷", phone="13900139000"),
            "service": ServiceRequest(item="elderly_subsidy", item_name="高龄津贴申领"),
        }
    )


def test_the_reporter_and_beneficiary_are_masked_by_default() -> None:
    body = webhook_body(_proxy_case(), delivery_id="msg_1", department="chengguan")
    assert body["case"]["reporter"]["name"] == "李**"
    assert body["case"]["reporter"]["phone"] == "138****8000"
    assert body["case"]["reporter"]["id_number"] == "110105********0123"
    assert body["case"]["beneficiary"]["name"] == "王**"
    assert body["case"]["beneficiary"]["phone"] == "139****9000"


def test_full_shares_them_and_none_removes_them() -> None:
    case = _proxy_case()
    full = webhook_body(case, delivery_id="msg_1", department="c", sharing="full")
    assert full["case"]["reporter"]["phone"] == "13800138000"
    assert full["case"]["beneficiary"]["name"] == "王大爷"
    none = webhook_body(case, delivery_id="msg_1", department="c", sharing="none")
    assert "reporter" not in none["case"] and "beneficiary" not in none["case"]
    assert none["case"]["case_id"] == full["case"]["case_id"]


def test_every_body_validates_against_the_payload_model() -> None:
    for sharing in ("full", "masked", "none"):
        body = webhook_body(_proxy_case(), delivery_id="msg_1", department="c", sharing=sharing)
        assert WebhookPayload.model_validate(body).type == "case.assigned"


def test_the_stored_text_is_the_body_and_revalidates_unchanged() -> None:
    case = _proxy_case()
    for sharing in ("full", "masked", "none"):
        args = {"delivery_id": "msg_1", "department": "c", "sharing": sharing}
        text = webhook_json(case, **args)  # type: ignore[arg-type]
        assert json.loads(text) == webhook_body(case, **args)  # type: ignore[arg-type]
        again = WebhookPayload.model_validate_json(text)
        assert again.model_dump_json(exclude_none=True) == text


def test_the_committed_schema_is_the_generated_one() -> None:
    assert (ROOT / SCHEMA_PATH).read_text() == webhook_schema()


def test_webhook_secrets_list_each_departments_secrets_and_name_what_is_missing() -> None:
    refdata = load_reference_data(REPO_CONFIG)
    environ = {
        d.receiver.secret_env: department_secret(code)
        for code, d in refdata.departments.items()
        if isinstance(d.receiver, WebhookReceiver)
    }
    assert webhook_secrets(refdata, environ)["chengguan"] == [department_secret("chengguan")]
    broken = dict(environ)
    del broken["GRIDFLOW_WEBHOOK_SECRET_YINGJI"]
    broken["GRIDFLOW_WEBHOOK_SECRET_XIAOFANG"] = "not-a-secret-at-all"
    with pytest.raises(MissingSecretError) as refused:
        webhook_secrets(refdata, broken)
    message = str(refused.value)
    assert "GRIDFLOW_WEBHOOK_SECRET_YINGJI is not set (department yingji)" in message
    assert "GRIDFLOW_WEBHOOK_SECRET_XIAOFANG is not a usable secret" in message
    assert "not-a-secret-at-all" not in message  # never the value
