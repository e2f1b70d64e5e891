"""China's working calendar and working-time arithmetic for time limits (DOMAIN.md §4).

Pure: plain values in, values out, no clock reads; the only I/O is `load_calendar`, which reads
`config/calendar.yaml`. See docs/calendar.md for the operator's side.

The calendar
    `ChinaCalendar` knows each day's kind: a statutory holiday (HOLIDAY, weekends inside a holiday
    span included), a weekend made a working day (MAKEUP, 调休), a local closure (CLOSURE: offices
    shut, typhoon …; it wins over every other kind), an ordinary WORKDAY or a REST day (weekend).
    Working days are WORKDAY and MAKEUP. The official dates of 2004–2026 come from the
    `chinese-calendar` package; later years from configuration (`YearDates`, one State Council
    notice per year, usually published in November). A year known to neither is *not* guessed: its
    Monday to Friday count as working days and every deadline that looked at one of its days is
    `provisional=True`, so callers can flag it and recompute when the year's dates arrive
    (`with_year`).

Working hours (`add_working_hours`)
    `amount` is consumed only inside the office windows of working days, on the wall clock of the
    office timezone. A start outside a window waits for the next window; a result that lands
    exactly on a window's end stays there (12:00, not 14:00). `amount == 0` returns `start`
    unchanged and not provisional.

Working days (`add_working_days`)
    From a start on a working day: the same local time on the n-th working day after the start's
    local date (3 working days after Wed 30 Sep 2026 10:00 is Sat 10 Oct 2026 10:00, a make-up
    day). From a start on a non-working day: the end (the next midnight) of the n-th working day
    after that date. `days == 0` returns `start` unchanged.

`working_time_between(a, b)` is the office time of working days in [a, b) (zero when b <= a); it
is the inverse of `add_working_hours`. `add_wall_clock` is plain 7×24 elapsed time.

Every function refuses naive datetimes and negative amounts (ValueError). Results are in the
office (or given) timezone. A deadline is provisional when any day examined while counting — from
the start's local date to the deadline's — lies in a year whose official dates are unknown.

Speed: each calendar keeps a table of days (working or not, official year or not) with running
counts, so the n-th working day is one bisection and whole days are jumped, never iterated.
"""

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import cache
from itertools import accumulate, pairwise
from pathlib import Path
from types import MappingProxyType
from zoneinfo import ZoneInfo

import chinese_calendar

from libs.common.refdata.loader import ConfigIssue
from libs.common.refdata.timewindows import MINUTES_PER_DAY, minute_ranges, zone
from libs.common.refdata.yamlsource import YamlDocument, YamlSourceError, parse_yaml

_US_PER_MINUTE = 60_000_000
_US_PER_DAY = MINUTES_PER_DAY * _US_PER_MINUTE
_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_TABLE_MARGIN_YEARS = 2  # a table is built this far past the latest day asked for


class DayKind(StrEnum):
    WORKDAY = "workday"
    REST = "rest"  # weekend
    HOLIDAY = "holiday"  # statutory holiday (weekends inside its span included)
    MAKEUP = "makeup"  # 调休: a weekend day made a working day
    CLOSURE = "closure"  # local closure: offices shut on what would be a working day


_WORKING_KINDS = frozenset({DayKind.WORKDAY, DayKind.MAKEUP})


def _date_problem(year: int, day: object, *, makeup: bool) -> str | None:
    """Why `day` cannot be one of `year`'s holidays (or make-up days), or None."""
    if type(day) is not date:
        return f"{day!r} is not a date; write it as YYYY-MM-DD"
    if day.year != year:
        return f"{day.isoformat()} is not in {year}"
    if makeup and day.weekday() < 5:
        return (
            f"make-up day {day.isoformat()} is a {_WEEKDAY_NAMES[day.weekday()]};"
            " make-up working days are weekend days"
        )
    return None


@dataclass(frozen=True)
class YearDates:
    """One year's official dates, as the State Council notice publishes them."""

    year: int
    holidays: frozenset[date]
    makeup_days: frozenset[date]
    source: str = ""

    def __post_init__(self) -> None:
        problems = [
            problem
            for makeup, days in ((False, self.holidays), (True, self.makeup_days))
            for day in sorted(days)
            if (problem := _date_problem(self.year, day, makeup=makeup))
        ]
        problems += [
            f"{day.isoformat()} is both a holiday and a make-up day"
            for day in sorted(self.holidays & self.makeup_days)
        ]
        if problems:
            raise ValueError(f"official dates of {self.year}: " + "; ".join(problems))

    def differences(self, other: "YearDates") -> str:
        """What `other` lists that this does not and the reverse, in one line ("" if none)."""
        parts = []
        for name, mine, theirs in (
            ("holidays", self.holidays, other.holidays),
            ("make-up days", self.makeup_days, other.makeup_days),
        ):
            if extra := sorted(theirs - mine):
                parts.append(f"{name} not in it: {_dates_text(extra)}")
            if missing := sorted(mine - theirs):
                parts.append(f"{name} missing: {_dates_text(missing)}")
        return "; ".join(parts)


def _dates_text(days: Sequence[date]) -> str:
    shown = ", ".join(day.isoformat() for day in days[:4])
    return shown + (f" and {len(days) - 4} more" if len(days) > 4 else "")


@cache
def _package_years() -> Mapping[int, YearDates]:
    """The years the chinese-calendar package knows, as YearDates."""
    holidays: dict[int, set[date]] = {}
    makeup: dict[int, set[date]] = {}
    for day in chinese_calendar.holidays:
        holidays.setdefault(day.year, set()).add(day)
    for day in chinese_calendar.workdays:
        makeup.setdefault(day.year, set()).add(day)
    source = f"chinese-calendar {chinese_calendar.__version__}"
    return MappingProxyType(
        {
            year: YearDates(
                year, frozenset(holidays[year]), frozenset(makeup.get(year, ())), source
            )
            for year in range(min(holidays), max(holidays) + 1)
        }
    )


@dataclass(frozen=True, slots=True)
class _DayTable:
    """Facts of the days first .. first + len(working) - 1 (proleptic ordinals)."""

    first: int
    working: bytes  # 1: a working day
    working_before: list[int]  # [i]: working days among the first i days; len(working) + 1 items
    provisional_before: list[int]  # [i]: days of non-official years among the first i days

    @property
    def last(self) -> int:
        return self.first + len(self.working) - 1


class ChinaCalendar:
    """The statutory Chinese working calendar, with configured years and local closures.

    Satisfies `libs.common.refdata.timewindows.WorkingCalendar`. Immutable: `with_year` returns
    a new calendar.
    """

    def __init__(
        self,
        *,
        official: Mapping[int, YearDates] | None = None,
        closures: Mapping[date, str] | None = None,
        use_package: bool = True,
    ) -> None:
        package = _package_years() if use_package else {}
        configured = dict(official or {})
        for year, dates in configured.items():
            if dates.year != year:
                raise ValueError(f"official dates of {dates.year} given as the year {year}")
            known = package.get(year)
            if known is not None and (differences := known.differences(dates)):
                raise ValueError(
                    f"{year}: the chinese-calendar package already has the official dates of"
                    f" {year} and these differ ({differences})"
                )
        self._use_package = use_package
        self._configured: Mapping[int, YearDates] = MappingProxyType(configured)
        self._years: Mapping[int, YearDates] = {**package, **configured}
        self._holidays = frozenset(day for dates in self._years.values() for day in dates.holidays)
        self._makeup = frozenset(day for dates in self._years.values() for day in dates.makeup_days)
        self._closures: Mapping[date, str] = MappingProxyType(dict(closures or {}))
        self._table: _DayTable | None = None

    def __repr__(self) -> str:
        years = self.official_years()
        span = f"{min(years)}–{max(years)}" if years else "none"
        return f"ChinaCalendar(official years {span}, {len(self._closures)} closures)"

    @property
    def closures(self) -> Mapping[date, str]:
        """Local closures: date -> reason."""
        return self._closures

    def day_kind(self, day: date) -> DayKind:
        if day in self._closures:
            return DayKind.CLOSURE
        if day in self._holidays:
            return DayKind.HOLIDAY
        if day in self._makeup:
            return DayKind.MAKEUP
        return DayKind.WORKDAY if day.weekday() < 5 else DayKind.REST

    def is_working_day(self, day: date) -> bool:
        table, ordinal = self._table, day.toordinal()
        if table is not None and table.first <= ordinal <= table.last:
            return table.working[ordinal - table.first] == 1
        # outside the table: answer directly rather than widen it for one odd date
        return self.day_kind(day) in _WORKING_KINDS

    def is_official(self, year: int) -> bool:
        """True if `year`'s official dates are known (from the package or configured)."""
        return year in self._years

    def official_years(self) -> frozenset[int]:
        return frozenset(self._years)

    def with_year(self, dates: YearDates) -> "ChinaCalendar":
        """A new calendar with `dates` loaded (replacing a configured year of the same number)."""
        return ChinaCalendar(
            official={**self._configured, dates.year: dates},
            closures=self._closures,
            use_package=self._use_package,
        )

    # --- the day table: what the arithmetic below reads ------------------------------------

    def _covering(self, first: int, last: int) -> _DayTable:
        """A table holding the days `first` .. `last` (ordinals), built or widened if needed."""
        table = self._table
        if table is not None and table.first <= first and last <= table.last:
            return table
        if table is not None:
            first, last = min(first, table.first), max(last, table.last)
        # whole years, with a margin ahead: counting usually moves forward
        start_year = date.fromordinal(first).year
        end_year = min(date.fromordinal(last).year + _TABLE_MARGIN_YEARS, date.max.year)
        start, end = date(start_year, 1, 1).toordinal(), date(end_year, 12, 31).toordinal()
        days = [date.fromordinal(ordinal) for ordinal in range(start, end + 1)]
        working = bytes(self.day_kind(day) in _WORKING_KINDS for day in days)
        provisional = [day.year not in self._years for day in days]
        table = _DayTable(
            first=start,
            working=working,
            working_before=list(accumulate(working, initial=0)),
            provisional_before=list(accumulate(provisional, initial=0)),
        )
        self._table = table  # one assignment: a concurrent reader sees the old or the new table
        return table

    def _nth_working_day_after(self, ordinal: int, n: int) -> int:
        """The ordinal of the n-th (n >= 1) working day after the day `ordinal`."""
        table = self._covering(ordinal, ordinal)
        while True:
            wanted = table.working_before[ordinal - table.first + 1] + n
            index = bisect_left(table.working_before, wanted)
            if index < len(table.working_before):
                return table.first + index - 1
            if table.last >= date.max.toordinal():
                raise OverflowError("the deadline falls after the year 9999")
            further = table.last + 366 * (1 + n // 200)
            table = self._covering(ordinal, min(further, date.max.toordinal()))

    def _provisional(self, first: int, last: int) -> bool:
        """True if a day in `first` .. `last` lies in a year whose official dates are unknown."""
        table = self._covering(first, last)
        before = table.provisional_before
        return before[last - table.first + 1] != before[first - table.first]


@dataclass(frozen=True)
class OfficeHours:
    """The office windows of a working day, in minutes after local midnight, [start, end)."""

    windows: tuple[tuple[int, int], ...]
    timezone: str = "Asia/Shanghai"
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _bounds_us: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)
    _per_day_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.windows:
            raise ValueError("office hours need at least one window")
        previous_end = 0
        for start, end in self.windows:
            if not 0 <= start < end <= MINUTES_PER_DAY:
                raise ValueError(f"office window ({start}, {end}) is not inside one day")
            if start < previous_end:
                raise ValueError(
                    f"office window ({start}, {end}) overlaps the one before it or is out of order"
                )
            previous_end = end
        bounds = tuple(
            (start * _US_PER_MINUTE, end * _US_PER_MINUTE) for start, end in self.windows
        )
        object.__setattr__(self, "_zone", zone(self.timezone))
        object.__setattr__(self, "_bounds_us", bounds)
        object.__setattr__(self, "_per_day_us", sum(end - start for start, end in bounds))

    @classmethod
    def parse(cls, spans: Sequence[str], timezone: str = "Asia/Shanghai") -> "OfficeHours":
        """Office hours from spans like "08:30-12:00"; ValueError naming a bad span."""
        if isinstance(spans, str):
            raise ValueError(f"office hours are a list of spans, got the string {spans!r}")
        named: list[tuple[int, int, str]] = []
        for span in spans:
            ranges = minute_ranges(span)
            if len(ranges) != 1:
                raise ValueError(f"office hours {span!r} run past midnight; end them by 24:00")
            named.append((*ranges[0], span))
        named.sort()
        for (_, previous_end, previous), (start, _, span) in pairwise(named):
            if start < previous_end:
                raise ValueError(f"office hours {span!r} overlap {previous!r}")
        return cls(tuple((start, end) for start, end, _ in named), zone(timezone).key)


@dataclass(frozen=True, slots=True)
class Deadline:
    at: datetime  # timezone-aware
    provisional: bool  # some counted day lies in a year whose official dates are unknown


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {moment.isoformat()}")


def _require_non_negative(amount: timedelta) -> None:
    if amount < timedelta(0):
        raise ValueError(f"a negative amount of time ({amount}) cannot be added")


def _microseconds(amount: timedelta) -> int:
    return (amount.days * 86_400 + amount.seconds) * 1_000_000 + amount.microseconds


def _time_of_day_us(local: datetime) -> int:
    return ((local.hour * 60 + local.minute) * 60 + local.second) * 1_000_000 + local.microsecond


def _local_moment(ordinal: int, microseconds: int, tz: ZoneInfo) -> datetime:
    """Wall-clock `microseconds` after local midnight of day `ordinal` (24:00 = next midnight)."""
    midnight = datetime.combine(date.fromordinal(ordinal), time(), tzinfo=tz)
    return midnight + timedelta(microseconds=microseconds)


def add_working_hours(
    start: datetime, amount: timedelta, *, calendar: ChinaCalendar, office: OfficeHours
) -> Deadline:
    """`start` plus `amount` of office time on working days (see the module docstring)."""
    _require_aware(start, "start")
    _require_non_negative(amount)
    if not amount:
        return Deadline(start, provisional=False)
    tz = office._zone
    local = start.astimezone(tz)
    day = local.toordinal()
    remaining = _microseconds(amount)
    table = calendar._covering(day, day)
    if table.working[day - table.first]:
        now = _time_of_day_us(local)
        for window_start, window_end in office._bounds_us:
            if now < window_end:
                begin = max(now, window_start)
                if remaining <= window_end - begin:
                    at = _local_moment(day, begin + remaining, tz)
                    return Deadline(at, calendar._provisional(day, day))
                remaining -= window_end - begin
    per_day = office._per_day_us
    whole_days = (remaining - 1) // per_day  # leaves 0 < remaining <= per_day for the last day
    remaining -= whole_days * per_day
    last = calendar._nth_working_day_after(day, whole_days + 1)
    moment = 0
    for window_start, window_end in office._bounds_us:
        if remaining <= window_end - window_start:
            moment = window_start + remaining
            break
        remaining -= window_end - window_start
    return Deadline(_local_moment(last, moment, tz), calendar._provisional(day, last))


def add_working_days(
    start: datetime, days: int, *, calendar: ChinaCalendar, timezone: str = "Asia/Shanghai"
) -> Deadline:
    """`start` plus `days` working days (see the module docstring)."""
    _require_aware(start, "start")
    if days < 0:
        raise ValueError(f"a negative number of working days ({days}) cannot be added")
    if days == 0:
        return Deadline(start, provisional=False)
    tz = zone(timezone)
    local = start.astimezone(tz)
    day = local.toordinal()
    last = calendar._nth_working_day_after(day, days)
    table = calendar._covering(day, last)
    if table.working[day - table.first]:
        at = datetime.combine(date.fromordinal(last), local.time(), tzinfo=tz)
    else:
        at = datetime.combine(date.fromordinal(last + 1), time(), tzinfo=tz)
    return Deadline(at, calendar._provisional(day, last))


def working_time_between(
    a: datetime, b: datetime, *, calendar: ChinaCalendar, office: OfficeHours
) -> timedelta:
    """Office time of working days in [a, b); zero when b <= a."""
    _require_aware(a, "a")
    _require_aware(b, "b")
    if b <= a:
        return timedelta(0)
    tz = office._zone
    local_a, local_b = a.astimezone(tz), b.astimezone(tz)
    day_a, day_b = local_a.toordinal(), local_b.toordinal()
    table = calendar._covering(day_a, day_b)
    elapsed = office._per_day_us * (
        table.working_before[day_b - table.first] - table.working_before[day_a - table.first]
    )
    if table.working[day_b - table.first]:
        elapsed += _office_time_until(_time_of_day_us(local_b), office._bounds_us)
    if table.working[day_a - table.first]:
        elapsed -= _office_time_until(_time_of_day_us(local_a), office._bounds_us)
    return timedelta(microseconds=elapsed)


def _office_time_until(moment: int, bounds: Iterable[tuple[int, int]]) -> int:
    """Office microseconds of one working day before the time of day `moment`."""
    total = 0
    for start, end in bounds:
        if moment <= start:
            break
        total += min(moment, end) - start
    return total


def add_wall_clock(start: datetime, amount: timedelta) -> Deadline:
    """`start` plus `amount` of elapsed time, 7×24 (across DST changes too); never provisional."""
    _require_aware(start, "start")
    _require_non_negative(amount)
    return Deadline((start.astimezone(UTC) + amount).astimezone(start.tzinfo), provisional=False)


# --- configuration: config/calendar.yaml ------------------------------------------------------


class CalendarConfigError(ValueError):
    """calendar.yaml is unusable; `issues` lists every problem, one "file:line: reason" each."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


_TOP_FIELDS = ("years", "closures")
_YEAR_FIELDS = ("source", "holidays", "makeup_days")
_CLOSURE_FIELDS = ("date", "reason")


def load_calendar(path: Path) -> ChinaCalendar:
    """The calendar of the package plus `path`'s years and closures; CalendarConfigError lists
    every problem as "file:line: reason"."""
    file = str(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise CalendarConfigError([ConfigIssue(file, None, "file not found")]) from None
    except OSError as error:
        issue = ConfigIssue(file, None, f"cannot read file: {error.strerror}")
        raise CalendarConfigError([issue]) from error
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1
        raise CalendarConfigError([ConfigIssue(file, line, "not valid UTF-8")]) from error
    try:
        document = parse_yaml(text)
    except YamlSourceError as error:
        issues = [ConfigIssue(file, problem.line, problem.reason) for problem in error.problems]
        raise CalendarConfigError(issues) from error
    reader = _CalendarReader(file, document)
    calendar = reader.read()
    if reader.issues:
        raise CalendarConfigError(sorted(reader.issues, key=lambda issue: issue.line or 0))
    return calendar


class _CalendarReader:
    """Checks the parsed calendar.yaml, collecting every problem with its line."""

    def __init__(self, file: str, document: YamlDocument) -> None:
        self.file = file
        self.document = document
        self.issues: list[ConfigIssue] = []

    def problem(self, loc: tuple[str | int, ...], reason: str) -> None:
        self.issues.append(ConfigIssue(self.file, self.document.line_of(loc), reason))

    def read(self) -> ChinaCalendar:
        data = self.document.data
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.problem((), "expected a mapping with `years` and `closures`")
            return ChinaCalendar()
        self.unknown_fields((), data, _TOP_FIELDS)
        years = self.years(data.get("years"))
        calendar = ChinaCalendar(official=years)
        closures = self.closures(data.get("closures"), calendar)
        return ChinaCalendar(official=years, closures=closures)

    def unknown_fields(
        self, loc: tuple[str | int, ...], data: dict[str | int, object], known: Sequence[str]
    ) -> None:
        for key in data:
            if key not in known:
                self.problem((*loc, key), f"unknown field {key!r}; expected {', '.join(known)}")

    def years(self, data: object) -> dict[int, YearDates]:
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.problem(("years",), "`years` must map a year to its official dates")
            return {}
        years: dict[int, YearDates] = {}
        for year, entry in data.items():
            loc: tuple[str | int, ...] = ("years", year)
            if not isinstance(year, int) or not 1 <= year <= date.max.year:
                self.problem(loc, f"{year!r} is not a year; write it like 2027")
                continue
            if dates := self.year(loc, year, entry):
                years[year] = dates
        return years

    def year(self, loc: tuple[str | int, ...], year: int, entry: object) -> YearDates | None:
        if not isinstance(entry, dict):
            self.problem(loc, f"{year}: expected source, holidays and makeup_days")
            return None
        count = len(self.issues)
        self.unknown_fields(loc, entry, _YEAR_FIELDS)
        source = entry.get("source")
        if not isinstance(source, str) or not source.strip():
            self.problem((*loc, "source"), f"{year}: `source` must name the notice (a title)")
        holidays = self.dates((*loc, "holidays"), year, entry, makeup=False)
        makeup = self.dates((*loc, "makeup_days"), year, entry, makeup=True)
        if holidays is not None and not holidays:
            self.problem((*loc, "holidays"), f"{year}: no holidays listed")
        if holidays and makeup:
            for index, day in enumerate(entry["makeup_days"]):
                if type(day) is date and day in holidays:
                    self.problem(
                        (*loc, "makeup_days", index),
                        f"{day.isoformat()} is both a holiday and a make-up day",
                    )
        if len(self.issues) > count or holidays is None or makeup is None:
            return None
        dates = YearDates(year, holidays, makeup, str(source))
        known = _package_years().get(year)
        if known is not None and (differences := known.differences(dates)):
            self.problem(
                loc,
                f"{year}: the chinese-calendar package already has the official dates of {year}"
                f" and these differ ({differences}); remove the entry (an identical one is"
                " accepted)",
            )
            return None
        return dates

    def dates(
        self, loc: tuple[str | int, ...], year: int, entry: dict[str | int, object], *, makeup: bool
    ) -> frozenset[date] | None:
        name = str(loc[-1])
        if name not in entry:
            hint = " (write [] if the notice has none)" if makeup else ""
            self.problem(loc[:-1], f"{year}: `{name}` is missing{hint}")
            return None
        values = entry[name]
        if not isinstance(values, list):
            self.problem(loc, f"{year}: `{name}` must be a list of dates")
            return None
        seen: dict[date, int] = {}
        for index, day in enumerate(values):
            if problem := _date_problem(year, day, makeup=makeup):
                self.problem((*loc, index), problem)
            elif day in seen:
                first = self.document.line_of((*loc, seen[day]))
                self.problem((*loc, index), f"{day.isoformat()} twice (first at line {first})")
            else:
                seen[day] = index
        return frozenset(seen)

    def closures(self, data: object, calendar: ChinaCalendar) -> dict[date, str]:
        if data is None:
            return {}
        if not isinstance(data, list):
            self.problem(("closures",), "`closures` must be a list of {date, reason}")
            return {}
        closures: dict[date, str] = {}
        first_index: dict[date, int] = {}
        for index, entry in enumerate(data):
            loc: tuple[str | int, ...] = ("closures", index)
            if not isinstance(entry, dict):
                self.problem(loc, "a closure is {date: YYYY-MM-DD, reason: …}")
                continue
            self.unknown_fields(loc, entry, _CLOSURE_FIELDS)
            day, reason = entry.get("date"), entry.get("reason")
            if type(day) is not date:
                self.problem((*loc, "date"), f"closure date {day!r} is not a date (YYYY-MM-DD)")
                continue
            if not isinstance(reason, str) or not reason.strip():
                self.problem((*loc, "reason"), f"closure {day.isoformat()} needs a reason")
                continue
            if day in first_index:
                first = self.document.line_of(("closures", first_index[day]))
                self.problem(loc, f"closure {day.isoformat()} twice (first at line {first})")
                continue
            kind = calendar.day_kind(day)
            if calendar.is_official(day.year) and kind not in _WORKING_KINDS:
                self.problem(
                    (*loc, "date"),
                    f"closure {day.isoformat()} is not a working day ({kind.value}); offices are"
                    " shut already",
                )
                continue
            first_index[day] = index
            closures[day] = reason.strip()
        return closures
