"""Validate the reference-data folder: `python -m libs.common.refdata.check [--config DIR]`.

Prints a one-line summary and exits 0, or prints every issue as "file:line: reason" on stderr
and exits 1.
"""

import argparse
import sys
from pathlib import Path

from libs.common.refdata.loader import ConfigError, load_reference_data
from libs.common.refdata.models import ReferenceData


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
    try:
        data = load_reference_data(args.config)
    except ConfigError as error:
        for issue in error.issues:
            print(issue, file=sys.stderr)
        return 1
    print(summary(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
