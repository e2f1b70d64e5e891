"""The benches' tables in the documents: written between a pair of markers, the rest of the
document left as written by hand."""

from __future__ import annotations

from pathlib import Path


def write_between(path: Path, start: str, end: str, table: str) -> None:
    text = path.read_text(encoding="utf-8")
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1]
    path.write_text(f"{before}{start}\n{table}\n{end}{after}", encoding="utf-8")
