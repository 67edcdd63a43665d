"""Atomic file writes: a temporary file in the destination folder, then ``os.replace``."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


STALE_SECONDS = 3600.0  # a temporary file this old was left by a writer that was killed (SIGKILL, power loss)


def _remove_stale(path: Path) -> None:
    """Delete ``.{name}.*.tmp`` files of earlier writes of ``path`` that never finished."""
    import time

    now = time.time()
    for old in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > STALE_SECONDS:
                old.unlink()


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb"):
    """Open ``path`` for writing so that it appears complete or not at all.

    Writes go to a temporary file next to ``path`` which is flushed, fsynced, given the
    permissions a plain ``open`` would (``mkstemp`` creates 0600), and renamed over ``path`` when
    the block exits normally; on any exception it is removed and ``path`` is left untouched.
    Temporary files of earlier writes of ``path`` killed before they could clean up (older than
    :data:`STALE_SECONDS`) are deleted first.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_open writes files; mode must contain 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


__all__ = ["atomic_open"]
