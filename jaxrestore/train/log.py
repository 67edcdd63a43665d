"""The metrics log: JSON lines, one per log event, each written with one ``write`` and a flush.

Every record has a ``step`` (optimizer updates done when it was written). A run resumed from
the checkpoint of step ``s`` first drops the records of later steps (they belong to the
interrupted run's future, which is about to be recomputed) and any damaged last line, by an
atomic rewrite of the file, so the log never holds a step twice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from jaxrestore.data import atomic_open


def _parse(line: str):
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("step"), int) else None


def read_metrics(path) -> list[dict]:
    """The records of a metrics file (damaged lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"metrics file not found: {path}")
    with open(path) as f:
        return [rec for rec in map(_parse, f) if rec is not None]


def _clean(value):
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Append-only JSON-lines log at ``path``, keeping only the records with ``step <=
    keep_until`` already there."""

    def __init__(self, path, *, keep_until: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with open(self.path) as f:
                lines = f.read().splitlines()
            kept = [ln for ln in lines if (rec := _parse(ln)) is not None and rec["step"] <= keep_until]
            if len(kept) != len(lines):
                with atomic_open(self.path, "w") as f:
                    f.write("".join(ln + "\n" for ln in kept))
        self._file = open(self.path, "a")

    def write(self, record: dict) -> None:
        line = json.dumps({k: _clean(v) for k, v in record.items()}, allow_nan=False)
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["MetricsLog", "read_metrics"]
