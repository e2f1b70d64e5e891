"""The ceiling a benchmark compares intake with: a FastAPI endpoint that does nothing.

`python -m bench.trivial PORT`"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI

app = FastAPI()


@app.post("/v1/reports", status_code=202)
async def accept() -> dict[str, str]:
    return {"status": "accepted"}


if __name__ == "__main__":
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    uvicorn.run(
        "bench.trivial:app",
        host="127.0.0.1",
        port=int(sys.argv[1]),
        workers=workers,
        log_level="warning",
        access_log=False,
    )
