"""The strict, frozen base every payload model builds on, and the shared annotated types."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class Contract(BaseModel):
    """Base of every payload and API model: unknown fields are refused, values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


CASE_ID_PATTERN = r"^C[0-9A-HJKMNP-TV-Z]{26}$"
CaseId = Annotated[
    str,
    Field(
        pattern=CASE_ID_PATTERN,
        description="gridflow case id: 'C' + a 26-character ULID (time-ordered)",
        examples=["C01JDQ7Y8XW2N3K4M5P6Q7R8S9T"],
    ),
]
UnitGridCode = Annotated[
    str,
    Field(
        pattern=r"^[0-9]{15}$",
        description="unit grid code: 12-digit village/community code + 3-digit sequence",
        examples=["430281001001001"],
    ),
]
GridNodeCode = Annotated[
    str,
    Field(
        pattern=r"^([0-9]{6}|[0-9]{9}|[0-9]{12}|[0-9]{15})$",
        description="grid node code: 6-digit county, 9-digit town, 12-digit village, 15-digit unit grid",
    ),
]
CategoryCode = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z_]*\.[a-z][a-z_]*$",
        description="gridflow's own category code",
        examples=["city.garbage"],
    ),
]
DepartmentCode = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_]{1,31}$",
        description="department short code from the reference data",
        examples=["chengguan"],
    ),
]
# Contract strips surrounding white space first, so a blank text fails min_length
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
LongText = Annotated[str, Field(min_length=1, max_length=4000)]
Timestamp = AwareDatetime
"""Timezone-aware datetime: a naive time is refused at the boundary."""

__all__ = [
    "CaseId",
    "CategoryCode",
    "Contract",
    "DepartmentCode",
    "GridNodeCode",
    "LongText",
    "ShortText",
    "Timestamp",
    "UnitGridCode",
    "datetime",
]
