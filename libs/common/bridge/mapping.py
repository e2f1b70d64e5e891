"""Pieces of a partner mapping every bridge's configuration has: the partner's time limits and
where a partner's case lies in the grid. Pure."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from libs.common.refdata import ConfigError, ConfigIssue, ReferenceData, load_reference_data
from libs.common.refdata.loader import Finding, read_source
from libs.common.worktime import (
    CalendarConfigError,
    ChinaCalendar,
    add_wall_clock,
    add_working_days,
    load_calendar,
)

UNIT_GRID_DIGITS = 15
T = TypeVar("T", bound=BaseModel)


class TimeLimit(BaseModel):
    """A partner's time limit: wall-clock hours (urgent matters) or working days."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    working_days: Annotated[int, Field(ge=1, le=60)] | None = None
    hours: Annotated[float, Field(gt=0, le=720)] | None = None

    @model_validator(mode="after")
    def _one(self) -> TimeLimit:
        if (self.working_days is None) == (self.hours is None):
            raise ValueError("give either working_days or hours")
        return self

    def after(self, start: datetime, *, calendar: ChinaCalendar) -> datetime:
        """The deadline this limit sets for a matter that started at `start`."""
        if self.hours is not None:
            return add_wall_clock(start, timedelta(hours=self.hours)).at
        assert self.working_days is not None  # noqa: S101  # the model requires one of the two
        return add_working_days(start, self.working_days, calendar=calendar).at


def unit_grid_of(
    *,
    grid_id: str | None,
    grids: Mapping[str, str],
    lat: float | None,
    lng: float | None,
    refdata: ReferenceData,
    same_codes: bool = False,
) -> str | None:
    """The unit grid of a partner's case: its grid id through the mapping's table (or taken as it
    is when `same_codes` and it is a known unit grid), else its position, else None."""
    if grid_id is not None:
        if grid_id in grids:
            return grids[grid_id]
        if same_codes and len(grid_id) == UNIT_GRID_DIGITS and grid_id in refdata.grid:
            return grid_id
    if lat is not None and lng is not None:
        return refdata.grid_map.locate(lat, lng)
    return None


def grid_findings(grids: Mapping[str, str], refdata: ReferenceData) -> list[Finding]:
    """A finding for each partner grid id of `grids` whose unit grid gridflow does not know."""
    return [
        Finding(("grids", partner_grid), f"unknown unit grid {unit_grid}")
        for partner_grid, unit_grid in grids.items()
        if unit_grid not in refdata.grid or len(unit_grid) != UNIT_GRID_DIGITS
    ]


def load_checked(path: Path, model: type[T], findings: Callable[[T], list[Finding]]) -> T:
    """Read and validate a mapping file as `model`, then its `findings` (cross-checks with the
    reference data); ConfigError lists every issue (file:line: reason)."""
    source, issues = read_source(path, model)
    if source is not None:
        issues += source.issues(findings(source.model))
    if issues or source is None:
        raise ConfigError(issues)
    return source.model


def check_command(
    prog: str,
    argv: list[str] | None,
    *,
    load: Callable[[Path, ReferenceData | None], Any],
    summary: Callable[[Any], str],
) -> int:
    """A bridge's `check` command: the reference data, the mapping (`load(config, refdata)`)
    and the calendar validated; every issue printed as "file:line: reason" (exit 1), else
    "OK: `summary(mapping)`"."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--config", type=Path, default=Path("config"))
    args = parser.parse_args(argv)
    issues: list[ConfigIssue] = []
    refdata = None
    try:
        refdata = load_reference_data(args.config)
    except ConfigError as error:
        issues += error.issues
    try:
        mapping = load(args.config, refdata)
        load_calendar(args.config / "calendar.yaml")
    except (ConfigError, CalendarConfigError) as error:
        issues += error.issues
    if issues:
        for issue in issues:
            print(issue, file=sys.stderr)  # noqa: T201
        return 1
    print(f"OK: {summary(mapping)}")  # noqa: T201
    return 0
