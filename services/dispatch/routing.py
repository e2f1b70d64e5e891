"""Which department a case goes to: the first rule of the routing table that matches.

Pure: the table is reference data, the decision records the rule and the table's version.
"""

from __future__ import annotations

from dataclasses import dataclass

from libs.common.events import CaseSubmitted, RoutingSnapshot
from libs.common.refdata import RoutingTable


@dataclass(frozen=True)
class RoutingDecision:
    department: str | None
    rule_id: str | None
    ruleset_version: str

    def snapshot(self) -> RoutingSnapshot:
        return RoutingSnapshot(rule_id=self.rule_id, ruleset_version=self.ruleset_version)


def route(case: CaseSubmitted, table: RoutingTable) -> RoutingDecision:
    for rule in table.rules:
        if case.category.code.startswith(rule.match.category_prefix):
            return RoutingDecision(rule.department, rule.id, table.version)
    return RoutingDecision(None, None, table.version)
