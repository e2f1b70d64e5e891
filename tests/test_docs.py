"""Docs are checked: every setting of every service is documented in docs/configuration.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from services.citycare_bridge.settings import CitycareSettings
from services.dispatch.settings import DispatchSettings
from services.hotline_bridge.settings import HotlineSettings
from services.intake.settings import IntakeSettings

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _variables(cls: type[BaseSettings]) -> list[str]:
    names = []
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        names.append(alias if isinstance(alias, str) else f"GRIDFLOW_{name.upper()}")
    return names


@pytest.mark.parametrize(
    "settings", [IntakeSettings, DispatchSettings, HotlineSettings, CitycareSettings]
)
def test_every_setting_is_documented(settings: type[BaseSettings]) -> None:
    text = (DOCS / "configuration.md").read_text()
    missing = [name for name in _variables(settings) if f"`{name}`" not in text]
    assert missing == []
