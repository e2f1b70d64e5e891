"""What sla counts with — the policies and the working calendar — held for the running service,
and swapped without a restart when `sla.yaml` or `calendar.yaml` change.

A changed policy file applies to timers started after it (a timer keeps the policy it started
with). A changed calendar — typically next year's official dates, loaded when the State Council
publishes them — recomputes every running timer whose deadline was provisional.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from prometheus_client import Counter, Gauge

from libs.common.refdata import ConfigError
from libs.common.runtime import Runtime
from libs.common.worktime import ChinaCalendar, OfficeHours, load_calendar
from services.sla.clocks import Clockwork
from services.sla.models import TimerRow
from services.sla.policies import POLICY_FILE, PolicySet, load_policies
from services.sla.store import to_timer, write
from services.sla.timers import TimerStatus, schedule

log = logging.getLogger(__name__)
CALENDAR_FILE = "calendar.yaml"


def read_calendar(config_dir: Path) -> ChinaCalendar:
    path = config_dir / CALENDAR_FILE
    return load_calendar(path) if path.exists() else ChinaCalendar()


@dataclass
class SlaConfig:
    policies: PolicySet
    calendar: ChinaCalendar
    clocks: Clockwork

    @classmethod
    def load(cls, runtime: Runtime) -> SlaConfig:
        config_dir = runtime.settings.config_dir
        policies = load_policies(config_dir / POLICY_FILE, against=runtime.refdata)
        calendar = read_calendar(config_dir)
        return cls(policies, calendar, _clockwork(policies, calendar))


def _clockwork(policies: PolicySet, calendar: ChinaCalendar) -> Clockwork:
    return Clockwork(
        calendar=calendar,
        office=OfficeHours(windows=policies.office_hours, timezone=policies.timezone),
    )


async def recompute_provisional(runtime: Runtime, clocks: Clockwork, *, batch: int = 1000) -> int:
    """Recount the deadlines of open timers that were counted on an unofficial calendar year."""
    done = 0
    last = 0
    while True:
        async with runtime.sessions() as session, session.begin():
            rows = (
                await session.scalars(
                    sa.select(TimerRow)
                    .where(
                        TimerRow.provisional,  # type: ignore[arg-type]
                        TimerRow.status != TimerStatus.STOPPED.value,  # type: ignore[arg-type]
                        TimerRow.id > last,  # type: ignore[arg-type,operator]
                    )
                    .order_by(TimerRow.id)  # type: ignore[arg-type]
                    .limit(batch)
                    .with_for_update()
                )
            ).all()
            for row in rows:
                write(schedule(to_timer(row), clocks), row)
        if not rows:
            return done
        done += len(rows)
        last = rows[-1].id or last


class ConfigWatcher:
    def __init__(self, *, runtime: Runtime, config: SlaConfig, interval: float) -> None:
        self._runtime = runtime
        self.config = config
        self._interval = interval
        self._stopping = asyncio.Event()
        self._dir = runtime.settings.config_dir
        self._seen = {name: self._stamp(name) for name in (POLICY_FILE, CALENDAR_FILE)}
        self.reloads = Counter(
            "gridflow_sla_config_reloads_total",
            "sla.yaml / calendar.yaml read after a change, by file and outcome",
            ["file", "outcome"],
            registry=runtime.registry,
        )
        self.info = Gauge(
            "gridflow_sla_policy_info",
            "The sla policy-set version in force (value 1)",
            ["version"],
            registry=runtime.registry,
        )
        self.info.labels(config.policies.version).set(1)
        self.provisional = Gauge(
            "gridflow_sla_provisional_timers",
            "Open timers whose deadline was counted Monday to Friday because the year's official "
            "holidays are not loaded yet (load them in calendar.yaml)",
            registry=runtime.registry,
        )
        self.official = Gauge(
            "gridflow_sla_calendar_last_official_year",
            "The last year whose statutory holidays and make-up days the calendar knows",
            registry=runtime.registry,
        )
        self.official.set(max(config.calendar.official_years(), default=0))

    def _stamp(self, name: str) -> tuple[int, int] | None:
        try:
            stat = (self._dir / name).stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await self.measure()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)
            for name in (POLICY_FILE, CALENDAR_FILE):
                stamp = self._stamp(name)
                if stamp != self._seen[name]:
                    self._seen[name] = stamp
                    await self.reload(name)
            await self.measure()

    async def measure(self) -> None:
        async with self._runtime.sessions() as session:
            count = await session.scalar(
                sa.select(sa.func.count())
                .select_from(TimerRow)
                .where(
                    TimerRow.provisional,  # type: ignore[arg-type]
                    TimerRow.status != TimerStatus.STOPPED.value,  # type: ignore[arg-type]
                )
            )
        self.provisional.set(count or 0)

    async def reload(self, name: str) -> bool:
        runtime = self._runtime
        try:
            if name == POLICY_FILE:
                policies = load_policies(self._dir / POLICY_FILE, against=runtime.refdata)
                calendar = self.config.calendar
            else:
                policies = self.config.policies
                calendar = read_calendar(self._dir)
        except (ConfigError, ValueError) as exc:
            self.reloads.labels(name, "refused").inc()
            log.error("%s change refused, keeping the one in force: %s", name, exc)
            return False
        old = self.config.policies.version
        self.config.policies = policies
        self.config.calendar = calendar
        self.config.clocks = _clockwork(policies, calendar)
        self.reloads.labels(name, "applied").inc()
        if name == POLICY_FILE and policies.version != old:
            self.info.remove(old)
            self.info.labels(policies.version).set(1)
        if name == CALENDAR_FILE:
            self.official.set(max(calendar.official_years(), default=0))
            recounted = await recompute_provisional(runtime, self.config.clocks)
            log.warning("calendar reloaded: %d provisional deadlines recounted", recounted)
        return True
