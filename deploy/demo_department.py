"""A department system that receives gridflow's signed webhooks: verifies each signature, answers
like a real receiver (including configured failures) and logs what it got (masked fields only).

`python -m deploy.demo_department --port 8090` serves every department of the reference data at
/departments/<short_code>, reading each secret from the variable its receiver names. Tests use the
same class in-process with their own secrets and failure plans.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from libs.common.signing import SignatureError, verify

log = logging.getLogger("demo_department")


@dataclass(frozen=True)
class Received:
    department: str
    webhook_id: str
    body: dict[str, Any]
    at: datetime
    signature: str = ""  # the webhook-signature header: one or more space-separated signatures


@dataclass
class DepartmentReceiver:
    """Department systems behind one HTTP server; `plans` queue the status codes to answer next."""

    secrets: Mapping[str, list[str]]
    received: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)
    plans: dict[str, deque[tuple[int, str | None]]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    attempts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def fail_next(self, department: str, *statuses: int, retry_after: str | None = None) -> None:
        """Answer the next attempts with these statuses (with a Retry-After header, if given)."""
        self.plans[department].extend((status, retry_after) for status in statuses)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/departments/{code}", self._receive, methods=["POST"]),
                Route("/healthz", _healthz, methods=["GET"]),
            ]
        )

    async def _receive(self, request: Request) -> JSONResponse:
        code = request.path_params["code"]
        secrets = self.secrets.get(code)
        if secrets is None:
            return JSONResponse({"error": "unknown department"}, status_code=404)
        body = await request.body()
        try:
            verify(secrets=secrets, headers=request.headers, body=body, now=datetime.now(UTC))
        except SignatureError as exc:
            log.warning("refused a delivery to %s: %s", code, exc)
            return JSONResponse({"error": str(exc)}, status_code=401)
        self.attempts[code] += 1
        plan = self.plans[code]
        if plan:
            status, retry_after = plan.popleft()
            headers = {"retry-after": retry_after} if retry_after is not None else None
            return JSONResponse({"error": "planned failure"}, status_code=status, headers=headers)
        payload = json.loads(body)
        webhook_id = request.headers["webhook-id"]
        case = payload.get("case", {})
        log.info(
            "department %s received case %s (%s, grid %s) webhook-id %s",
            code,
            case.get("case_id"),
            case.get("category", {}).get("code"),
            case.get("location", {}).get("unit_grid"),
            webhook_id,
        )
        signature = request.headers["webhook-signature"]
        await self.received.put(Received(code, webhook_id, payload, datetime.now(UTC), signature))
        return JSONResponse({"received": webhook_id}, status_code=200)


async def _healthz(_: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def main(argv: list[str] | None = None) -> None:
    from libs.common.logs import configure_logging  # noqa: PLC0415
    from libs.common.refdata import load_reference_data  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m deploy.demo_department")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--config", type=Path, default=Path("config"))
    args = parser.parse_args(argv)
    configure_logging(service="demo-department", level="INFO")
    refdata = load_reference_data(args.config)
    secrets = {  # during a rotation the department accepts either secret
        code: [os.environ[name] for name in d.receiver.secret_envs if name in os.environ]
        for code, d in refdata.departments.items()
        if d.receiver.kind == "webhook"
    }
    receiver = DepartmentReceiver(secrets=secrets)
    uvicorn.run(receiver.app(), host="127.0.0.1", port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
