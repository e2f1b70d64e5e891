"""python -m services.dispatch"""

from __future__ import annotations

from libs.common.serve import load_settings, serve
from services.dispatch.app import create_app
from services.dispatch.settings import DispatchSettings

if __name__ == "__main__":
    settings = load_settings(DispatchSettings)
    serve(create_app(settings), settings)
