"""`python -m bench.worktime`: calls per second of the working-time functions (libs/common/worktime.py).

Each case runs the function over 100,000 precomputed random arguments (seeded), best of
`--rounds` rounds, on one core. Not part of the test suite; figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from libs.common.worktime import (
    ChinaCalendar,
    OfficeHours,
    add_working_days,
    add_working_hours,
    working_time_between,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
YEAR_2026 = datetime(2026, 1, 1, tzinfo=SHANGHAI)
SECONDS_2026 = 365 * 86400


def _starts(rng: random.Random, count: int) -> list[datetime]:
    return [YEAR_2026 + timedelta(seconds=rng.randrange(SECONDS_2026)) for _ in range(count)]


def _rate(run: Callable[[], None], calls: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return calls / best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worktime", description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best counts")
    args = parser.parse_args(argv)
    calls, rounds = args.calls, args.rounds

    calendar = ChinaCalendar()
    office = OfficeHours.parse(["08:30-12:00", "14:00-17:30"])
    rng = random.Random(2026)  # noqa: S311  # reproducible arguments, not secrets
    starts = _starts(rng, calls)
    ends = [start + timedelta(seconds=rng.randrange(10 * 86400)) for start in starts]
    four_hours = timedelta(hours=4)

    def hours() -> None:
        for start in starts:
            add_working_hours(start, four_hours, calendar=calendar, office=office)

    def days() -> None:
        for start in starts:
            add_working_days(start, 3, calendar=calendar)

    def between() -> None:
        for start, end in zip(starts, ends, strict=True):
            working_time_between(start, end, calendar=calendar, office=office)

    cases = [
        ("add_working_hours (4 h, random starts over 2026)", hours),
        ("add_working_days (3 days, random starts over 2026)", days),
        ("working_time_between (random spans up to 10 days)", between),
    ]
    print(f"Python {platform.python_version()} on {platform.machine()}, {calls:,} calls × {rounds}")
    for name, run in cases:
        print(f"{name:55} {_rate(run, calls, rounds):>12,.0f} calls/s")


if __name__ == "__main__":
    main()
