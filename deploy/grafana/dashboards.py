"""Grafana dashboards as code: `python -m deploy.grafana.dashboards --write | --check`.

Writes deploy/grafana/dashboards/*.json (provisioned by deploy/grafana/provisioning): the city's
flow, delivery health, SLA compliance, service health. Every query uses metrics the services
export (tests/deploy/test_grafana.py checks the names and that the files are current).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.generated import write_or_check

FOLDER = Path(__file__).parent / "dashboards"


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]  # (PromQL, legend)
    kind: str = "timeseries"  # timeseries | stat | bargauge | table
    unit: str = "short"
    width: int = 12


def _panel(panel: Panel, index: int, y: int, x: int) -> dict[str, Any]:
    return {
        "id": index + 1,
        "type": panel.kind,
        "title": panel.title,
        "datasource": {"type": "prometheus", "uid": "prometheus"},
        "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {},
        "targets": [
            {
                "refId": chr(ord("A") + n),
                "expr": expr,
                "legendFormat": legend,
                "datasource": {"type": "prometheus", "uid": "prometheus"},
            }
            for n, (expr, legend) in enumerate(panel.queries)
        ],
    }


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    laid_out = []
    x = y = 0
    for index, panel in enumerate(panels):
        if x + panel.width > 24:  # Grafana's grid is 24 columns wide
            x, y = 0, y + 8
        laid_out.append(_panel(panel, index, y, x))
        x += panel.width
    return {
        "uid": uid,
        "title": title,
        "tags": ["gridflow"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": laid_out,
    }


def rate(metric: str, by: str, window: str = "5m", where: str = "") -> str:
    return f"sum by ({by}) (rate({metric}{{{where}}}[{window}]))"


DASHBOARDS: dict[str, dict[str, Any]] = {
    "city-flow": dashboard(
        "gridflow-city-flow",
        "gridflow — the city's flow",
        [
            Panel(
                "cases accepted by source (/s)",
                ((rate("gridflow_intake_submissions_total", "source"), "{{source}}"),),
            ),
            Panel(
                "routing decisions by rule (/s)",
                ((rate("gridflow_routing_decisions_total", "rule"), "{{rule}}"),),
            ),
            Panel(
                "open cases by state",
                (("sum by (state) (gridflow_dispatch_open_cases)", "{{state}}"),),
            ),
            Panel(
                "open cases by department",
                (("sum by (department) (gridflow_dispatch_open_cases)", "{{department}}"),),
                kind="bargauge",
            ),
            Panel(
                "triage queue by grid centre",
                (("sum by (owner_node) (gridflow_dispatch_triage_queue)", "{{owner_node}}"),),
                kind="bargauge",
            ),
            Panel(
                "duplicates merged (并案, /h)",
                (
                    (
                        "sum by (category) (increase(gridflow_cases_merged_total[1h]))",
                        "{{category}}",
                    ),
                ),
            ),
        ],
    ),
    "delivery": dashboard(
        "gridflow-delivery",
        "gridflow — delivery to departments",
        [
            Panel(
                "attempts by outcome (/s)",
                ((rate("gridflow_delivery_attempts_total", "outcome"), "{{outcome}}"),),
            ),
            Panel(
                "failed attempts by department (/s)",
                (
                    (
                        rate(
                            "gridflow_delivery_attempts_total",
                            "department",
                            where='outcome!="delivered"',
                        ),
                        "{{department}}",
                    ),
                ),
            ),
            Panel(
                "delivery latency p95 (queued → delivered)",
                (
                    (
                        "histogram_quantile(0.95, sum by (le, department) "
                        "(rate(gridflow_delivery_latency_seconds_bucket[5m])))",
                        "{{department}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "receivers' answer time p95",
                (
                    (
                        "histogram_quantile(0.95, sum by (le, department) "
                        "(rate(gridflow_delivery_seconds_bucket[5m])))",
                        "{{department}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "dead letters",
                (("sum by (department) (gridflow_delivery_dead_letters)", "{{department}}"),),
                kind="bargauge",
                width=8,
            ),
            Panel(
                "open circuit breakers",
                (("sum by (department) (gridflow_delivery_circuit_open)", "{{department}}"),),
                kind="stat",
                width=8,
            ),
            Panel(
                "disabled receivers (410)",
                (("sum by (department) (gridflow_delivery_receiver_disabled)", "{{department}}"),),
                kind="stat",
                width=8,
            ),
        ],
    ),
    "sla": dashboard(
        "gridflow-sla",
        "gridflow — deadlines and assessments",
        [
            Panel(
                "on-time closure rate this month, by department (%)",
                (
                    (
                        'gridflow_sla_kpi{kpi="on_time_closure_rate", level="department"}',
                        "{{node}}",
                    ),
                ),
                kind="bargauge",
                unit="percent",
            ),
            Panel(
                "on-time closure rate this month, by town (%)",
                (('gridflow_sla_kpi{kpi="on_time_closure_rate", level="town"}', "{{node}}"),),
                kind="bargauge",
                unit="percent",
            ),
            Panel(
                "deadline signals by kind (/h)",
                (("sum by (kind) (increase(gridflow_sla_signals_total[1h]))", "{{kind}}"),),
            ),
            Panel(
                "breaches by stage (/h)",
                (
                    (
                        'sum by (stage) (increase(gridflow_sla_signals_total{kind="breach"}[1h]))',
                        "{{stage}}",
                    ),
                ),
            ),
            Panel(
                "breaches by department (/h)",
                (
                    (
                        'sum by (department) (increase(gridflow_sla_signals_total{kind="breach"}[1h]))',
                        "{{department}}",
                    ),
                ),
            ),
            Panel(
                "missed visits (四必访, /day)",
                (
                    (
                        "sum by (category) (increase(gridflow_sla_visits_overdue_total[1d]))",
                        "{{category}}",
                    ),
                ),
            ),
            Panel(
                "provisional deadlines (calendar not loaded)",
                (("sum(gridflow_sla_provisional_timers)", "timers"),),
                kind="stat",
                width=6,
            ),
            Panel(
                "firing lag p99",
                (
                    (
                        "histogram_quantile(0.99, sum by (le) "
                        "(rate(gridflow_sla_firing_lag_seconds_bucket[5m])))",
                        "p99",
                    ),
                ),
                kind="stat",
                unit="s",
                width=6,
            ),
        ],
    ),
    "service-health": dashboard(
        "gridflow-service-health",
        "gridflow — service health",
        [
            Panel("services up", (("up", "{{job}} {{instance}}"),), kind="stat", width=24),
            Panel(
                "HTTP requests by status (/s)",
                ((rate("gridflow_http_requests_total", "job, status"), "{{job}} {{status}}"),),
            ),
            Panel(
                "HTTP latency p99",
                (
                    (
                        "histogram_quantile(0.99, sum by (le, job) "
                        "(rate(gridflow_http_request_seconds_bucket[5m])))",
                        "{{job}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "records consumed by outcome (/s)",
                (
                    (
                        rate("gridflow_consumer_records_total", "topic, outcome"),
                        "{{topic}} {{outcome}}",
                    ),
                ),
            ),
            Panel(
                "handler time p99",
                (
                    (
                        "histogram_quantile(0.99, sum by (le, topic) "
                        "(rate(gridflow_consumer_handler_seconds_bucket[5m])))",
                        "{{topic}}",
                    ),
                ),
                unit="s",
            ),
            Panel(
                "outbox depth",
                (("max by (job) (gridflow_outbox_depth)", "{{job}}"),),
            ),
            Panel(
                "consumer lag (records not yet handled)",
                (("sum by (group, topic) (gridflow_consumer_lag)", "{{group}} · {{topic}}"),),
            ),
            Panel(
                "oldest unpublished event",
                (("max by (job) (gridflow_outbox_oldest_age_seconds)", "{{job}}"),),
                unit="s",
            ),
        ],
    ),
}


def rendered() -> dict[str, str]:
    return {
        f"{name}.json": json.dumps(board, ensure_ascii=False, indent=2) + "\n"
        for name, board in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    return write_or_check(argv, prog="deploy.grafana.dashboards", folder=FOLDER, render=rendered)


if __name__ == "__main__":
    raise SystemExit(main())
