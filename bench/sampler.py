"""A statistical CPU profiler for benchmarks (py-spy is not in the venv, and cProfile
misattributes asyncio coroutines and SQLAlchemy's greenlets): runs a module as `__main__` with a
SIGPROF timer (process CPU time, as statprof does) whose handler, in the main thread, records the
stack and the asyncio task running at that moment, every `INTERVAL` of CPU time. Time spent
waiting (select, the broker, the database) is not sampled: the figures are shares of dispatch's
CPU time. A sampling thread would see the main thread only when it releases the GIL, i.e. in I/O
calls, and so overstates them.

    python -m bench.sampler OUT.json -m services.dispatch

SIGUSR1 starts the next phase (the benchmark sends it at its phase boundaries); each phase's
samples are aggregated apart. OUT.json is written when the module exits (also on Ctrl-C).
"""

from __future__ import annotations

import asyncio
import json
import runpy
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

INTERVAL = 0.002
_REPO = str(Path(__file__).resolve().parents[1])
MAX_DEPTH = 80
GROUPS = (
    ("/sqlalchemy/", "sqlalchemy"),
    ("/sqlmodel/", "sqlmodel"),
    ("/asyncpg/", "asyncpg"),
    ("/aiokafka/", "aiokafka"),
    ("/pydantic", "pydantic"),
    ("/httpx/", "httpx/httpcore"),
    ("/httpcore/", "httpx/httpcore"),
    ("/anyio/", "httpx/httpcore"),
    ("/prometheus_client/", "prometheus_client"),
    ("/uvicorn/", "uvicorn"),
    ("/libs/common/", "libs.common"),
    ("/services/dispatch/", "services.dispatch"),
    ("/services/sla/", "services.sla"),
    ("/asyncio/", "asyncio"),
    ("/json/", "json"),
    ("/logging/", "logging"),
)


def _group(filename: str) -> str:
    return next((name for part, name in GROUPS if part in filename), "other")


def _where(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    for marker in ("site-packages/", "/lib/python3.11/", f"{_REPO}/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{code.co_firstlineno}({code.co_name})"


class Phase:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.ended: float | None = None  # when the next phase started
        self.samples = 0
        self.tasks: Counter[str] = Counter()
        self.leaf: Counter[str] = Counter()  # self time per function
        self.leaf_groups: Counter[str] = Counter()  # self time per package
        self.inclusive: Counter[str] = Counter()  # on the stack at all
        self.task_inclusive: Counter[str] = Counter()  # (task, function) on the stack

    def add(self, frame: FrameType, task: str) -> None:
        self.samples += 1
        leaf = _where(frame)
        self.tasks[task] += 1
        self.leaf[leaf] += 1
        self.leaf_groups[_group(frame.f_code.co_filename)] += 1
        seen = set()
        current: FrameType | None = frame
        depth = 0
        while current is not None and depth < MAX_DEPTH:
            where = _where(current)
            if where not in seen:
                seen.add(where)
                self.inclusive[where] += 1
                self.task_inclusive[f"{task} | {where}"] += 1
            current = current.f_back
            depth += 1

    def report(self) -> dict[str, Any]:
        total = max(1, self.samples)

        def share(counter: Counter[str], top: int) -> list[tuple[str, float]]:
            return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

        return {
            "seconds": round((self.ended or time.monotonic()) - self.started, 1),
            "samples": self.samples,
            "percent_by_task": share(self.tasks, 20),
            "self_percent_by_package": share(self.leaf_groups, 20),
            "self_percent_by_function": share(self.leaf, 40),
            "inclusive_percent_by_function": share(self.inclusive, 80),
            "inclusive_percent_by_task_and_function": share(self.task_inclusive, 120),
        }


def _current_task_name() -> str:
    current = asyncio.tasks._current_tasks  # type: ignore[attr-defined]  # private, read-only here
    for task in list(current.values()):  # one loop runs, in the main thread
        return str(task.get_name())
    return "(no task: event loop callbacks)"


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        sys.exit("usage: python -m bench.sampler OUT.json -m MODULE [ARGS...]")
    out, module = Path(sys.argv[1]), sys.argv[3]
    sys.argv = [module, *sys.argv[4:]]
    phases = [Phase()]

    def next_phase(*_: object) -> None:
        phases[-1].ended = time.monotonic()
        phases.append(Phase())

    signal.signal(signal.SIGUSR1, next_phase)

    def sample(_: int, frame: FrameType | None) -> None:
        if frame is not None:
            phases[-1].add(frame, _current_task_name())

    signal.signal(signal.SIGPROF, sample)
    signal.setitimer(signal.ITIMER_PROF, INTERVAL, INTERVAL)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        out.write_text(
            json.dumps([phase.report() for phase in phases], indent=1, ensure_ascii=False)
        )


if __name__ == "__main__":
    main()
