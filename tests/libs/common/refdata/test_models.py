"""Field rules of the reference models: credit codes, receivers, category codes, service items,
Open311 clients."""

import re
from typing import Any

import pytest
from pydantic import ValidationError

from libs.common.refdata.models import (
    Category,
    Department,
    Open311Client,
    Person,
    ServiceItem,
    uscc_check_char,
)

VALID_USCC = "91350100M000100Y43"  # the worked example commonly cited for GB 32100-2015


def make_department(**changes: Any) -> dict[str, Any]:
    department: dict[str, Any] = {
        "code": VALID_USCC,
        "name": "示范市城市管理和综合执法局",
        "short_name": "城管",
        "short_code": "chengguan",
        "receiver": {
            "kind": "webhook",
            "allow_private": True,
            "url": "http://127.0.0.1:8090/departments/chengguan",
            "secret_env": "GRIDFLOW_WEBHOOK_SECRET_CHENGGUAN",
        },
    }
    return department | changes


def make_receiver(**changes: object) -> dict[str, Any]:
    return make_department(receiver=make_department()["receiver"] | changes)


def test_check_digit_of_a_published_example() -> None:
    assert uscc_check_char(VALID_USCC[:17]) == VALID_USCC[17]
    assert Department.model_validate(make_department()).code == VALID_USCC


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("91350100M000100Y44", "fails its check digit (expected '3', got '4')"),
        ("91350100M000200Y43", "fails its check digit"),
        ("91350100M000100Y4", "must be 18 characters, got 17"),
        ("91350100M00010OY43", "invalid characters ['O']"),
    ],
)
def test_a_corrupted_credit_code_is_refused(code: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(reason)):
        Department.model_validate(make_department(code=code))


@pytest.mark.parametrize(
    "receiver",
    [
        {"secret_env": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZI"},
        {"secret_env": "gridflow_lowercase"},
        {"url": "https://user:pass@example.org/hook"},
        {"url": "https://example.org/hook?token=abc"},
        {"url": "ftp://example.org/hook"},
        {"kind": "email"},
    ],
)
def test_a_receiver_must_name_its_secret_not_hold_it(receiver: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Department.model_validate(make_receiver(**receiver))


def test_an_unknown_field_such_as_an_inline_secret_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"receiver\.webhook\.secret"):
        Department.model_validate(make_receiver(secret="whsec_abc"))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            "http://169.254.169.254/latest/meta-data",
            "'169.254.169.254' is a cloud metadata service",
        ),
        ("http://metadata.google.internal/hook", "is a cloud metadata service"),
        ("http://100.100.100.200/hook", "is a cloud metadata service"),
        ("http://169.254.10.1/hook", "'169.254.10.1' is link-local"),
        ("http://[fe80::1]/hook", "'fe80::1' is link-local"),
        ("http://0.0.0.0:8090/hook", "'0.0.0.0' is the unspecified address"),
        ("http://10.1.2.3/hook", "private or loopback address; set allow_private: true"),
        ("http://127.0.0.1:8090/hook", "private or loopback address"),
        ("http://localhost:8090/hook", "private or loopback address"),
        ("http://[::1]/hook", "private or loopback address"),
    ],
)
def test_receiver_urls_that_could_reach_inside_are_refused(url: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(reason)) as refused:
        Department.model_validate(make_receiver(url=url, allow_private=False))
    assert "receiver.webhook.url" in str(refused.value)


def test_a_private_address_needs_allow_private_but_link_local_never_passes() -> None:
    allowed = Department.model_validate(make_receiver(url="http://10.1.2.3/hook"))
    assert str(allowed.receiver.url) == "http://10.1.2.3/hook"  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match="link-local"):
        Department.model_validate(make_receiver(url="http://169.254.1.1/hook"))
    public = Department.model_validate(
        make_receiver(url="https://hooks.example.org/gridflow", allow_private=False)
    )
    assert public.receiver.kind == "webhook"


def test_a_pull_receiver_has_neither_url_nor_secret() -> None:
    pull = Department.model_validate(make_department(receiver={"kind": "pull", "reporter": "none"}))
    assert pull.receiver.kind == "pull" and pull.receiver.reporter == "none"
    with pytest.raises(ValidationError):
        Department.model_validate(
            make_department(receiver={"kind": "pull", "url": "https://example.org/x"})
        )


def test_the_reporter_setting_defaults_to_masked_and_takes_three_values() -> None:
    assert Department.model_validate(make_department()).receiver.reporter == "masked"
    assert Department.model_validate(make_receiver(reporter="full")).receiver.reporter == "full"
    with pytest.raises(ValidationError, match="reporter"):
        Department.model_validate(make_receiver(reporter="everything"))


def test_a_receiver_may_name_the_partner_platform_it_is() -> None:
    assert Department.model_validate(make_department()).receiver.partner is None  # type: ignore[union-attr]
    bridge = Department.model_validate(make_receiver(partner="citycare"))
    assert bridge.receiver.partner == "citycare"  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match="partner"):
        Department.model_validate(make_receiver(partner="City Care"))
    with pytest.raises(ValidationError, match="partner"):
        Department.model_validate(make_department(receiver={"kind": "pull", "partner": "citycare"}))


def test_a_webhook_receiver_may_cap_its_own_concurrency() -> None:
    assert Department.model_validate(make_department()).receiver.concurrency is None  # type: ignore[union-attr]
    small = Department.model_validate(make_receiver(concurrency=2))
    assert small.receiver.concurrency == 2  # type: ignore[union-attr]
    for wrong in (0, 65, "many"):
        with pytest.raises(ValidationError, match="concurrency"):
            Department.model_validate(make_receiver(concurrency=wrong))
    with pytest.raises(ValidationError, match="concurrency"):
        Department.model_validate(make_department(receiver={"kind": "pull", "concurrency": 2}))


def test_a_rotation_names_a_second_variable() -> None:
    rotating = Department.model_validate(
        make_receiver(secret_env_next="GRIDFLOW_WEBHOOK_SECRET_CHENGGUAN_NEXT")
    )
    assert rotating.receiver.secret_envs == (  # type: ignore[union-attr]
        "GRIDFLOW_WEBHOOK_SECRET_CHENGGUAN",
        "GRIDFLOW_WEBHOOK_SECRET_CHENGGUAN_NEXT",
    )
    with pytest.raises(ValidationError, match="another variable"):
        Department.model_validate(
            make_receiver(secret_env_next="GRIDFLOW_WEBHOOK_SECRET_CHENGGUAN")
        )


@pytest.mark.parametrize("code", ["city", "City.garbage", "city.garbage.bags", "city.垃圾", "1.x"])
def test_category_codes_are_two_dotted_lowercase_words(code: str) -> None:
    with pytest.raises(ValidationError):
        Category(code=code, name="暴露垃圾")


def test_a_responsible_persons_name_has_1_to_20_characters() -> None:
    assert Person(name="王建国").title is None
    with pytest.raises(ValidationError):
        Person(name="")
    with pytest.raises(ValidationError):
        Person(name="王" * 21)


def test_models_are_frozen() -> None:
    person = Person(name="王建国")

    with pytest.raises(ValidationError):
        person.name = "李四"  # type: ignore[misc]


def make_service_item(**changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "code": "residence_permit",
        "name": "居住证办理",
        "category": "service.household",
        "documents": ["居民身份证", "近期免冠证件照片"],
        "time_limit_days": 15,
    }
    return item | changes


def test_a_service_item_on_the_spot_or_without_a_published_limit() -> None:
    assert ServiceItem.model_validate(make_service_item(time_limit_days=0)).time_limit_days == 0
    assert (
        ServiceItem.model_validate(make_service_item(time_limit_days=None)).time_limit_days is None
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"code": "Residence-Permit"},
        {"code": "r"},
        {"code": "r" * 42},
        {"category": "service"},
        {"documents": []},
        {"documents": [""]},
        {"time_limit_days": -1},
        {"name": ""},
    ],
)
def test_a_malformed_service_item_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ServiceItem.model_validate(make_service_item(**changes))


@pytest.mark.parametrize("key_env", ["o311_live_9fQwZr2LpX", "GRIDFLOW_", "gridflow_open311_key"])
def test_an_open311_client_names_its_key_never_holds_it(key_env: str) -> None:
    with pytest.raises(ValidationError, match="never the key itself"):
        Open311Client(id="resident-app", name="示范市民生通", key_env=key_env)
