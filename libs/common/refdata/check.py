"""Validate the reference-data folder: `python -m libs.common.refdata.check [--config DIR]`.

Prints a one-line summary and exits 0, or prints every issue as "file:line: reason" on stderr
and exits 1. The working calendar's `calendar.yaml` is checked too when the folder has one.
"""

import argparse
import sys
from pathlib import Path

from libs.common.refdata.loader import ConfigError, ConfigIssue, load_reference_data
from libs.common.refdata.models import ReferenceData
from libs.common.worktime import CalendarConfigError, ChinaCalendar, load_calendar

CALENDAR_FILE = "calendar.yaml"


def summary(data: ReferenceData) -> str:
    grid = data.grid
    return (
        f"OK: {len(grid.towns)} towns, {len(grid.villages)} villages,"
        f" {len(grid.unit_grids)} unit grids, {len(data.grid_map)} grid polygons,"
        f" {len(data.departments)} departments, {len(data.categories)} categories,"
        f" {len(data.routing)} routes (version {data.routing.version}),"
        f" {len(data.service_items)} service items, {len(data.open311.clients)} Open311 clients,"
        f" {len(data.open311.services)} Open311 services"
    )


def calendar_summary(calendar: ChinaCalendar) -> str:
    years = calendar.official_years()
    span = f" ({min(years)}–{max(years)})" if years else ""
    return f"calendar: {len(years)} official years{span}, {len(calendar.closures)} closures"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m libs.common.refdata.check", description="Validate reference data."
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("config"),
        help="reference-data folder (default: config)",
    )
    args = parser.parse_args(argv)
    issues: list[ConfigIssue] = []
    data = calendar = None
    try:
        data = load_reference_data(args.config)
    except ConfigError as error:
        issues += error.issues
    calendar_path = args.config / CALENDAR_FILE
    if calendar_path.is_file():
        try:
            calendar = load_calendar(calendar_path)
        except CalendarConfigError as error:
            issues += error.issues
    if issues or data is None:
        for issue in issues:
            print(issue, file=sys.stderr)
        return 1
    line = summary(data)
    if calendar is not None:
        line += f"; {calendar_summary(calendar)}"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
