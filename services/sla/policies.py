"""Time-limit policies as code: `config/sla.yaml`, validated, and the policy a case's clock runs on.

A policy matches cases by category (exact code or prefix) and urgency; the first policy that
matches in file order wins, and the last one must match every case (the city's default). For each
stage — sign-for (签收), handle (办理), verify (核查) — it gives one limit, or several for a staged
category (违建: stop in 4 working hours, penalty in 7 working days, …), each counted on a clock:

- `wall`: 7×24 wall-clock time (emergencies);
- `working_hours`: inside the office windows on working days of the working calendar;
- `working_days`: whole working days (a working day is 24 hours of this clock, so "3d" from
  10:00 on a Wednesday ends at 10:00 on the third working day after; from a rest day, at the end
  of the third working day).

Warning points are fractions of a limit; the escalation ladder gives, for each rung, how long after
the deadline (on the same clock) the case is handed up, and to which level. Pure: the loader reads
one file; everything else is data in, data out.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from libs.common.events import SlaStage, Urgency
from libs.common.refdata import ConfigError, ReferenceData
from libs.common.refdata.loader import Finding, read_source
from libs.common.worktime import OfficeHours

POLICY_FILE = "sla.yaml"
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|h|d)$")


class ClockKind(StrEnum):
    WALL = "wall"
    WORKING_HOURS = "working_hours"
    WORKING_DAYS = "working_days"


def parse_duration(text: str) -> timedelta:
    """ "30m", "4h", "1.5h", "7d" → a timedelta (d = 24 hours of the clock it is counted on)."""
    found = _DURATION.fullmatch(text)
    if found is None:
        raise ValueError(f"a duration looks like 30m, 4h or 7d, got {text!r}")
    number, unit = float(found.group(1)), found.group(2)
    amount = {"m": timedelta(minutes=number), "h": timedelta(hours=number)}.get(unit)
    result = amount if amount is not None else timedelta(days=number)
    if result <= timedelta(0):
        raise ValueError(f"a duration must be positive, got {text!r}")
    return result


def _duration(text: str) -> str:
    parse_duration(text)
    return text


Duration = Annotated[str, AfterValidator(_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LimitSpec(_Model):
    limit: Duration
    clock: ClockKind | None = None  # the policy's clock unless given
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")] | None = None


def _limits(value: Any) -> Any:
    """A stage is "4h", {limit: 4h, clock: …}, or a list of named limits (staged)."""
    if isinstance(value, str):
        return [{"limit": value}]
    if isinstance(value, dict):
        return [value]
    return value


class StagesSpec(_Model):
    sign: Annotated[tuple[LimitSpec, ...], Field(min_length=1, max_length=8)] | None = None
    handle: Annotated[tuple[LimitSpec, ...], Field(min_length=1, max_length=8)] | None = None
    verify: Annotated[tuple[LimitSpec, ...], Field(min_length=1, max_length=8)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: _limits(value) for key, value in data.items()}
        return data


class RungSpec(_Model):
    after: Duration
    to: Literal["village", "town", "city"]


class MatchSpec(_Model):
    category: str | None = None  # an exact code
    category_prefix: str | None = None  # "city." — every category under it
    urgency: tuple[Urgency, ...] | None = None


class PolicySpec(_Model):
    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
    match: MatchSpec = MatchSpec()
    clock: ClockKind
    stages: StagesSpec
    warnings: tuple[Annotated[float, Field(gt=0, lt=1)], ...] | None = None
    escalation: tuple[RungSpec, ...] | None = None
    on_rework: Literal["restart", "keep"] | None = None


class OfficeSpec(_Model):
    hours: Annotated[tuple[str, ...], Field(min_length=1, max_length=6)]
    timezone: str = "Asia/Shanghai"


class DefaultsSpec(_Model):
    warnings: tuple[Annotated[float, Field(gt=0, lt=1)], ...] = (0.5, 0.8)
    escalation: tuple[RungSpec, ...] = ()
    on_rework: Literal["restart", "keep"] = "restart"


class PolicyFile(_Model):
    version: Annotated[int, Field(ge=1)]
    office_hours: OfficeSpec
    defaults: DefaultsSpec = DefaultsSpec()
    policies: Annotated[tuple[PolicySpec, ...], Field(min_length=1)]


# --- the loaded form --------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    name: str | None
    amount: timedelta
    clock: ClockKind


@dataclass(frozen=True)
class Rung:
    after: timedelta
    to: str  # village | town | city


@dataclass(frozen=True)
class Policy:
    id: str
    version: str  # the file's version tag: v<version>-<12 hex of its SHA-256>
    category: str | None
    category_prefix: str | None
    urgency: frozenset[Urgency] | None
    stages: dict[SlaStage, tuple[Limit, ...]]
    warnings: tuple[float, ...]
    escalation: tuple[Rung, ...]
    on_rework: str

    @property
    def tag(self) -> str:
        """What a timer and a signal record: the policy id at the file version."""
        return f"{self.id}@{self.version}"

    def matches(self, category: str, urgency: Urgency) -> bool:
        if self.category is not None and category != self.category:
            return False
        if self.category_prefix is not None and not category.startswith(self.category_prefix):
            return False
        return self.urgency is None or urgency in self.urgency


@dataclass(frozen=True)
class PolicySet:
    version: str
    office_hours: tuple[tuple[int, int], ...]
    timezone: str
    policies: tuple[Policy, ...]

    def select(self, category: str, urgency: Urgency) -> Policy:
        """The first policy matching the case; the loader made sure the last matches every case."""
        return next(p for p in self.policies if p.matches(category, urgency))

    def limits(
        self, category: str, urgency: Urgency, stage: SlaStage
    ) -> tuple[Policy, tuple[Limit, ...]]:
        """The policy in force and its limits for one stage (none: the stage is not timed)."""
        policy = self.select(category, urgency)
        return policy, policy.stages.get(stage, ())

    def __len__(self) -> int:
        return len(self.policies)


Loc = tuple[str | int, ...]


def _findings(spec: PolicyFile, categories: Sequence[str] | None) -> list[Finding]:
    found: list[Finding] = []
    seen: dict[str, int] = {}
    for index, policy in enumerate(spec.policies):
        loc: Loc = ("policies", index)
        if policy.id in seen:
            first = ("policies", seen[policy.id], "id")
            found.append(Finding((*loc, "id"), f"duplicate policy id {policy.id!r}", first))
        seen.setdefault(policy.id, index)
        found += _match_findings(loc, policy.match, categories)
        for stage in ("sign", "handle", "verify"):
            found += _stage_findings((*loc, "stages", stage), policy, getattr(policy.stages, stage))
        if list(policy.warnings or ()) != sorted(set(policy.warnings or ())):
            found.append(Finding((*loc, "warnings"), "warning points must increase"))
        found += _ladder_findings((*loc, "escalation"), policy.escalation or ())
    last = spec.policies[-1].match
    if last.category or last.category_prefix or last.urgency:
        where = ("policies", len(spec.policies) - 1, "match")
        found.append(Finding(where, "the last policy must match every case (the default)"))
    try:
        OfficeHours.parse(spec.office_hours.hours, spec.office_hours.timezone)
    except ValueError as error:
        found.append(Finding(("office_hours",), str(error)))
    return found + _ladder_findings(("defaults", "escalation"), spec.defaults.escalation)


def _match_findings(loc: Loc, match: MatchSpec, categories: Sequence[str] | None) -> list[Finding]:
    found = []
    if match.category and match.category_prefix:
        found.append(Finding((*loc, "match"), "give category or category_prefix, not both"))
    if categories is None:
        return found
    if match.category and match.category not in categories:
        reason = f"unknown category {match.category!r}"
        found.append(Finding((*loc, "match", "category"), reason))
    prefix = match.category_prefix
    if prefix and not any(code.startswith(prefix) for code in categories):
        reason = f"no category starts with {prefix!r}"
        found.append(Finding((*loc, "match", "category_prefix"), reason))
    return found


def _stage_findings(
    loc: Loc, policy: PolicySpec, limits: tuple[LimitSpec, ...] | None
) -> list[Finding]:
    limits = limits or ()
    found = []
    names = [limit.name for limit in limits]
    if len(limits) > 1 and (None in names or len(set(names)) != len(names)):
        found.append(Finding(loc, "staged limits need distinct names"))
    for position, limit in enumerate(limits):
        clock = limit.clock or policy.clock
        in_days = limit.limit.endswith("d")
        if clock is ClockKind.WORKING_DAYS and not in_days:
            reason = "a working_days limit is counted in days: write e.g. 3d"
            found.append(Finding((*loc, position, "limit"), reason))
        if clock is ClockKind.WORKING_HOURS and in_days:
            reason = "a working_hours limit is counted in hours or minutes; use clock working_days"
            found.append(Finding((*loc, position, "limit"), reason))
    return found


def _ladder_findings(loc: Loc, rungs: Sequence[RungSpec]) -> list[Finding]:
    after = [parse_duration(rung.after) for rung in rungs]
    if after != sorted(set(after)):
        return [Finding(loc, "escalation rungs must come later and later")]
    return []


def load_policies(path: Path, *, against: ReferenceData | None = None) -> PolicySet:
    """Read and check `sla.yaml`; ConfigError lists every problem as file:line: reason."""
    source, issues = read_source(path, PolicyFile)
    if source is not None:
        categories = list(against.categories) if against is not None else None
        issues = source.issues(_findings(source.model, categories))
    if issues or source is None:
        raise ConfigError(sorted(issues, key=lambda issue: issue.line or 0))
    return _build(source.model, source.raw)


def _build(spec: PolicyFile, raw: bytes) -> PolicySet:
    version = f"v{spec.version}-{hashlib.sha256(raw).hexdigest()[:12]}"
    defaults = spec.defaults
    policies = tuple(
        Policy(
            id=p.id,
            version=version,
            category=p.match.category,
            category_prefix=p.match.category_prefix,
            urgency=frozenset(p.match.urgency) if p.match.urgency else None,
            stages={
                SlaStage(stage): tuple(
                    Limit(limit.name, parse_duration(limit.limit), limit.clock or p.clock)
                    for limit in limits
                )
                for stage in ("sign", "handle", "verify")
                if (limits := getattr(p.stages, stage))
            },
            warnings=p.warnings if p.warnings is not None else defaults.warnings,
            escalation=tuple(
                Rung(parse_duration(r.after), r.to)
                for r in (p.escalation if p.escalation is not None else defaults.escalation)
            ),
            on_rework=p.on_rework or defaults.on_rework,
        )
        for p in spec.policies
    )
    office = OfficeHours.parse(spec.office_hours.hours, spec.office_hours.timezone)
    return PolicySet(version, office.windows, office.timezone, policies)


def main(argv: list[str] | None = None) -> int:
    """`python -m services.sla.policies check [--config DIR] [FILE]`: validate a policy file (and
    the folder's visits.yaml, when there is one)."""
    import argparse  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from libs.common.refdata import load_reference_data  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m services.sla.policies")
    parser.add_argument("command", choices=["check"])
    parser.add_argument("file", nargs="?", type=Path, help="default: <config>/sla.yaml")
    parser.add_argument("--config", type=Path, default=Path("config"), help="reference data")
    args = parser.parse_intermixed_args(argv)
    from services.sla.visits import VISITS_FILE, load_register  # noqa: PLC0415

    visits = args.config / VISITS_FILE
    try:
        refdata = load_reference_data(args.config)
        policies = load_policies(args.file or args.config / POLICY_FILE, against=refdata)
        register = load_register(visits, against=refdata) if visits.exists() else None
    except ConfigError as error:
        for issue in error.issues:
            print(issue, file=sys.stderr)  # noqa: T201  # a command-line tool
        return 1
    residents = f"; {len(register.residents)} key residents" if register else ""
    print(f"OK: {len(policies)} policies (version {policies.version}){residents}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
