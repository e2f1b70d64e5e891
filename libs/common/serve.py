"""Run a service's app under uvicorn: JSON logs, graceful SIGTERM, readable start-up failures."""

from __future__ import annotations

import logging
import sys
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

from libs.common.logs import configure_logging
from libs.common.settings import ServiceSettings

log = logging.getLogger(__name__)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    configure_logging(service=settings.service_name, level=settings.log_level)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=15,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        log.error("%s did not start (see the errors above)", settings.service_name)
        sys.exit(3)


S = TypeVar("S", bound=ServiceSettings)


def load_settings(cls: type[S]) -> S:
    """Build settings from the environment; on error print which variable is wrong and exit 2."""
    from pydantic import ValidationError  # noqa: PLC0415

    try:
        return cls()
    except ValidationError as exc:
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            name = field if field.isupper() else f"GRIDFLOW_{field.upper()}"
            print(f"configuration: {name}: {error['msg']}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
