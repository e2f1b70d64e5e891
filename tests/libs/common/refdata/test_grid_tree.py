"""Queries on the grid tree: ancestors, containment, the town and sector of a node."""

import pytest

from libs.common.refdata.models import GridLevel, GridNode, GridTree, Person, Sector

CITY, TOWN, VILLAGE, UNIT = "430281", "430281101", "430281101201", "430281101201001"
OTHER_TOWN, OTHER_UNIT = "430281001", "430281001001001"


def make_node(code: str, level: GridLevel, parent_code: str | None) -> GridNode:
    return GridNode(
        code=code,
        level=level,
        name=f"网格{code}",
        parent_code=parent_code,
        responsible=Person(name="王建国", title="网格长"),
    )


def make_tree() -> GridTree:
    """示范市 with two towns, each with one village holding one unit grid."""
    return GridTree(
        city=make_node(CITY, GridLevel.CITY, None),
        sectors=[Sector(id="S1", name="中心城区片区", responsible=Person(name="李明"))],
        nodes=[
            make_node(TOWN, GridLevel.TOWN, CITY),
            make_node(VILLAGE, GridLevel.VILLAGE, TOWN),
            make_node(UNIT, GridLevel.UNIT, VILLAGE),
            make_node(OTHER_TOWN, GridLevel.TOWN, CITY),
            make_node("430281001001", GridLevel.VILLAGE, OTHER_TOWN),
            make_node(OTHER_UNIT, GridLevel.UNIT, "430281001001"),
        ],
        town_sectors={TOWN: "S1", OTHER_TOWN: "S1"},
    )


def test_ancestors_run_from_parent_to_city() -> None:
    tree = make_tree()

    assert [node.code for node in tree.ancestors(UNIT)] == [VILLAGE, TOWN, CITY]
    assert tree.ancestors(CITY) == []


def test_is_within_includes_the_node_itself() -> None:
    tree = make_tree()

    assert tree.is_within(UNIT, UNIT)
    assert tree.is_within(UNIT, TOWN)
    assert tree.is_within(UNIT, CITY)
    assert not tree.is_within(UNIT, OTHER_TOWN)
    assert not tree.is_within(TOWN, UNIT)


def test_is_within_refuses_unknown_codes() -> None:
    tree = make_tree()

    with pytest.raises(KeyError):
        tree.is_within(UNIT, "430281999")
    with pytest.raises(KeyError):
        tree.is_within("430281999", CITY)


def test_town_of_a_unit_village_and_town() -> None:
    tree = make_tree()

    assert tree.town_of(UNIT).code == TOWN
    assert tree.town_of(VILLAGE).code == TOWN
    assert tree.town_of(TOWN).code == TOWN
    assert tree.sector_of(OTHER_UNIT).id == "S1"
    with pytest.raises(ValueError, match="city"):
        tree.town_of(CITY)


def test_lookups_and_levels() -> None:
    tree = make_tree()

    assert tree.node(UNIT).level is GridLevel.UNIT
    assert tree.get("430281999") is None
    with pytest.raises(KeyError):
        tree.node("430281999")
    assert [node.code for node in tree.towns] == [TOWN, OTHER_TOWN]
    assert [node.code for node in tree.unit_grids] == [UNIT, OTHER_UNIT]
    assert [node.code for node in tree.children(TOWN)] == [VILLAGE]


def test_a_node_before_its_parent_is_refused() -> None:
    with pytest.raises(ValueError, match="before its parent"):
        GridTree(
            city=make_node(CITY, GridLevel.CITY, None),
            sectors=[],
            nodes=[make_node(VILLAGE, GridLevel.VILLAGE, TOWN)],
            town_sectors={},
        )
