"""Pieces every training run shares: run-identity checks on resume, the result record, the
divergence error and host-fresh arrays."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrestore.data import atomic_open


def strong(tree):
    """Fresh arrays from the host: no weak types (``jnp.asarray(1.0)`` initialisers) and no
    device commitment (orbax restores committed arrays). ``jit`` keys its cache on both, so
    without this a restored or freshly initialised state would compile every step again."""
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), tree)


def cosine_lr(lr: float, lr_end: float, steps: int):
    """A learning rate decayed by a cosine from ``lr`` to ``lr_end`` over ``steps`` (an optax
    schedule), or the constant ``lr`` when ``lr_end == lr``."""
    if lr_end == lr:
        return lr
    return optax.cosine_decay_schedule(lr, steps, alpha=lr_end / lr)


RUN_ONLY_KEYS = ("out_dir", "log_every", "checkpoint_every", "checkpoint_keep", "name", "devices")


def run_identity(config_dict: dict) -> dict:
    """What a resumed run must agree on: the config record without the keys that only say where
    and how often a run writes (:data:`RUN_ONLY_KEYS`), so a run may move folders, log more often
    or change device count."""
    return {k: v for k, v in config_dict.items() if k not in RUN_ONLY_KEYS}


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite (typically a learning rate too high)."""


@dataclasses.dataclass
class TrainResult:
    out_dir: Path
    steps: int                  # global steps done
    total_steps: int
    completed: bool
    weights: Path | None        # the exported model (None until training completes)
    best_step: int | None
    best_val_loss: float | None
    best_val_ssim: float | None
    elapsed: float              # seconds of training, over all resumed sessions
    metrics: Path
    best_val_psnr: float | None = None
    best_fields: dict | None = None  # every validation field of the best step


def check_run_identity(config, resuming: bool, *, write: bool = True) -> None:
    """Refuse to resume a run folder started with another config; record this run's config
    (``config.json``) unless ``write`` is false (processes other than the first of a multi-process run).
    A folder with checkpoints but no ``config.json`` is refused too: nothing says what made them."""
    path = config.out_dir / "config.json"
    identity = config.run_identity()
    if resuming and not path.is_file():
        raise ValueError(f"{config.out_dir} holds checkpoints but no config.json saying which config made them; "
                         "use another --out, or restore its config.json")
    if resuming:
        try:
            previous = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read {path}: {e}") from None
        if previous.get("run") != identity:
            diff = sorted(k for k in identity if previous.get("run", {}).get(k) != identity[k])
            raise ValueError(f"{config.out_dir} holds a run with a different config (differs in: {', '.join(diff) or 'format'}); "
                             "use another --out, or the config it was started with")
    if not write:
        return
    with atomic_open(path, "w") as f:
        json.dump({"run": identity, "config": config.to_dict()}, f, indent=2)
        f.write("\n")


__all__ = ["TrainingDiverged", "TrainResult", "check_run_identity", "run_identity", "RUN_ONLY_KEYS", "strong"]
