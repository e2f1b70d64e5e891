"""python -m services.intake"""

from __future__ import annotations

from libs.common.serve import load_settings, serve
from services.intake.app import create_app
from services.intake.settings import IntakeSettings

if __name__ == "__main__":
    settings = load_settings(IntakeSettings)
    serve(create_app(settings), settings)
