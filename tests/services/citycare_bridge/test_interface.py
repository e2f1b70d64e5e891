"""docs/citycare-openapi.yaml is what the partner models generate (it cannot drift from them)."""

from __future__ import annotations

import yaml

from services.citycare_bridge.interface import TARGET, main, openapi


def test_the_committed_openapi_file_is_current() -> None:
    assert main([]) == 0
    assert yaml.safe_load(TARGET.read_text()) == openapi()


def test_every_path_of_the_interface_is_signed() -> None:
    for path, operations in openapi()["paths"].items():
        for operation in operations.values():
            names = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
            assert names == {"webhook-id", "webhook-timestamp", "webhook-signature"}, path
