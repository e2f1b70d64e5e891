"""`python -m deploy.demo_traffic`: a grid worker's app filing a report every few seconds, for
the compose `demo` profile (and for watching the dashboards move). Reads INTAKE_URL (default
http://127.0.0.1:8001), GRIDFLOW_WORKER_JWT_SECRET, DEMO_INTERVAL_SECONDS (default 5).
Reports are made up: categories and grids of the demo city, no personal information."""

from __future__ import annotations

import json
import os
import random
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

from libs.common.auth import mint_token

WORKER = "W0001"
GRIDS = ("430281001001001", "430281001001002", "430281001002001")
REPORTS = (
    ("city.garbage", "路边暴露垃圾", "人民路与解放路交叉口有一堆生活垃圾未清运。"),
    ("city.street_vending", "占道经营", "菜市场门口流动摊贩占用人行道。"),
    ("city.road_damage", "道路破损", "建设路中段路面坑槽，约一平方米。"),
    ("city.manhole_cover", "井盖破损", "学府路公交站旁井盖破裂，存在安全隐患。"),
    ("other.general", "其他事项", "小区门口路灯夜间不亮。"),
)


def report(rng: random.Random) -> bytes:
    category, title, description = rng.choice(REPORTS)
    body = {
        "category": category,
        "title": title,
        "description": description,
        "location": {"unit_grid": rng.choice(GRIDS)},
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=rng.randint(1, 30))).isoformat(),
    }
    return json.dumps(body, ensure_ascii=False).encode()


def main() -> int:
    secret = os.environ.get("GRIDFLOW_WORKER_JWT_SECRET")
    if not secret:
        print("GRIDFLOW_WORKER_JWT_SECRET is not set", file=sys.stderr)
        return 2
    url = os.environ.get("INTAKE_URL", "http://127.0.0.1:8001").rstrip("/") + "/v1/reports"
    interval = float(os.environ.get("DEMO_INTERVAL_SECONDS", "5"))
    rng = random.Random()  # noqa: S311  # demo data, not security
    token, minted = "", datetime.min.replace(tzinfo=UTC)
    while True:
        now = datetime.now(UTC)
        if now - minted > timedelta(hours=1):
            token = mint_token(
                secret=secret,
                subject=WORKER,
                role="grid_worker",
                scopes=["reports:write"],
                grids=list(GRIDS),
                now=now,
                ttl=timedelta(hours=2),
            )
            minted = now
        request = urllib.request.Request(  # noqa: S310  # the configured intake URL
            url,
            data=report(rng),
            headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                print(f"report accepted: {response.status}", flush=True)
        except (urllib.error.URLError, TimeoutError) as exc:
            print(f"intake not answering: {exc}", flush=True)
        time.sleep(interval)


if __name__ == "__main__":
    raise SystemExit(main())
