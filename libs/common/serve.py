"""Run a service's app under uvicorn: JSON logs, graceful SIGTERM, readable start-up failures."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI

from libs.common.logs import configure_logging
from libs.common.settings import ServiceSettings

log = logging.getLogger(__name__)
S = TypeVar("S", bound=ServiceSettings)


def serve(factory: str, settings: ServiceSettings) -> None:
    """Serve the app that `factory` ("module:function", no arguments) builds from the environment.
    One process per instance: scale out with more instances behind a load balancer."""
    configure_logging(service=settings.service_name, level=settings.log_level)
    options: dict[str, Any] = {
        "host": settings.http_host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 15,
        "lifespan": "on",
    }
    server = uvicorn.Server(uvicorn.Config(factory, factory=True, **options))
    server.run()
    if not server.started:
        log.error("%s did not start (see the errors above)", settings.service_name)
        sys.exit(3)


def app_from_environment(cls: type[S], create_app: Callable[[S], FastAPI]) -> FastAPI:
    """What a service's factory does in each (worker) process."""
    settings = load_settings(cls)
    configure_logging(service=settings.service_name, level=settings.log_level)
    return create_app(settings)


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
