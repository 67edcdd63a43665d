"""Checkpoints: one orbax ``CheckpointManager`` per folder, each step holding a pytree of arrays
(``state``) and a JSON record (``meta``).

The meta carries a SHA-256 digest of the state's arrays, checked after every restore, so a
damaged checkpoint is reported instead of silently resuming from wrong numbers. Every failure
to read one (missing step, truncated or garbage file, wrong structure) is a ``ValueError``
``cannot restore checkpoint DIR/STEP: ...``.

Saves are synchronous: the states trained here are small, and a save that has returned is on
disk (orbax writes to a temporary folder and renames it when complete).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp


_HINT = " (delete that step's folder to fall back on an earlier checkpoint)"


def tree_digest(tree) -> str:
    """SHA-256 of every leaf's dtype, shape and bytes, in tree order."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        a = np.asarray(leaf)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def abstract(tree):
    """The ``ShapeDtypeStruct`` template of a pytree of arrays (what a restore fills in)."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def _describe(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    text = text.split(" See full TensorStore details")[0]  # followed by a page of spec dump
    return text if len(text) <= 300 else text[:300] + " ..."


@contextlib.contextmanager
def _quiet_orbax():
    """Orbax logs (through absl) a warning or error line for every unreadable metadata file
    before raising; the ``ValueError`` raised here says what matters, once."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class CheckpointStore:
    """Checkpoints of one folder; beyond ``max_to_keep`` the oldest are deleted (``None`` keeps
    all). The caller decides when to save (every N steps, at the end, on a new best)."""

    def __init__(self, directory, *, max_to_keep: int | None = None):
        self.directory = Path(directory).resolve()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=False,
            create=True,
        )
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except Exception as e:  # orbax raises many types for an unreadable folder
            raise ValueError(f"cannot open checkpoint folder {self.directory}: {_describe(e)}") from None

    def steps(self) -> list[int]:
        with _quiet_orbax():
            self._manager.reload()  # another process (or a crash) may have changed the folder
            return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state, meta: dict) -> None:
        """Write ``state`` and ``meta`` (plus the state's digest) as ``step``, replacing an
        existing checkpoint of that step."""
        if step in self._manager.all_steps():
            self._manager.delete(step)
        meta = dict(meta, step=int(step), digest=tree_digest(state))
        self._manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                           force=True)

    def _where(self, step) -> str:
        return f"{self.directory}/{step}"

    def restore_meta(self, step: int) -> dict:
        if step not in self.steps():
            raise ValueError(f"cannot restore checkpoint {self._where(step)}: no such checkpoint (have {self.steps() or 'none'})")
        try:
            with _quiet_orbax():
                meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as e:  # orbax and tensorstore raise many types for damaged files
            raise ValueError(f"cannot restore checkpoint {self._where(step)}: {_describe(e)}{_HINT}") from None
        if not isinstance(meta, dict) or meta.get("step") != step or "digest" not in meta:
            raise ValueError(f"cannot restore checkpoint {self._where(step)}: its meta record is damaged{_HINT}")
        return meta

    def restore(self, step: int, template) -> tuple:
        """``(state, meta)`` of ``step``; ``template`` is a pytree of arrays or
        ``ShapeDtypeStruct`` with the saved structure."""
        meta = self.restore_meta(step)
        try:
            with _quiet_orbax():
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract(template)))
                )["state"]
        except Exception as e:
            raise ValueError(f"cannot restore checkpoint {self._where(step)}: {_describe(e)}{_HINT}") from None
        if jax.tree.structure(restored) != jax.tree.structure(template):
            raise ValueError(f"cannot restore checkpoint {self._where(step)}: it holds a different state structure")
        if tree_digest(restored) != meta["digest"]:
            raise ValueError(f"cannot restore checkpoint {self._where(step)}: the arrays do not match their recorded digest "
                             f"(damaged files){_HINT}")
        return restored, meta

    def delete_after(self, step: int) -> None:
        """Remove the checkpoints of steps later than ``step`` (a resumed run rewrites them)."""
        for s in self.steps():
            if s > step:
                self._manager.delete(s)

    def close(self) -> None:
        self._manager.close()


__all__ = ["CheckpointStore", "tree_digest", "abstract"]
