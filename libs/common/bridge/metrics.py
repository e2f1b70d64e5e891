"""The counters every bridge exposes, labelled by partner (and channel, for the queue)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.inbound = Counter(
            "gridflow_bridge_inbound_total",
            "Partner messages received, by partner, kind (order, decision) and outcome "
            "(accepted, duplicate, refused)",
            ["partner", "kind", "outcome"],
            registry=registry,
        )
        self.outbound = Counter(
            "gridflow_bridge_outbound_total",
            "Queued messages sent, by partner, channel (partner, dispatch) and outcome "
            "(sent, retried, rejected)",
            ["partner", "channel", "outcome"],
            registry=registry,
        )
        self.mapping_failures = Counter(
            "gridflow_bridge_mapping_failures_total",
            "Partner values the mapping did not know (the case goes on, e.g. to triage), by field",
            ["partner", "field"],
            registry=registry,
        )
        self.partner_errors = Counter(
            "gridflow_bridge_partner_errors_total",
            "Failed calls to the partner platform (or dispatch), by operation",
            ["partner", "operation"],
            registry=registry,
        )
        self.sync_lag = Gauge(
            "gridflow_bridge_sync_lag_seconds",
            "Age of the oldest message still waiting in a channel's queue (0 when empty)",
            ["partner", "channel"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "gridflow_bridge_queue_depth",
            "Messages waiting in a channel's queue",
            ["partner", "channel"],
            registry=registry,
        )
        self.inbound_lag = Histogram(
            "gridflow_bridge_inbound_lag_seconds",
            "Time from the partner's event to its acceptance by the bridge",
            ["partner"],
            registry=registry,
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
        )
