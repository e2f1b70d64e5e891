"""Point-in-polygon and the bucket index: non-convex shapes, holes, edges, the outside."""

import pytest

from libs.common.refdata.gridmap import Bounds, GridMap, GridPolygon, LonLat, Ring

A, B, C, D = "430281001001001", "430281001001002", "430281001001003", "430281001001004"


def make_ring(*corners: LonLat) -> Ring:
    return (*corners, corners[0])


def make_square(code: str, west: float, south: float, size: float = 1.0) -> GridPolygon:
    east, north = west + size, south + size
    ring = make_ring((west, south), (east, south), (east, north), (west, north))
    return GridPolygon(code=code, parts=((ring,),))


def make_l_shape(code: str = A) -> GridPolygon:
    """An L: the square (0..2, 0..2) without its north-east quarter (1..2, 1..2)."""
    ring = make_ring((0, 0), (2, 0), (2, 1), (1, 1), (1, 2), (0, 2))
    return GridPolygon(code=code, parts=((ring,),))


def test_a_non_convex_polygon_excludes_its_notch() -> None:
    grid_map = GridMap([make_l_shape()])

    assert grid_map.locate(0.5, 0.5) == A  # the corner of the L
    assert grid_map.locate(0.5, 1.5) == A  # the east arm
    assert grid_map.locate(1.5, 0.5) == A  # the north arm
    assert grid_map.locate(1.5, 1.5) is None  # the notch: inside the bounds, outside the L
    assert grid_map.bounds == Bounds(min_lat=0, min_lon=0, max_lat=2, max_lon=2)


def test_the_notch_of_an_l_goes_to_the_grid_filling_it() -> None:
    grid_map = GridMap([make_l_shape(), make_square(B, 1, 1)])

    assert grid_map.locate(1.5, 1.5) == B
    assert grid_map.locate(1.5, 0.5) == A


def test_a_hole_is_outside_and_an_island_in_it_is_inside() -> None:
    outer = make_ring((0, 0), (3, 0), (3, 3), (0, 3))
    hole = make_ring((1, 1), (1, 2), (2, 2), (2, 1))
    grid_map = GridMap(
        [GridPolygon(code=A, parts=((outer, hole),)), make_square(B, 1.25, 1.25, 0.5)]
    )

    assert grid_map.locate(0.5, 0.5) == A
    assert grid_map.locate(1.1, 1.1) is None
    assert grid_map.locate(1.5, 1.5) == B


def test_a_multipolygon_covers_each_part() -> None:
    first, second = make_square(A, 0, 0).parts[0], make_square(A, 5, 5).parts[0]
    grid_map = GridMap([GridPolygon(code=A, parts=(first, second))])

    assert grid_map.locate(0.5, 0.5) == grid_map.locate(5.5, 5.5) == A
    assert grid_map.locate(3, 3) is None


def test_outside_the_bounds_is_none() -> None:
    grid_map = GridMap([make_square(A, 113.3, 27.7, size=0.1)])

    assert grid_map.locate(27.75, 113.35) == A
    assert grid_map.locate(27.6, 113.35) is None
    assert grid_map.locate(27.9, 113.35) is None
    assert grid_map.locate(27.75, 113.2) is None
    assert grid_map.locate(27.75, 113.5) is None
    assert grid_map.locate(float("nan"), 113.35) is None


def test_a_point_on_a_shared_edge_or_corner_belongs_to_exactly_one_grid() -> None:
    squares = [
        make_square(A, 0, 0),
        make_square(B, 1, 0),
        make_square(C, 0, 1),
        make_square(D, 1, 1),
    ]
    grid_map = GridMap(squares)
    points = [(0.5, 1.0), (1.0, 0.5), (1.0, 1.0), (1.0, 1.5), (1.5, 1.0)]

    for lat, lon in points:
        holders = [square.code for square in squares if square.contains(lat, lon)]
        assert len(holders) == 1, (lat, lon, holders)
        assert grid_map.locate(lat, lon) == holders[0]


def test_a_slanted_shared_edge_splits_every_point_between_its_two_grids() -> None:
    # Two triangles share the diagonal, listed in opposite directions, as neighbours do.
    south_east = GridPolygon(code=A, parts=((make_ring((0, 0), (1, 0), (1, 1)),),))
    north_west = GridPolygon(code=B, parts=((make_ring((0, 0), (1, 1), (0, 1)),),))
    steps = [i / 7 for i in range(1, 7)] + [i / 10 for i in range(1, 10)]
    for lat in steps:
        for lon in [*steps, lat]:  # `lat` again: a point on the diagonal itself
            holders = [t.code for t in (south_east, north_west) if t.contains(lat, lon)]
            assert len(holders) == 1, (lat, lon, holders)


def test_lookups_by_code() -> None:
    grid_map = GridMap([make_square(B, 0, 0), make_square(A, 1, 0)])

    assert grid_map.codes == (A, B)
    assert len(grid_map) == 2
    assert A in grid_map
    assert grid_map.polygon(A).bounds == Bounds(min_lat=0, min_lon=1, max_lat=1, max_lon=2)
    with pytest.raises(KeyError):
        grid_map.polygon(C)


def test_an_empty_map_locates_nothing() -> None:
    grid_map = GridMap()

    assert (grid_map.bounds, grid_map.locate(0, 0), len(grid_map)) == (None, None, 0)


def test_a_grid_with_two_polygons_is_refused() -> None:
    with pytest.raises(ValueError, match="more than one polygon"):
        GridMap([make_square(A, 0, 0), make_square(A, 1, 0)])


def test_many_grids_through_the_index() -> None:
    squares = [make_square(f"430281001001{n:03d}", n % 30, n // 30) for n in range(1, 900)]
    grid_map = GridMap(squares)

    for square in squares:
        south, west = square.bounds.min_lat, square.bounds.min_lon
        assert grid_map.locate(south + 0.5, west + 0.5) == square.code
        assert grid_map.locate(south, west) == square.code  # south-west corner: its own
