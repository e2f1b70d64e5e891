"""sla.yaml: the shipped policies load, every mistake is reported as file:line: reason, and the
first matching policy decides."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.common.events import SlaStage, Urgency
from libs.common.refdata import ConfigError, load_reference_data
from services.sla.policies import ClockKind, load_policies, main, parse_duration
from tests.factories import REPO_CONFIG

REFDATA = load_reference_data(REPO_CONFIG)
GOOD = """\
version: 2
office_hours: {hours: ["08:30-12:00", "14:00-17:30"]}
policies:
  - id: garbage
    match: {category: city.garbage}
    clock: working_hours
    stages: {sign: 30m, handle: 4h}
  - id: default
    clock: working_days
    stages: {handle: 5d}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sla.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load_policies(write(tmp_path, text), against=REFDATA)
    return [str(issue) for issue in error.value.issues]


def test_the_shipped_policies_load_and_the_first_match_decides() -> None:
    policies = load_policies(REPO_CONFIG / "sla.yaml", against=REFDATA)
    assert policies.select("city.garbage", Urgency.ROUTINE).id == "garbage"
    assert policies.select("city.garbage", Urgency.EMERGENCY).id == "emergency"
    assert policies.select("safety.fire", Urgency.ROUTINE).id == "fire-and-hazard"
    assert policies.select("other.general", Urgency.URGENT).id == "urgent"
    assert policies.select("other.general", Urgency.ROUTINE).id == "default"
    policy, limits = policies.limits("city.illegal_building", Urgency.ROUTINE, SlaStage.HANDLE)
    assert [(limit.name, limit.clock) for limit in limits] == [
        ("stop", ClockKind.WORKING_HOURS),
        ("penalty", ClockKind.WORKING_DAYS),
        ("demolition", ClockKind.WORKING_DAYS),
    ]
    assert policy.tag == f"illegal-building@{policies.version}"
    assert policies.version.startswith("v1-")


def test_a_stage_without_a_limit_is_not_timed(tmp_path: Path) -> None:
    policies = load_policies(write(tmp_path, GOOD), against=REFDATA)
    assert policies.limits("other.general", Urgency.ROUTINE, SlaStage.SIGN)[1] == ()
    assert policies.select("city.garbage", Urgency.ROUTINE).warnings == (0.5, 0.8)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", 1800),
        ("4h", 14400),
        ("1.5h", 5400),
        ("7d", 604800),
    ],
)
def test_durations(text: str, expected: int) -> None:
    assert parse_duration(text).total_seconds() == expected


@pytest.mark.parametrize("text", ["4", "4 h", "-1h", "0m", "3w", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("id: default", "id: garbage"),
            "sla.yaml:8: policies[1].id: duplicate policy id 'garbage'",
        ),
        (
            ("city.garbage", "city.nothing"),
            "sla.yaml:5: policies[0].match.category: unknown category",
        ),
        (
            ("handle: 5d", "handle: 5h"),
            "sla.yaml:10: policies[1].stages.handle[0].limit: a working_days",
        ),
        (
            ("handle: 4h", "handle: 4d"),
            "sla.yaml:7: policies[0].stages.handle[0].limit: a working_hours",
        ),
        (("sign: 30m", "sign: 30x"), "sla.yaml:7: policies[0].stages.sign[0].limit: "),
        (
            ("14:00-17:30", "11:00-17:30"),
            "sla.yaml:2: office_hours: office hours '11:00-17:30' overlap",
        ),
        (
            ("  - id: default\n", "  - id: default\n    match: {urgency: [routine]}\n"),
            "policies[1].match: the last policy must match every case",
        ),
        (("clock: working_hours", "clock: sometimes"), "sla.yaml:6: policies[0].clock: "),
    ],
)
def test_every_mistake_is_named_with_its_line(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    found = problems(tmp_path, GOOD.replace(*change, 1))
    assert any(expected in issue for issue in found), found


def test_a_ladder_must_climb(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    stages: {sign: 30m, handle: 4h}\n",
        "    stages: {sign: 30m, handle: 4h}\n"
        "    escalation: [{after: 4h, to: town}, {after: 2h, to: city}]\n",
    )
    assert any("escalation rungs must come later" in issue for issue in problems(tmp_path, text))


def test_the_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(REPO_CONFIG)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: 9 policies (version v1-") and out.endswith("; 6 key residents\n")
    bad = write(tmp_path, GOOD.replace("city.garbage", "city.nothing"))
    assert main(["check", "--config", str(REPO_CONFIG), str(bad)]) == 1
    assert "unknown category 'city.nothing'" in capsys.readouterr().err
