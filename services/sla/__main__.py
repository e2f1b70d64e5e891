"""python -m services.sla"""

from __future__ import annotations

from fastapi import FastAPI

from libs.common.serve import app_from_environment, load_settings, serve
from services.sla.app import create_app
from services.sla.settings import SlaSettings


def app() -> FastAPI:
    return app_from_environment(SlaSettings, create_app)


if __name__ == "__main__":
    serve("services.sla.__main__:app", load_settings(SlaSettings))
