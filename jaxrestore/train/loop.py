"""The step loop shared by the single-stage trainers (denoiser, SUPPA): resume from the newest
periodic checkpoint, log, validate, keep the best, checkpoint, export.

The trainer supplies what differs (the step, the validation, the record fields, the export);
this module owns the bookkeeping that must be identical everywhere:

- ``resume=None`` continues a run found in ``out_dir`` or starts one; ``True`` requires a
  checkpoint; ``False`` refuses to touch a folder that already holds one. A run's config must
  match the one it was started with (:func:`check_run_identity`).
- A checkpoint step is always a logged step: its loss is checked for divergence before the state
  is saved, and a run resumed from it writes the same ``metrics.jsonl`` records as the
  uninterrupted run (the log is truncated to the checkpoint first).
- The best validation score (higher is better) is kept in ``checkpoints/best``; the export is of
  that state, or of the last one if there was no validation.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from jaxrestore.train.checkpoint import CheckpointStore
from jaxrestore.train.common import TrainingDiverged, TrainResult, check_run_identity, strong
from jaxrestore.train.log import MetricsLog


@dataclasses.dataclass(frozen=True)
class Cadence:
    steps: int              # the run's length
    validate_every: int     # steps (and at the end)
    log_every: int
    checkpoint_every: int
    checkpoint_keep: int


@dataclasses.dataclass
class Hooks:
    """What a trainer supplies.

    step(params, opt_state, step) -> (params, opt_state, loss, aux): one optimizer step; ``aux``
        is a dict of scalars, averaged over the logged window like the loss.
    validate(params) -> (score, fields): the score to maximise and the record fields (which name it).
    export(params, best_step, best_score, elapsed) -> Path: the model file, once the run is complete.
    fields(params, step) -> dict: extra record fields at a logged step (learning rate, learned scalars).
    postfix(record) -> dict: the progress bar's postfix.
    """

    step: Callable[[Any, Any, int], tuple]
    validate: Callable[[Any], tuple[float, dict]]
    export: Callable[[Any, int, float | None, float], Path]
    fields: Callable[[Any, int], dict] = lambda params, step: {}
    postfix: Callable[[dict], dict] = lambda record: {"loss": f"{record['train_loss']:.4f}"}


def run_loop(config, cadence: Cadence, params, opt_state, hooks: Hooks, *, resume: bool | None, max_steps: int | None,
             progress: bool, desc: str, validate_first: bool = False) -> TrainResult:
    """Run ``config`` (it has ``out_dir`` and ``run_identity()``) from ``(params, opt_state)``
    or from the newest checkpoint in ``config.out_dir``, up to ``max_steps`` (``None``: to the
    end). ``validate_first`` validates the starting point (step 0), so that a fine-tuning run
    never exports a model worse than the one it started from."""
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    out_dir: Path = config.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    periodic = CheckpointStore(out_dir / "checkpoints" / "periodic", max_to_keep=cadence.checkpoint_keep)
    best_store = CheckpointStore(out_dir / "checkpoints" / "best", max_to_keep=1)
    step, elapsed, best = 0, 0.0, None  # best: (score, step)
    latest = periodic.latest_step()
    if latest is None and resume:
        raise ValueError(f"cannot restore checkpoint from {periodic.directory}: no checkpoint found")
    if latest is not None and resume is False:
        raise ValueError(f"{out_dir} already holds checkpoints; resume the run or choose another output folder")
    check_run_identity(config, latest is not None)
    if latest is not None:
        state, meta = periodic.restore(latest, {"params": params, "opt": opt_state})
        params, opt_state = strong(state["params"]), strong(state["opt"])
        step, elapsed = latest, float(meta.get("elapsed") or 0.0)
        if meta.get("best_step") is not None:
            best = (meta["best_psnr"], meta["best_step"])
    best_store.delete_after(step)
    log = MetricsLog(out_dir / "metrics.jsonl", keep_until=step)

    def save():
        periodic.save(step, {"params": params, "opt": opt_state},
                      {"elapsed": elapsed, "best_psnr": best and best[0], "best_step": best and best[1]})

    stop_at = cadence.steps if max_steps is None else min(cadence.steps, max_steps)
    if validate_first and step == 0 and stop_at > 0:
        score, fields = hooks.validate(params)
        log.write({"step": 0, **fields, "wall_time": 0.0})
        best = (score, 0)
        best_store.save(0, params, fields)
    t0, e0 = time.perf_counter(), elapsed
    bar = tqdm(total=cadence.steps, initial=step, file=sys.stderr, disable=None if progress else True, unit="step",
               dynamic_ncols=True, desc=desc)
    pending, last_val = [], best and best[0]
    try:
        while step < stop_at:
            params, opt_state, loss, aux = hooks.step(params, opt_state, step)
            pending.append((loss, aux))
            step += 1
            validate_now = step % cadence.validate_every == 0 or step == cadence.steps
            checkpoint_now = step % cadence.checkpoint_every == 0 or step == stop_at
            if validate_now or checkpoint_now or step % cadence.log_every == 0:
                elapsed = e0 + time.perf_counter() - t0
                record = {"step": step, **hooks.fields(params, step),
                          "train_loss": float(np.mean([float(v) for v, _ in pending]))}
                record.update({k: float(np.mean([float(a[k]) for _, a in pending])) for k in pending[0][1]})
                pending = []
                if not np.isfinite(record["train_loss"]):
                    raise TrainingDiverged(f"training loss is {record['train_loss']} at step {step}")
                if validate_now:
                    last_val, fields = hooks.validate(params)
                    record.update(fields)
                    if best is None or last_val > best[0]:
                        best = (last_val, step)
                        best_store.save(step, params, fields)
                record["wall_time"] = round(elapsed, 3)
                log.write(record)
                post = hooks.postfix(record)
                if last_val is not None:
                    post["val"] = f"{last_val:.2f}"
                bar.set_postfix(post, refresh=False)
                if checkpoint_now:
                    save()
            bar.update()
        if step not in periodic.steps():
            elapsed = e0 + time.perf_counter() - t0
            save()
    finally:
        bar.close()
        log.close()
    completed = step >= cadence.steps
    weights = None
    if completed:
        final, best_step = params, step
        if best is not None:
            final, meta = best_store.restore(best[1], params)
            best_step = meta["step"]
        weights = hooks.export(final, best_step, best and best[0], elapsed)
    periodic.close()
    best_store.close()
    return TrainResult(out_dir=out_dir, steps=step, total_steps=cadence.steps, completed=completed, weights=weights,
                       best_step=best and best[1], best_val_loss=None, best_val_ssim=None, elapsed=elapsed,
                       metrics=out_dir / "metrics.jsonl", best_val_psnr=best and best[0])


__all__ = ["Cadence", "Hooks", "run_loop"]
