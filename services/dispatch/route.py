"""Try and check the routing tree from the command line.

    python -m services.dispatch.route test [--config DIR] [--rules FILE] [--at ISO-TIME]
                                           [--exclude DEPT]... CASE.json
    python -m services.dispatch.route check [--config DIR] [FILE]

`test` prints every route visited for the case (matched, or why not) and the decision; the case
is a `cases.submitted` payload in JSON, where case_id, reporter, occurred_at and reported_at may
be left out (routing does not read them). `check` validates a routing file against the reference
data of --config and prints each problem as `file:line: reason`. Exit status: 0 fine, 1 problems
(configuration, case file), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from libs.common.clock import SystemClock
from libs.common.events import CaseSubmitted
from libs.common.ids import new_case_id
from libs.common.refdata import ConfigError, ReferenceData, WeekdayCalendar, load_reference_data
from services.dispatch.routing import Explanation, Step, explain

PROG = "python -m services.dispatch.route"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    routing_file: Path | None = args.file if args.command == "check" else args.rules
    try:
        refdata = load_reference_data(args.config, routing_file=routing_file)
    except ConfigError as error:
        for issue in error.issues:
            print(issue, file=sys.stderr)
        return 1
    if args.command == "check":
        tree = refdata.routing
        file = routing_file or args.config / "routing.yaml"
        print(
            f"OK: {file}: {len(tree)} routes, {len(tree.time_windows)} time windows,"
            f" version {tree.version}"
        )
        return 0
    return _test(refdata, case_file=args.case, at=args.at, exclude=frozenset(args.exclude))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Try and check the routing tree.")
    commands = parser.add_subparsers(dest="command", required=True)
    test = commands.add_parser("test", help="route one case and show the path through the tree")
    check = commands.add_parser("check", help="validate a routing file")
    for command in (test, check):
        command.add_argument(
            "--config",
            type=Path,
            default=Path("config"),
            help="reference-data folder (default: config)",
        )
    test.add_argument("--rules", type=Path, help="routing file to use instead of DIR's")
    test.add_argument(
        "--at",
        type=_aware_time,
        default=None,
        help="the moment of the decision, with its offset, e.g. 2026-11-27T22:00+08:00"
        " (default: now)",
    )
    test.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="DEPT",
        help="a department that returned the case (repeatable)",
    )
    test.add_argument("case", type=Path, metavar="CASE.json", help="the case, as JSON")
    check.add_argument(
        "file", type=Path, nargs="?", help="routing file (default: DIR/routing.yaml)"
    )
    return parser


def _aware_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from error
    if moment.utcoffset() is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no UTC offset; write one, e.g. {text}+08:00"
        )
    return moment


def _test(
    refdata: ReferenceData, *, case_file: Path, at: datetime | None, exclude: frozenset[str]
) -> int:
    now = at or SystemClock().now()
    try:
        case = _read_case(case_file, now)
    except CaseFileError as error:
        for problem in error.problems:
            print(f"{case_file}: {problem}", file=sys.stderr)
        return 1
    explanation = explain(
        case,
        refdata.routing,
        now=now,
        calendar=WeekdayCalendar(),
        grid=refdata.grid,
        exclude=exclude,
    )
    print(f"routing tree {refdata.routing.version}, at {now.isoformat()}")
    for step in explanation.steps:
        print(_step_line(step, exclude))
    print(_result(explanation, refdata))
    return 0


class CaseFileError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _read_case(path: Path, now: datetime) -> CaseSubmitted:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CaseFileError([f"cannot read: {error.strerror}"]) from error
    except json.JSONDecodeError as error:
        raise CaseFileError([f"line {error.lineno}: not valid JSON: {error.msg}"]) from error
    if not isinstance(data, dict):
        raise CaseFileError(["expected a JSON object: a cases.submitted payload"])
    bookkeeping = {
        "case_id": new_case_id(now),
        "reporter": {"kind": "system"},
        "occurred_at": now.isoformat(),
        "reported_at": now.isoformat(),
    }
    try:
        return CaseSubmitted.model_validate(bookkeeping | data)
    except ValidationError as error:
        raise CaseFileError(
            [
                f"{'.'.join(map(str, detail['loc'])) or '(case)'}: {detail['msg']}"
                for detail in error.errors()
            ]
        ) from error


def _step_line(step: Step, exclude: frozenset[str]) -> str:
    node = step.route
    indent = "  " * step.depth
    if not step.matched:
        return f"{indent}{node.id}: no match: {'; '.join(step.reasons)}"
    parts = [f"{indent}{node.id}: matched"]
    if node.department is not None:
        excluded = " (excluded: returned the case)" if node.department in exclude else ""
        parts.append(f"department {node.department}{excluded}")
    if node.co_handling:
        parts.append(f"co-handling {', '.join(node.co_handling)}")
    if node.notify:
        parts.append(f"notify {', '.join(node.notify)}")
    if node.continues:
        parts.append("continue")
    if step.unvisited:
        later = "route" if step.unvisited == 1 else "routes"
        parts.append(f"stops: {step.unvisited} later sibling {later} not evaluated")
    return ", ".join(parts)


def _result(explanation: Explanation, refdata: ReferenceData) -> str:
    decision = explanation.decision
    if decision.department is not None:
        department = refdata.departments[decision.department].short_name
        lines = [f"department: {decision.department} ({department}), route {decision.rule_id}"]
    else:
        where = decision.triage_at or refdata.grid.city.code
        lines = [f"department: none, triage at {where} ({refdata.grid.node(where).name})"]
    lines += [
        f"co-handling: {', '.join(decision.co_handling) or '-'}",
        f"notify: {', '.join(decision.notify) or '-'}",
        f"path: {' > '.join(decision.path)}",
        f"ruleset version: {decision.ruleset_version}",
    ]
    return "result:\n" + "\n".join(f"  {line}" for line in lines)


if __name__ == "__main__":
    sys.exit(main())
