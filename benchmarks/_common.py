"""Helpers shared by the benchmark scripts (paths, tables, JSON output)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

from jaxrestore.data import atomic_open

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def default_data(*parts) -> str:
    return str(SHARED_DATA.joinpath(*parts))


def fail(msg: str) -> NoReturn:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def markdown_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        if v is None:
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path, obj) -> None:
    """Atomic JSON write (temporary file in the same folder, then rename)."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
