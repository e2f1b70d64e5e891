"""python -m services.intake"""

from __future__ import annotations

from fastapi import FastAPI

from libs.common.serve import app_from_environment, load_settings, serve
from services.intake.app import create_app
from services.intake.settings import IntakeSettings


def app() -> FastAPI:
    return app_from_environment(IntakeSettings, create_app)


if __name__ == "__main__":
    serve("services.intake.__main__:app", load_settings(IntakeSettings))
