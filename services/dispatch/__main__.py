"""python -m services.dispatch"""

from __future__ import annotations

from fastapi import FastAPI

from libs.common.serve import app_from_environment, load_settings, serve
from services.dispatch.app import create_app
from services.dispatch.settings import DispatchSettings


def app() -> FastAPI:
    return app_from_environment(DispatchSettings, create_app)


if __name__ == "__main__":
    serve("services.dispatch.__main__:app", load_settings(DispatchSettings))
