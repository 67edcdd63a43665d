"""The one training loop: a run is a list of :class:`Stage` s, and this module owns all the
bookkeeping every trainer shares.

A stage is one optimizer's worth of training: its length, how it starts (``enter``: the
parameters it initialises and its fresh optimizer state, which also fixes which parameters it
trains), its step function and its validation. The denoiser and SUPPA trainers are one-stage
runs; iRestNet's greedy recipe is one stage per layer plus the end-to-end stage; a trainer that
alternates two kinds of step does so inside its step function.

What the loop guarantees, for every trainer:

- ``resume=None`` continues a run found in ``out_dir`` or starts one; ``True`` requires a
  checkpoint; ``False`` refuses to touch a folder that already holds one. A run's config must
  match the one it was started with (:func:`~jaxrestore.train.common.check_run_identity`), and
  a resumed run says ``resumed from step N`` on stderr.
- A checkpoint step is always a logged step: its loss is checked for divergence
  (:class:`~jaxrestore.train.common.TrainingDiverged`) before the state is saved, and a run
  resumed from it writes the same ``metrics.jsonl`` records as the uninterrupted run (the log is
  truncated to the checkpoint first; best checkpoints from the discarded future are deleted).
- A stage validates every ``validate_every`` of its own steps and at its end. The best score
  (higher is better) among the stages with ``select_best`` is kept in ``checkpoints/best``; the
  export is of that state, or of the last one if no stage validated.
- Parameters and optimizer state are replicated on the run's :class:`DataParallel` mesh; a
  checkpoint is restored into the current mesh whatever mesh saved it (a run started on 8
  devices resumes on 1 and vice versa). Only process 0 writes the log, the config record and
  the export; every process takes part in checkpoints (orbax coordinates them).
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
from jaxrestore.train.parallel import DataParallel

FORMAT = 2  # the checkpoint meta layout written by this loop (older layouts are read, see _read_meta)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One optimizer's worth of training.

    - ``enter(params) -> (params, opt_state)``: called at the stage's first step; initialises
      what the stage trains (e.g. a layer copied from the previous one) and returns the fresh
      optimizer state. Must be pure: it also gives the optimizer state's structure when resuming.
    - ``step(params, opt_state, step) -> (params, opt_state, loss, aux)``: one update; ``step``
      is the global step index (0-based) the batch is drawn for; ``aux`` is a dict of scalars,
      averaged over the logged window like the loss.
    - ``validate(params) -> (score, fields)``: the score to maximise and the record fields.
    - ``fields(params, step) -> dict``: extra record fields at a logged step (``step`` = updates
      done).
    """

    name: str
    steps: int
    enter: Callable[[Any], tuple]
    step: Callable[[Any, Any, int], tuple]
    validate: Callable[[Any], tuple[float, dict]] | None = None
    validate_every: int | None = None  # stage steps; None: only at the stage's end
    select_best: bool = True
    fields: Callable[[Any, int], dict] = lambda params, step: {}
    desc: str | None = None  # the progress bar's description (default: the name)


@dataclasses.dataclass(frozen=True)
class Cadence:
    log_every: int
    checkpoint_every: int
    checkpoint_keep: int


def _default_postfix(record: dict, last_val: dict | None) -> dict:
    post = {"loss": f"{record['train_loss']:.4f}"}
    if last_val and "val_psnr" in last_val:
        post["val"] = f"{last_val['val_psnr']:.2f}"
    return post


@dataclasses.dataclass
class Run:
    """What a trainer hands the loop besides its stages."""

    export: Callable[[Any, int, dict | None, float], Path]  # (params, best_step, best_fields, elapsed) -> model file
    cadence: Cadence
    parallel: DataParallel | None = None
    postfix: Callable[[dict, dict | None], dict] = _default_postfix
    validate_first: bool = False  # validate the starting point (step 0) with stage 0's validation
    extras: dict = dataclasses.field(default_factory=dict)  # arrays saved with every checkpoint, checked on restore
    desc: str = "train"


def _read_meta(meta: dict) -> tuple[int, float | None, int | None, dict | None]:
    """``(stage, best_score, best_step, best_fields)`` of a checkpoint's meta record, in this
    loop's layout or in the two layouts of the loops it replaced (iRestNet's phases with the
    lowest validation loss; the denoiser/SUPPA loop's best PSNR)."""
    if meta.get("format") == FORMAT:
        return int(meta.get("stage") or 0), meta.get("best_score"), meta.get("best_step"), meta.get("best_fields")
    if "phase" in meta:  # iRestNet before the common loop; phase index == stage index
        best = meta.get("best_step")
        fields = None if best is None else {"val_loss": meta["best_val_loss"], "val_ssim": meta["best_val_ssim"]}
        return int(meta["phase"] or 0), None if best is None else -meta["best_val_loss"], best, fields
    best = meta.get("best_step")
    fields = None if best is None else {"val_psnr": meta["best_psnr"]}
    return 0, None if best is None else meta["best_psnr"], best, fields


def run_stages(config, stages: list[Stage], params, run: Run, *, resume: bool | None, max_steps: int | None,
               progress: bool) -> TrainResult:
    """Run ``stages`` in order from ``params`` (or from the newest checkpoint in
    ``config.out_dir``; ``config`` has ``out_dir`` and ``run_identity()``), up to ``max_steps``
    global steps (``None``: to the end)."""
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    if not stages or any(s.steps < 0 for s in stages):
        raise ValueError("a run needs at least one stage, each of >= 0 steps")
    par = run.parallel or DataParallel.create(1)
    main = par.is_main
    starts = np.cumsum([0] + [s.steps for s in stages]).tolist()
    total = starts[-1]
    out_dir: Path = config.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    periodic = CheckpointStore(out_dir / "checkpoints" / "periodic", max_to_keep=run.cadence.checkpoint_keep)
    best_store = CheckpointStore(out_dir / "checkpoints" / "best", max_to_keep=1)
    latest = periodic.latest_step()
    if latest is None and resume:
        raise ValueError(f"cannot restore checkpoint from {periodic.directory}: no checkpoint found")
    if latest is not None and resume is False:
        raise ValueError(f"{out_dir} already holds checkpoints; resume the run or choose another output folder")
    check_run_identity(config, latest is not None, write=main)

    step, elapsed, best, opt_state, current = 0, 0.0, None, None, None  # best: (score, step, fields); current: stage index
    params = par.replicate(strong(params))
    extras = par.replicate(strong(run.extras))
    if latest is not None:
        meta = periodic.restore_meta(latest)
        current, best_score, best_step, best_fields = _read_meta(meta)
        if not 0 <= current < len(stages):
            raise ValueError(f"cannot restore checkpoint {periodic.directory}/{latest}: unknown stage {current!r} "
                             f"(this run has {len(stages)})")
        template = {"params": params, "opt": par.replicate(strong(stages[current].enter(params)[1])), **extras}
        state, meta = periodic.restore(latest, template)
        for k, v in extras.items():
            if not np.array_equal(np.asarray(state[k]), np.asarray(v)):
                raise ValueError(f"cannot restore checkpoint {periodic.directory}/{latest}: its '{k}' differs from this "
                                 "run's (it was made with another seed)")
        params, opt_state = par.replicate(strong(state["params"])), par.replicate(strong(state["opt"]))
        step, elapsed = latest, float(meta.get("elapsed") or 0.0)
        if not starts[current] <= step <= starts[current + 1]:
            raise ValueError(f"cannot resume from the checkpoint of step {step}: it holds the optimizer of stage "
                             f"{current} ({stages[current].name}, steps {starts[current]}..{starts[current + 1]})")
        if best_step is not None:
            best = (best_score, best_step, best_fields)
        print(f"resumed from step {step} of {total} ({out_dir})", file=sys.stderr)
    best_store.delete_after(step)
    if par.active and main:
        print(f"data parallel: {par.describe()}, batch split along the 'data' axis", file=sys.stderr)
    log = MetricsLog(out_dir / "metrics.jsonl", keep_until=step) if main else None

    def write(record):
        if log is not None:
            log.write(record)

    def save():
        meta = {"format": FORMAT, "stage": current, "elapsed": elapsed, "best_score": best and best[0],
                "best_step": best and best[1], "best_fields": best and best[2]}
        periodic.save(step, {"params": params, "opt": opt_state, **extras}, meta)

    stop_at = total if max_steps is None else min(total, max_steps)
    if run.validate_first and step == 0 and stop_at > 0 and stages[0].validate is not None:
        score, fields = stages[0].validate(params)
        write({"step": 0, **fields, "wall_time": 0.0})
        best = (score, 0, fields)
        best_store.save(0, params, fields)
    t0, e0 = time.perf_counter(), elapsed
    bar = tqdm(total=total, initial=step, file=sys.stderr, disable=None if (progress and main) else True, unit="step",
               dynamic_ncols=True, desc=run.desc)
    last_val = best and best[2]
    try:
        for index, stage in enumerate(stages):
            start, end = starts[index], starts[index + 1]
            if step >= end:
                continue
            if step >= stop_at:
                break
            if step == start and current != index:
                params, opt_state = stage.enter(params)
                params, opt_state = par.replicate(params), par.replicate(strong(opt_state))
                current = index
            elif current != index:
                raise ValueError(f"cannot resume from the checkpoint of step {step}: it holds the optimizer of stage "
                                 f"{current}, not of stage {index} ({stage.name})")
            bar.set_description(stage.desc or stage.name)
            pending = []
            while step < min(end, stop_at):
                params, opt_state, loss, aux = stage.step(params, opt_state, step)
                pending.append((loss, aux))
                step += 1
                local = step - start
                validate_now = stage.validate is not None and (
                    step == end or (stage.validate_every is not None and local % stage.validate_every == 0))
                checkpoint_now = step % run.cadence.checkpoint_every == 0 or step == stop_at
                if not (validate_now or checkpoint_now or step % run.cadence.log_every == 0):
                    bar.update()
                    continue
                elapsed = e0 + time.perf_counter() - t0
                record = {"step": step, **stage.fields(params, step),
                          "train_loss": float(np.mean([float(v) for v, _ in pending]))}
                record.update({k: float(np.mean([float(a[k]) for _, a in pending])) for k in pending[0][1]})
                pending = []
                if not np.isfinite(record["train_loss"]):
                    raise TrainingDiverged(f"training loss is {record['train_loss']} at step {step} ({stage.name})")
                if validate_now:
                    score, fields = stage.validate(params)
                    record.update(fields)
                    last_val = fields
                    if stage.select_best and (best is None or score > best[0]):
                        best = (score, step, fields)
                        best_store.save(step, params, fields)
                record["wall_time"] = round(elapsed, 3)
                write(record)
                bar.set_postfix(run.postfix(record, last_val), refresh=False)
                bar.update()
                if checkpoint_now:
                    save()
        if current is not None and step not in periodic.steps():
            elapsed = e0 + time.perf_counter() - t0
            save()
    finally:
        bar.close()
        if log is not None:
            log.close()
    completed = step >= total
    weights = None
    if completed:
        final, best_step, best_fields = params, step, None
        if best is not None:
            final, meta = best_store.restore(best[1], params)
            best_step, best_fields = meta["step"], best[2]
        if main:
            weights = run.export(strong(final), best_step, best_fields, elapsed)
    periodic.close()
    best_store.close()
    fields = (best and best[2]) or {}
    return TrainResult(out_dir=out_dir, steps=step, total_steps=total, completed=completed, weights=weights,
                       best_step=best and best[1], best_val_loss=fields.get("val_loss"), best_val_ssim=fields.get("val_ssim"),
                       elapsed=elapsed, metrics=out_dir / "metrics.jsonl", best_val_psnr=fields.get("val_psnr"),
                       best_fields=(best and best[2]) or None)


__all__ = ["Stage", "Cadence", "Run", "run_stages", "FORMAT"]
