from __future__ import annotations

from typing import ClassVar

from libs.common.bridge.settings import BridgeSettings


class HotlineSettings(BridgeSettings):
    """The 12345 bridge: every setting is a bridge's (libs.common.bridge.settings)."""

    service_name: ClassVar[str] = "hotline_bridge"
    default_port: ClassVar[int] = 8004
