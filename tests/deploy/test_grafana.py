"""The Grafana dashboards: generated from deploy/grafana/dashboards.py and current, each panel
querying only metrics the services export, and provisioned from the folder compose mounts."""

from __future__ import annotations

import json
import re
from pathlib import Path

from deploy.grafana.dashboards import DASHBOARDS, FOLDER, main
from tests.deploy.test_prometheus import exported_metric_names

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_dashboards_are_current() -> None:
    assert main(["--check"]) == 0
    assert {path.stem for path in FOLDER.glob("*.json")} == set(DASHBOARDS)


def test_every_query_uses_exported_metrics() -> None:
    exported = exported_metric_names()
    for path in FOLDER.glob("*.json"):
        board = json.loads(path.read_text("utf-8"))
        assert board["uid"].startswith("gridflow-") and board["panels"], path.name
        for panel in board["panels"]:
            assert panel["targets"], f"{path.name}: {panel['title']} has no query"
            for target in panel["targets"]:
                for name in re.findall(r"\b(gridflow_[a-z_]+)", target["expr"]):
                    base = re.sub(r"_(bucket|sum|count)$", "", name)
                    assert base in exported, f"{path.name}: {panel['title']}: {name}"


def test_panels_do_not_overlap_and_fit_the_grid() -> None:
    for name, board in DASHBOARDS.items():
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, f"{name}: {panel['title']}"
            mine = {
                (x, y)
                for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])
            }
            assert not cells & mine, f"{name}: {panel['title']} overlaps"
            cells |= mine


def test_provisioning_points_at_the_dashboards_compose_mounts() -> None:
    provider = (REPO / "deploy/grafana/provisioning/dashboards/gridflow.yml").read_text("utf-8")
    compose = (REPO / "docker-compose.yml").read_text("utf-8")
    assert "path: /var/lib/grafana/dashboards" in provider
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in compose
