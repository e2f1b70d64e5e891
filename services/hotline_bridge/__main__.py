"""python -m services.hotline_bridge"""

from __future__ import annotations

from fastapi import FastAPI

from libs.common.serve import app_from_environment, load_settings, serve
from services.hotline_bridge.app import create_app
from services.hotline_bridge.settings import HotlineSettings


def app() -> FastAPI:
    return app_from_environment(HotlineSettings, create_app)


if __name__ == "__main__":
    serve("services.hotline_bridge.__main__:app", load_settings(HotlineSettings))
