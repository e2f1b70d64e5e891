"""python -m services.citycare_bridge"""

from __future__ import annotations

from fastapi import FastAPI

from libs.common.serve import app_from_environment, load_settings, serve
from services.citycare_bridge.app import create_app
from services.citycare_bridge.settings import CitycareSettings


def app() -> FastAPI:
    return app_from_environment(CitycareSettings, create_app)


if __name__ == "__main__":
    serve("services.citycare_bridge.__main__:app", load_settings(CitycareSettings))
