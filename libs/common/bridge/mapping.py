"""Pieces of a partner mapping every bridge's configuration has: the partner's time limits and
where a partner's case lies in the grid. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from libs.common.refdata import ReferenceData
from libs.common.worktime import ChinaCalendar, add_wall_clock, add_working_days

UNIT_GRID_DIGITS = 15


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


def unknown_unit_grids(grids: Mapping[str, str], refdata: ReferenceData) -> list[str]:
    """The partner grid ids of `grids` whose unit grid gridflow does not know."""
    return [
        partner_grid
        for partner_grid, unit_grid in grids.items()
        if unit_grid not in refdata.grid or len(unit_grid) != UNIT_GRID_DIGITS
    ]
