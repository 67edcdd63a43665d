"""The common training loop (jaxrestore.train.loop.run_stages) on a toy problem: a two-stage
least-squares fit (stage "a" trains ``w`` with SGD, stage "b" trains ``b`` with Adam), so that
the bookkeeping is checked without any network: stage order and cadence, best-of-validation
restricted to the stages that select, exact resume inside either stage and across the
boundary, the older checkpoint layouts, divergence and the run-identity guards."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrestore.train.checkpoint import CheckpointStore
from jaxrestore.train.common import TrainingDiverged
from jaxrestore.train.log import read_metrics
from jaxrestore.train.loop import Cadence, Run, Stage, run_stages

X = np.linspace(-1, 1, 16, dtype=np.float32)
Y = 3.0 * X + 0.5


@dataclasses.dataclass(frozen=True)
class Toy:
    out_dir: Path
    lr: float = 0.1

    def run_identity(self):
        return {"lr": self.lr}

    def to_dict(self):
        return {"lr": self.lr, "out_dir": str(self.out_dir)}


def loss(p):
    return jnp.mean((p["w"] * X + p["b"] - Y) ** 2)


def stages(config, *, blow_up_at=None, calls=None):
    sgd, adam = optax.sgd(config.lr), optax.adam(0.05)

    def step_of(name, tx):
        @jax.jit
        def update(p, o):
            value, g = jax.value_and_grad(loss)(p)
            sub = {name: g[name]}
            u, o = tx.update(sub, o, {name: p[name]})
            return {**p, name: p[name] + u[name]}, o, value

        def step(p, o, i):
            if calls is not None:
                calls.append(i)
            p, o, value = update(p, o)
            if blow_up_at is not None and i + 1 >= blow_up_at:
                value = jnp.float32(np.nan)
            return p, o, value, {"w": p["w"]}
        return step

    def validate(p):
        v = float(loss(p))
        return -v, {"val_loss": v}

    return [Stage("a", 4, enter=lambda p: (p, sgd.init({"w": p["w"]})), step=step_of("w", sgd), validate=validate,
                  validate_every=2, select_best=False, fields=lambda p, s: {"stage": "a"}),
            Stage("b", 5, enter=lambda p: ({**p, "b": p["w"] * 0.1}, adam.init({"b": p["b"]})), step=step_of("b", adam),
                  validate=validate, validate_every=2, fields=lambda p, s: {"stage": "b"})]


def go(out, *, max_steps=None, resume=None, exported=None, **kw):
    config = Toy(out)

    def export(p, best_step, best_fields, elapsed):
        if exported is not None:
            exported.append((jax.tree.map(np.asarray, p), best_step, best_fields))
        path = out / "model.json"
        path.write_text(json.dumps({k: float(v) for k, v in p.items()}))
        return path

    run = Run(export=export, cadence=Cadence(log_every=3, checkpoint_every=3, checkpoint_keep=10), desc="toy")
    params = {"w": jnp.float32(0.0), "b": jnp.float32(0.0)}
    return run_stages(config, stages(config, **kw), params, run, resume=resume, max_steps=max_steps, progress=False)


def records(out):
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in read_metrics(out / "metrics.jsonl")]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    exported = []
    return out, go(out, exported=exported), exported


def test_stages_run_in_order_with_their_cadence_and_best(full):
    out, result, exported = full
    assert result.completed and result.steps == result.total_steps == 9
    recs = records(out)
    # logged: every 3 steps, every validation (2 and 4 steps into a stage, and its end), the end
    assert [r["step"] for r in recs] == [2, 3, 4, 6, 8, 9]
    assert [r["stage"] for r in recs] == ["a"] * 3 + ["b"] * 3
    assert [r["step"] for r in recs if "val_loss" in r] == [2, 4, 6, 8, 9]
    # stage b's enter ran once: b started at 0.1 w, and only stage b's validations compete
    b_vals = {r["step"]: r["val_loss"] for r in recs if "val_loss" in r and r["stage"] == "b"}
    assert result.best_step == min(b_vals, key=b_vals.get) and result.best_val_loss == min(b_vals.values())
    p, best_step, fields = exported[0]
    assert best_step == result.best_step and fields == {"val_loss": result.best_val_loss}
    assert abs(float(loss(p)) - result.best_val_loss) < 1e-6  # the exported state is the best one
    assert CheckpointStore(out / "checkpoints" / "best").steps() == [result.best_step]


@pytest.mark.parametrize("stop", [2, 4, 6])  # inside stage a; at the boundary; inside stage b (logged steps:
# a stop between them logs its own record, whose loss window the resumed run then starts after)
def test_resume_anywhere_is_the_uninterrupted_run(full, tmp_path, stop, capsys):
    out_full, result, _ = full
    out = tmp_path / "run"
    first = go(out, max_steps=stop)
    assert (first.steps, first.completed, first.weights) == (stop, False, None)
    calls = []
    second = go(out, resume=True, calls=calls)
    assert f"resumed from step {stop} of 9" in capsys.readouterr().err
    assert calls == list(range(stop, 9))  # no step done twice
    assert second.completed and second.best_step == result.best_step
    assert records(out) == records(out_full)
    a = CheckpointStore(out_full / "checkpoints" / "periodic").restore_meta(9)["digest"]
    assert CheckpointStore(out / "checkpoints" / "periodic").restore_meta(9)["digest"] == a
    assert (out / "model.json").read_text() == (out_full / "model.json").read_text()


def test_checkpoints_of_the_older_loops_resume(full, tmp_path):
    """The loops this one replaced wrote ``{"best_psnr", "best_step"}`` (denoiser, SUPPA) or
    ``{"phase", "best_val_loss", "best_val_ssim", "best_step"}`` (iRestNet) metas with the same
    state layout; such a checkpoint resumes to the same end."""
    out_full, result, _ = full
    out = tmp_path / "old"
    go(out, max_steps=6)
    store = CheckpointStore(out / "checkpoints" / "periodic")
    template = {"params": {"w": jnp.float32(0), "b": jnp.float32(0)},
                "opt": optax.adam(0.05).init({"b": jnp.float32(0)})}
    state, meta = store.restore(6, template)
    best = meta["best_step"]
    store.save(6, state, {"phase": 1, "elapsed": 1.0, "best_val_loss": meta["best_fields"]["val_loss"],
                          "best_val_ssim": 0.5, "best_step": best})
    store.close()
    assert "format" not in CheckpointStore(out / "checkpoints" / "periodic").restore_meta(6)
    second = go(out, resume=True)
    assert second.completed and second.best_step == result.best_step
    assert (out / "model.json").read_text() == (out_full / "model.json").read_text()


def test_divergence_stops_before_the_bad_state_is_saved(tmp_path):
    with pytest.raises(TrainingDiverged, match="training loss is nan at step 3 \\(a\\)"):
        go(tmp_path / "run", blow_up_at=3)
    assert CheckpointStore(tmp_path / "run" / "checkpoints" / "periodic").steps() == []
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")] == [2]


def test_run_guards(full, tmp_path):
    out_full, _, _ = full
    with pytest.raises(ValueError, match="no checkpoint found"):
        go(tmp_path / "empty", resume=True)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        go(out_full, resume=False)
    other = tmp_path / "other"
    shutil.copytree(out_full, other)
    with pytest.raises(ValueError, match="different config .*lr"):
        run_stages(Toy(other, lr=0.2), stages(Toy(other, lr=0.2)), {"w": jnp.float32(0), "b": jnp.float32(0)},
                   Run(export=lambda *a: None, cadence=Cadence(3, 3, 10)), resume=None, max_steps=None, progress=False)
    (other / "config.json").unlink()
    with pytest.raises(ValueError, match="holds checkpoints but no config.json"):
        go(other)
    with pytest.raises(ValueError, match="max_steps must be >= 0"):
        go(tmp_path / "neg", max_steps=-1)
