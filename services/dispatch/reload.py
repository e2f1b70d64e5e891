"""Routing rules change without a restart: the rule file is watched, and a new version that
passes every check replaces the tree in force; one that does not is logged and ignored.

Each routing decision records the rule-set version it used, so a change never rewrites history.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from libs.common.refdata import ConfigError, load_routing_tree
from libs.common.runtime import Runtime

log = logging.getLogger(__name__)


class RoutingReloader:
    def __init__(
        self,
        *,
        runtime: Runtime,
        path: Path,
        interval: float,
        registry: CollectorRegistry | None = None,
    ) -> None:
        registry = registry or runtime.registry
        self._runtime = runtime
        self._path = path
        self._interval = interval
        self._stopping = asyncio.Event()
        self._seen = self._stamp()
        self.reloads = Counter(
            "gridflow_routing_reloads_total",
            "Routing rule files read after a change, by outcome (applied, refused)",
            ["outcome"],
            registry=registry,
        )
        self.info = Gauge(
            "gridflow_routing_ruleset_info",
            "The routing rule-set version in force (value 1)",
            ["version"],
            registry=registry,
        )
        self.info.labels(runtime.refdata.routing.version).set(1)

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)
            stamp = self._stamp()
            if stamp is not None and stamp != self._seen:
                self._seen = stamp
                self.reload()

    def reload(self) -> bool:
        runtime = self._runtime
        try:
            tree = load_routing_tree(self._path, against=runtime.refdata)
        except ConfigError as exc:
            self.reloads.labels("refused").inc()
            for issue in exc.issues:
                log.error(
                    "routing change refused, keeping %s: %s", runtime.refdata.routing.version, issue
                )
            return False
        old = runtime.refdata.routing.version
        if tree.version == old:
            return True
        runtime.refdata = dataclasses.replace(runtime.refdata, routing=tree)
        self.info.remove(old)
        self.info.labels(tree.version).set(1)
        self.reloads.labels("applied").inc()
        log.warning("routing rules %s replace %s", tree.version, old)
        return True
