"""Assessments, the pure part: the published city report reproduced exactly, each formula of
docs/sla.md on a small example, rounding, periods, and grouping by level."""

from __future__ import annotations

from datetime import datetime

import pytest

from services.sla.assessments import Holding, Period, VisitPeriod, assess, assess_all, rate

NOVEMBER = Period.parse("2026-11")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text + "+08:00")


def holding(
    stage: str = "handle",
    *,
    department: str | None = "chengguan",
    unit_grid: str | None = "430281001001001",
    started: str = "2026-11-02 09:00",
    due: str = "2026-11-10 09:00",
    stopped: str | None = None,
    outcome: str | None = None,
    on_time: bool = True,
    extended: bool = False,
    hours: float | None = None,
) -> Holding:
    return Holding(
        stage=stage,
        department=department,
        unit_grid=unit_grid,
        started_at=at(started),
        due_at=at(due),
        stopped_at=at(stopped) if stopped else None,
        outcome=outcome,
        on_time=on_time,
        extended=extended,
        working_hours=hours,
    )


def test_the_published_city_report_is_reproduced_exactly() -> None:
    # DOMAIN.md §5: 972 due for closure, 911 closed (93.72 %), 737 on time (75.82 %)
    on_time = [holding(stopped="2026-11-09 15:00", outcome="resolved") for _ in range(737)]
    late = [
        holding(stopped="2026-11-12 15:00", outcome="resolved", on_time=False) for _ in range(174)
    ]
    open_past_deadline = [holding(due="2026-11-20 09:00") for _ in range(61)]
    report = assess(NOVEMBER, "city", "430281", on_time + late + open_past_deadline)
    assert (report.due, report.closed, report.closed_on_time) == (972, 911, 737)
    assert (report.closure_rate, report.on_time_closure_rate) == (93.72, 75.82)


def test_what_counts_as_due_in_a_period() -> None:
    cases = [
        holding(stopped="2026-11-05 10:00", outcome="resolved"),  # resolved in November
        holding(
            due="2026-10-28 09:00", stopped="2026-11-03 10:00", outcome="resolved", on_time=False
        ),
        holding(due="2026-11-20 09:00"),  # deadline in November, still held
        holding(due="2026-11-20 09:00", stopped="2026-11-25 09:00", outcome="returned"),  # after it
        holding(due="2026-11-20 09:00", stopped="2026-11-15 09:00", outcome="returned"),  # before
        holding(due="2026-12-05 09:00"),  # not due yet
        holding(due="2026-11-20 09:00", stopped="2026-12-02 09:00", outcome="resolved"),  # December
    ]
    report = assess(NOVEMBER, "department", "chengguan", cases)
    assert (report.due, report.closed, report.closed_on_time) == (4, 2, 1)


def test_the_other_rates() -> None:
    holdings = [
        holding("sign", stopped="2026-11-02 09:20", outcome="signed"),
        holding(
            "sign",
            stopped="2026-11-02 11:00",
            outcome="signed",
            on_time=False,
            started="2026-11-02 09:00",
            due="2026-11-02 09:30",
        ),
        holding(
            "sign",
            started="2026-11-03 09:00",
            stopped="2026-11-03 09:10",
            outcome="returned",
            due="2026-11-03 09:30",
        ),
        holding(stopped="2026-11-05 10:00", outcome="resolved", hours=6.0, extended=True),
        holding(stopped="2026-11-06 10:00", outcome="resolved", hours=10.0),
        holding("verify", stopped="2026-11-06 12:00", outcome="rework", due="2026-11-07 12:00"),
        holding("verify", stopped="2026-11-07 12:00", outcome="verified", due="2026-11-08 12:00"),
    ]
    visits = [
        VisitPeriod("W0001", "430281001001001", at("2026-11-09 00:00"), True),
        VisitPeriod("W0001", "430281001001001", at("2026-11-16 00:00"), False),
        VisitPeriod("W0001", "430281001001001", at("2026-11-23 00:00"), True),
        VisitPeriod("W0001", "430281001001001", at("2026-10-26 00:00"), False),  # October
    ]
    r = assess(NOVEMBER, "town", "430281001", holdings, visits)
    assert (r.sign_due, r.signed_on_time, r.on_time_sign_rate) == (2, 1, 50.0)
    assert (r.resolved, r.reworked, r.rework_rate) == (2, 1, 50.0)
    assert (r.handled, r.extended, r.extension_rate) == (2, 1, 50.0)
    assert (r.assigned, r.returned, r.return_rate) == (3, 1, 33.33)
    assert r.average_handling_hours == 8.0
    assert (r.visits_due, r.visits_done, r.visit_rate) == (3, 2, 66.67)
    assert r.satisfaction_rate is None


def test_an_empty_group_has_null_rates() -> None:
    r = assess(NOVEMBER, "city", "430281", [])
    assert (r.due, r.closure_rate, r.on_time_sign_rate, r.visit_rate) == (0, None, None, None)
    assert r.average_handling_hours is None


@pytest.mark.parametrize(
    ("part", "whole", "expected"),
    [
        (1, 3, 33.33),
        (2, 3, 66.67),
        (1, 8, 12.5),
        (1, 200, 0.5),
        (1, 400, 0.25),
        (5, 5, 100.0),
        (0, 7, 0.0),
        (1, 0, None),
    ],
)
def test_rates_round_half_up(part: int, whole: int, expected: float | None) -> None:
    assert rate(part, whole) == expected
    assert rate(9115, 10000) == 91.15 and rate(1, 8000) == 0.01  # half-up, not banker's


def test_periods_are_local_months_and_quarters() -> None:
    assert (NOVEMBER.start, NOVEMBER.end) == (at("2026-11-01 00:00"), at("2026-12-01 00:00"))
    q4 = Period.parse("2026-Q4")
    assert (q4.start, q4.end) == (at("2026-10-01 00:00"), at("2027-01-01 00:00"))
    assert Period.parse("2026-12").end == at("2027-01-01 00:00")
    assert Period.of(at("2026-12-01 00:00")).previous().name == "2026-11"
    assert Period.of(at("2027-01-05 10:00"), quarter=True).previous().name == "2026-Q4"
    # the first hours of a month in Beijing are still the month before in UTC
    assert Period.of(datetime.fromisoformat("2026-11-30T17:00:00+00:00")).name == "2026-12"
    for bad in ("2026-13", "2026-Q5", "26-11", "2026-1"):
        with pytest.raises(ValueError, match=r"month|quarter"):
            Period.parse(bad)


def test_grouping_by_level() -> None:
    holdings = [
        holding(stopped="2026-11-05 10:00", outcome="resolved"),
        holding(
            department="yingji",
            unit_grid="430281002001001",
            stopped="2026-11-05 10:00",
            outcome="resolved",
        ),
        holding(
            department="yingji", unit_grid=None, stopped="2026-11-05 10:00", outcome="resolved"
        ),
    ]
    visits = [VisitPeriod("W0003", "430281002001001", at("2026-11-09 00:00"), False)]
    city = assess_all(NOVEMBER, "city", holdings, visits, city="430281")
    assert [(r.node, r.closed, r.visits_due) for r in city] == [("430281", 3, 1)]
    towns = assess_all(NOVEMBER, "town", holdings, visits, city="430281")
    assert [(r.node, r.closed, r.visits_due) for r in towns] == [
        ("430281001", 1, 0),
        ("430281002", 1, 1),
    ]
    departments = assess_all(NOVEMBER, "department", holdings, visits, city="430281")
    assert [(r.node, r.closed) for r in departments] == [("chengguan", 1), ("yingji", 2)]
    workers = assess_all(NOVEMBER, "worker", holdings, visits, city="430281")
    assert [(r.node, r.visits_due, r.visit_rate) for r in workers] == [("W0003", 1, 0.0)]
    assert [r.node for r in assess_all(NOVEMBER, "unit_grid", holdings, visits, city="430281")] == [
        "430281001001001",
        "430281002001001",
    ]
