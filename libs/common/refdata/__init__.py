"""Reference data: the grid tree, departments, categories and routing rules, loaded from YAML."""

from libs.common.refdata.loader import ConfigError, ConfigIssue, load_reference_data
from libs.common.refdata.models import (
    Category,
    Department,
    GridLevel,
    GridNode,
    GridTree,
    Person,
    ReferenceData,
    RoutingRule,
    RoutingTable,
    RuleMatch,
    Sector,
    TownKind,
    VillageKind,
    WebhookReceiver,
    uscc_check_char,
)

__all__ = [
    "Category",
    "ConfigError",
    "ConfigIssue",
    "Department",
    "GridLevel",
    "GridNode",
    "GridTree",
    "Person",
    "ReferenceData",
    "RoutingRule",
    "RoutingTable",
    "RuleMatch",
    "Sector",
    "TownKind",
    "VillageKind",
    "WebhookReceiver",
    "load_reference_data",
    "uscc_check_char",
]
