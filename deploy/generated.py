"""Files generated from code (dashboards, manifests): write them, or check they are current."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path


def write_or_check(
    argv: list[str] | None, *, prog: str, folder: Path, render: Callable[[], Mapping[str, str]]
) -> int:
    """`--write` writes every rendered file into `folder`; `--check` names each stale one on
    stderr and returns 1."""
    parser = argparse.ArgumentParser(prog=prog)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    files = render()
    if args.write:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        return 0
    stale = [
        name
        for name, text in files.items()
        if not (folder / name).exists() or (folder / name).read_text(encoding="utf-8") != text
    ]
    for name in stale:
        print(f"stale: {folder / name}; run python -m {prog} --write", file=sys.stderr)
    return 1 if stale else 0
