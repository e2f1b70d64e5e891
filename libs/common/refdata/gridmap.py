"""Which unit grid contains a point: pure-Python point-in-polygon over a bucket-grid index.

Coordinates are WGS-84. Positions are stored as GeoJSON has them, (longitude, latitude); the query
methods take `lat, lon`, in the order people say them.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise

LonLat = tuple[float, float]
Ring = tuple[LonLat, ...]  # closed: the last position repeats the first
PolygonRings = tuple[Ring, ...]  # the exterior ring, then its holes

# Index cells per polygon: enough that a cell holds a handful of candidates.
_CELLS_PER_POLYGON = 4


@dataclass(frozen=True)
class Bounds:
    """A bounding box; `contains` includes its edges."""

    min_lat: float
    min_lon: float
    max_lat: float
    max_lon: float

    def contains(self, lat: float, lon: float) -> bool:
        return self.min_lat <= lat <= self.max_lat and self.min_lon <= lon <= self.max_lon

    @classmethod
    def around(cls, positions: Iterable[LonLat]) -> "Bounds":
        lons, lats = zip(*positions, strict=True)
        return cls(min_lat=min(lats), min_lon=min(lons), max_lat=max(lats), max_lon=max(lons))


def _ring_crosses(ring: Ring, lat: float, lon: float) -> bool:
    """Odd number of ring edges east of the point (ray casting, half-open in latitude)."""
    inside = False
    for start, end in pairwise(ring):
        # Measure each edge from its southern end, so two polygons sharing the edge compute the
        # same crossing and a point on the edge lands in exactly one of them.
        (lon1, lat1), (lon2, lat2) = (start, end) if start[1] <= end[1] else (end, start)
        if lat1 <= lat < lat2 and lon < lon1 + (lat - lat1) * (lon2 - lon1) / (lat2 - lat1):
            inside = not inside
    return inside


@dataclass(frozen=True)
class GridPolygon:
    """A unit grid's area: one or more polygons (GeoJSON Polygon or MultiPolygon)."""

    code: str
    parts: tuple[PolygonRings, ...]
    bounds: Bounds = field(init=False)

    def __post_init__(self) -> None:
        if not self.parts or not all(self.parts) or not all(all(part) for part in self.parts):
            raise ValueError(f"grid polygon {self.code!r} needs at least one non-empty ring")
        exteriors = (position for part in self.parts for position in part[0])
        object.__setattr__(self, "bounds", Bounds.around(exteriors))

    def contains(self, lat: float, lon: float) -> bool:
        """True inside; on an edge, true for exactly one of the polygons sharing it."""
        if not self.bounds.contains(lat, lon):
            return False
        # Parity over the exterior and its holes: inside the exterior and outside every hole.
        return any(
            sum(_ring_crosses(ring, lat, lon) for ring in part) % 2 == 1 for part in self.parts
        )


class GridMap:
    """The unit grids' polygons with a bucket-grid index over their bounding boxes."""

    def __init__(self, polygons: Iterable[GridPolygon] = ()) -> None:
        ordered = sorted(polygons, key=lambda polygon: polygon.code)
        self._polygons = {polygon.code: polygon for polygon in ordered}
        if len(self._polygons) != len(ordered):
            raise ValueError("a unit grid has more than one polygon")
        self.bounds: Bounds | None = None  # None only for a map without polygons
        self._columns = self._rows = 1
        self._min_lat = self._min_lon = 0.0
        self._cell_width = self._cell_height = 1.0
        self._cells: tuple[tuple[GridPolygon, ...], ...] = ((),)
        if ordered:
            self._index(ordered)

    def _index(self, ordered: Sequence[GridPolygon]) -> None:
        bounds = Bounds(
            min_lat=min(p.bounds.min_lat for p in ordered),
            min_lon=min(p.bounds.min_lon for p in ordered),
            max_lat=max(p.bounds.max_lat for p in ordered),
            max_lon=max(p.bounds.max_lon for p in ordered),
        )
        side = math.ceil(math.sqrt(len(ordered) * _CELLS_PER_POLYGON))
        self.bounds, self._columns, self._rows = bounds, side, side
        self._min_lat, self._min_lon = bounds.min_lat, bounds.min_lon
        self._cell_width = (bounds.max_lon - bounds.min_lon) / side or 1.0
        self._cell_height = (bounds.max_lat - bounds.min_lat) / side or 1.0
        cells: list[list[GridPolygon]] = [[] for _ in range(side * side)]
        # In code order, so that if polygons overlap the lowest code wins, on every run.
        for polygon in ordered:
            low_row, low_column = self._cell_of(polygon.bounds.min_lat, polygon.bounds.min_lon)
            high_row, high_column = self._cell_of(polygon.bounds.max_lat, polygon.bounds.max_lon)
            for row in range(low_row, high_row + 1):
                for column in range(low_column, high_column + 1):
                    cells[row * side + column].append(polygon)
        self._cells = tuple(tuple(cell) for cell in cells)

    def _cell_of(self, lat: float, lon: float) -> tuple[int, int]:
        # Callers stay within the bounds; floor is monotonic, so a box's cells cover its points.
        row = int((lat - self._min_lat) / self._cell_height)
        column = int((lon - self._min_lon) / self._cell_width)
        return min(row, self._rows - 1), min(column, self._columns - 1)

    def __len__(self) -> int:
        return len(self._polygons)

    def __contains__(self, code: object) -> bool:
        return code in self._polygons

    @property
    def codes(self) -> tuple[str, ...]:
        """Unit grid codes with a polygon, in code order."""
        return tuple(self._polygons)

    def polygon(self, code: str) -> GridPolygon:
        """The polygon of this unit grid; KeyError if it has none."""
        return self._polygons[code]

    def locate(self, lat: float, lon: float) -> str | None:
        """The code of the unit grid containing the point, or None outside every grid."""
        if self.bounds is None or not self.bounds.contains(lat, lon):
            return None
        row, column = self._cell_of(lat, lon)
        for polygon in self._cells[row * self._columns + column]:
            if polygon.contains(lat, lon):
                return polygon.code
        return None
