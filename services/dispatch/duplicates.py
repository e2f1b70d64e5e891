"""Duplicates (并案), the pure part: where a case is, how far apart two cases are, which of the
open cases near a new one it duplicates.

A case is where its reporter put it: its coordinates. A case located only by its unit grid (or an
address) is never merged automatically — a unit grid spans hundreds of metres, so "the same place"
cannot be told apart from "the same grid". Proxy-service requests (帮代办) are
one resident's business and never duplicates. Distances are great-circle (haversine) metres.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from libs.common.events import CaseSubmitted
from libs.common.refdata import CategoryForm, ReferenceData

EARTH_RADIUS_METERS = 6_371_008.8  # the mean radius (IUGG)
_METERS_PER_DEGREE = math.pi * EARTH_RADIUS_METERS / 180


@dataclass(frozen=True)
class DuplicatePolicy:
    distance_meters: float  # 0: merging is off
    window: timedelta

    @property
    def enabled(self) -> bool:
        return self.distance_meters > 0


@dataclass(frozen=True)
class Candidate:
    case_id: str
    lat: float
    lon: float


@dataclass(frozen=True)
class Box:
    """Where candidates can be: the distance as a latitude/longitude box (an index range)."""

    min_lat: float
    max_lat: float
    min_lon: float
    max_lon: float


def position(case: CaseSubmitted) -> tuple[float, float] | None:
    """(lat, lon) of the case's coordinates, or None."""
    if case.location.coordinates is None:
        return None
    return case.location.coordinates.lat, case.location.coordinates.lon


def mergeable(case: CaseSubmitted, refdata: ReferenceData) -> bool:
    category = refdata.categories.get(case.category.code)
    is_service = category is not None and category.form is CategoryForm.SERVICE
    return case.service is None and not is_service


def distance_meters(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_METERS * math.asin(min(1.0, math.sqrt(h)))


def box(at: tuple[float, float], meters: float) -> Box:
    """A box holding every point within `meters` of `at` (a little more near the poles)."""
    lat, lon = at
    dlat = meters / _METERS_PER_DEGREE
    dlon = meters / (_METERS_PER_DEGREE * max(math.cos(math.radians(lat)), 1e-6))
    return Box(lat - dlat, lat + dlat, lon - dlon, lon + dlon)


def nearest(
    at: tuple[float, float], candidates: Iterable[Candidate], meters: float
) -> Candidate | None:
    """The candidate nearest to `at` within `meters` (ties: the first given), else None."""
    best: tuple[float, Candidate] | None = None
    for candidate in candidates:
        distance = distance_meters(at, (candidate.lat, candidate.lon))
        if distance <= meters and (best is None or distance < best[0]):
            best = (distance, candidate)
    return best[1] if best else None
