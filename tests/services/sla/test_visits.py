"""Visit obligations (四必访), the pure part: periods, visits, overdue once, the register."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from libs.common.events import VisitFrequency
from libs.common.refdata import ConfigError, load_reference_data
from services.sla.visits import Resident, load_register, period_of, roll, start, visited
from tests.factories import REPO_CONFIG

TZ = "Asia/Shanghai"
REFDATA = load_reference_data(REPO_CONFIG)
F = VisitFrequency


def at(text: str) -> datetime:
    return datetime.fromisoformat(text + "+08:00")


@pytest.mark.parametrize(
    ("moment", "frequency", "begin", "end"),
    [
        ("2026-11-27 10:00", F.WEEKLY, "2026-11-23 00:00", "2026-11-30 00:00"),  # a Friday
        ("2026-11-23 00:00", F.WEEKLY, "2026-11-23 00:00", "2026-11-30 00:00"),  # Monday midnight
        ("2026-11-29 23:59", F.WEEKLY, "2026-11-23 00:00", "2026-11-30 00:00"),
        ("2026-12-31 23:00", F.WEEKLY, "2026-12-28 00:00", "2027-01-04 00:00"),
        ("2026-11-27 10:00", F.MONTHLY, "2026-11-01 00:00", "2026-12-01 00:00"),
        ("2026-12-15 10:00", F.MONTHLY, "2026-12-01 00:00", "2027-01-01 00:00"),
        ("2026-11-27 10:00", F.QUARTERLY, "2026-10-01 00:00", "2027-01-01 00:00"),
        ("2026-02-28 10:00", F.QUARTERLY, "2026-01-01 00:00", "2026-04-01 00:00"),
        ("2026-11-27 10:00", F.HALF_YEARLY, "2026-07-01 00:00", "2027-01-01 00:00"),
        ("2026-06-30 23:59", F.HALF_YEARLY, "2026-01-01 00:00", "2026-07-01 00:00"),
    ],
)
def test_periods_are_local_calendar_weeks_months_quarters_half_years(
    moment: str, frequency: VisitFrequency, begin: str, end: str
) -> None:
    assert period_of(at(moment), frequency, TZ) == (at(begin), at(end))


def test_a_utc_moment_falls_in_the_local_period() -> None:
    # Sunday 20:00 UTC is Monday 04:00 in Shanghai: the new week
    sunday_night = datetime.fromisoformat("2026-11-29T20:00:00+00:00")
    assert period_of(sunday_night, F.WEEKLY, TZ)[0] == at("2026-11-30 00:00")


ELDERLY = Resident("R0001", "elderly_alone", F.WEEKLY, "430281001001001", "W0001")


def test_a_visit_in_the_period_fulfils_it_and_the_next_period_starts_unfulfilled() -> None:
    obligation = start(ELDERLY, at("2026-11-24 09:00"), TZ)
    assert not obligation.fulfilled
    obligation = visited(obligation, at("2026-11-26 15:00"))
    assert obligation.fulfilled
    rolled, closed = roll(obligation, at("2026-11-30 00:00"), TZ)
    assert [(c.period_start, c.overdue) for c in closed] == [(at("2026-11-23 00:00"), None)]
    assert (rolled.period_start, rolled.fulfilled) == (at("2026-11-30 00:00"), False)
    # an older visit recorded late changes nothing
    assert visited(obligation, at("2026-11-24 10:00")).last_visit_at == at("2026-11-26 15:00")


def test_each_missed_period_is_overdue_once_to_the_workers_town() -> None:
    obligation = visited(start(ELDERLY, at("2026-11-10 09:00"), TZ), at("2026-11-11 10:00"))
    rolled, closed = roll(obligation, at("2026-12-01 08:00"), TZ)  # three weeks later
    overdue = [c.overdue for c in closed if c.overdue is not None]
    assert [c.period_start for c in closed] == [
        at("2026-11-09 00:00"),
        at("2026-11-16 00:00"),
        at("2026-11-23 00:00"),
    ]
    assert [(o.period_start, o.town, o.last_visit_at) for o in overdue] == [
        (at("2026-11-16 00:00"), "430281001", at("2026-11-11 10:00")),
        (at("2026-11-23 00:00"), "430281001", at("2026-11-11 10:00")),
    ]
    assert overdue[0].worker_id == "W0001" and overdue[0].at == at("2026-11-23 00:00")
    again, more = roll(rolled, at("2026-12-01 08:00"), TZ)
    assert more == [] and again == rolled


def test_the_shipped_register_loads() -> None:
    register = load_register(REPO_CONFIG / "visits.yaml", against=REFDATA)
    assert len(register.residents) == 6
    assert register.residents["R0006"].frequency is F.HALF_YEARLY


def test_register_mistakes_are_named_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "visits.yaml"
    path.write_text(
        "version: 1\n"
        "categories:\n"
        "  - {code: elderly_alone, name: 独居老人, every: weekly}\n"
        "  - {code: elderly_alone, name: 重复, every: monthly}\n"
        "residents:\n"
        "  - {id: R1, category: elderly_alone, unit_grid: '430281001001001', worker: W1}\n"
        "  - {id: R1, category: nobody, unit_grid: '430281999999999', worker: W1}\n"
    )
    with pytest.raises(ConfigError) as error:
        load_register(path, against=REFDATA)
    reasons = [str(issue).split("visits.yaml:")[1] for issue in error.value.issues]
    assert reasons == [
        "4: categories[1].code: duplicate category (first at line 3)",
        "7: residents[1].id: duplicate resident 'R1' (first at line 6)",
        "7: residents[1].category: unknown category 'nobody'",
        "7: residents[1].unit_grid: unknown unit grid 430281999999999",
    ]
    path.write_text("version: 1\ncategories:\n  - {code: x, name: y, every: daily}\n")
    with pytest.raises(ConfigError, match=r"visits.yaml:3: categories\[0\].every"):
        load_register(path, against=REFDATA)
