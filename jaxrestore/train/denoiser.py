"""Training a Gaussian denoiser (DRUNet) from a YAML config (``configs/denoiser/*.yaml``).

Schema (every key optional; unknown keys are errors)::

    kind: denoiser
    model: {channels: [64, 128, 256, 512], blocks: 4}
    data:
      train: ../shared/data/bsds500/train  # a folder, or a list of folders
      val: ../shared/data/bsds500/val
      crop: 128                          # random training crops, crop x crop
      val_crop: 256                      # centre crops of the validation images
      val_limit: 8                       # first N validation images (sorted names); null: all
    noise: {sigma_max: 50, val_sigmas: [15, 25, 50]}   # on the 0..255 scale
    schedule:
      batch_size: 16
      steps: 800000
      lr: 1.0e-4                         # cosine decay to lr_end over the run
      lr_end: 1.0e-6
      validate_every: 5000               # steps (and at the end)
      log_every: 10
    loss: l1                             # l1 (DRUNet's choice) or l2
    checkpoint: {every: 5000, keep: 3}
    seed: 0
    out_dir: runs/denoiser/<config name>

Every step draws ``batch_size`` random crops (a random one of the 8 flips/rotations each), one
noise level per image uniform in ``[0, sigma_max]``, and minimises the loss between
``D(x + sigma n, sigma)`` and ``x`` with Adam. Validation: mean PSNR on the centre crops at each
of ``val_sigmas`` (fixed noise); the best mean is kept (``checkpoints/best``) and exported as
``drunet_<config name>.npz`` (:func:`jaxrestore.models.drunet.load_weights`) once the run is
complete. Batches, augmentations and noise are functions of ``(seed, step)``, so a resumed run
is the uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml
from flax import nnx
from tqdm import tqdm

from jaxrestore.data import ImageFolder
from jaxrestore.metrics import psnr
from jaxrestore.models.drunet import DRUNetConfig, create, save_weights
from jaxrestore.train.checkpoint import CheckpointStore
from jaxrestore.train.common import TrainingDiverged, TrainResult, check_run_identity, strong
from jaxrestore.train.config import DEFAULT_TRAIN, DEFAULT_VAL, _Reader, _resolve_folder
from jaxrestore.train.data import TrainImages, step_keys
from jaxrestore.train.log import MetricsLog


@dataclasses.dataclass(frozen=True)
class DenoiserTrainConfig:
    model: DRUNetConfig
    train: tuple[Path, ...]
    val: Path
    crop: int
    val_crop: int
    val_limit: int | None
    sigma_max: float           # 0..255 scale
    val_sigmas: tuple[float, ...]
    batch_size: int
    steps: int
    lr: float
    lr_end: float
    validate_every: int
    log_every: int
    loss: str
    checkpoint_every: int
    checkpoint_keep: int
    seed: int
    out_dir: Path
    name: str = "run"
    source: str = "<dict>"

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("source",)}
        d["model"] = dataclasses.asdict(self.model)
        d["model"]["channels"] = list(self.model.channels)
        d["train"] = [str(p) for p in self.train]
        d["val"], d["out_dir"] = str(self.val), str(self.out_dir)
        d["val_sigmas"] = list(self.val_sigmas)
        return d

    def run_identity(self) -> dict:
        """What a resumed run must agree on (not the folder, logging or checkpoint cadence)."""
        d = self.to_dict()
        for k in ("out_dir", "log_every", "checkpoint_every", "checkpoint_keep", "name"):
            d.pop(k)
        return d


def denoiser_config_from_dict(raw, *, source: str = "<dict>", out_dir=None) -> DenoiserTrainConfig:
    top = _Reader(raw, "", source)
    kind = top.raw("kind", "denoiser")
    if kind != "denoiser":
        raise ValueError(f"{source}: 'kind' must be denoiser here, got {kind!r}")
    m = top.sub("model")
    channels = m.raw("channels", [64, 128, 256, 512])
    if not isinstance(channels, list) or not channels or not all(
            isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels):
        raise ValueError(f"{source}: 'model.channels' must be a list of positive integers, got {channels!r}")
    model = DRUNetConfig(channels=tuple(channels), blocks=m.integer("blocks", 4, minimum=0))
    m.done()
    d = top.sub("data")
    train = d.raw("train", DEFAULT_TRAIN)
    train = [train] if isinstance(train, (str, Path)) else train
    if not isinstance(train, list) or not train:
        raise ValueError(f"{source}: 'data.train' must be a folder or a non-empty list of folders")
    train = tuple(_resolve_folder(t, "data.train", source, None) for t in train)
    val = _resolve_folder(d.raw("val", DEFAULT_VAL), "data.val", source, None)
    crop = d.integer("crop", 128, minimum=model.multiple)
    val_crop = d.integer("val_crop", 256, minimum=model.multiple)
    val_limit = d.integer("val_limit", 8, minimum=1, optional=True)
    d.done()
    n = top.sub("noise")
    sigma_max = n.positive_float("sigma_max", 50.0)
    val_sigmas = n.raw("val_sigmas", [15, 25, 50])
    if not isinstance(val_sigmas, list) or not val_sigmas or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 255 for v in val_sigmas):
        raise ValueError(f"{source}: 'noise.val_sigmas' must be a list of noise levels in (0, 255), got {val_sigmas!r}")
    n.done()
    s = top.sub("schedule")
    batch_size = s.integer("batch_size", 16, minimum=1)
    steps = s.integer("steps", 10000, minimum=1)
    lr = s.positive_float("lr", 1e-4)
    lr_end = s.positive_float("lr_end", lr / 100)
    validate_every = s.integer("validate_every", 1000, minimum=1)
    log_every = s.integer("log_every", 10, minimum=1)
    s.done()
    loss = top.choice("loss", "l1", ("l1", "l2"))
    c = top.sub("checkpoint")
    every, keep = c.integer("every", validate_every, minimum=1), c.integer("keep", 3, minimum=1)
    c.done()
    seed = top.integer("seed", 0, minimum=0)
    file_out = top.raw("out_dir")
    top.done()
    name = Path(source).stem if source != "<dict>" else "run"
    out = Path(out_dir if out_dir is not None else file_out if file_out else f"runs/denoiser/{name}").expanduser().resolve()
    return DenoiserTrainConfig(model, train, val, crop, val_crop, val_limit, float(sigma_max), tuple(float(v) for v in val_sigmas),
                               batch_size, steps, lr, lr_end, validate_every, log_every, loss, every, keep, seed, out, name,
                               source)


def load_denoiser_config(path, *, out_dir=None) -> DenoiserTrainConfig:
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    return denoiser_config_from_dict(raw, source=str(path), out_dir=out_dir)


# ----------------------------------------------------------------------------- the step


def dihedral(x, k):
    """The ``k``-th (0..7) of the 8 flips/rotations of a batch ``(N, H, W, C)`` of square crops."""
    branches = [lambda v, r=r, f=f: jnp.rot90(v[:, :, ::-1] if f else v, r, axes=(1, 2)) for f in (0, 1) for r in range(4)]
    return jax.lax.switch(k, branches, x)


def noisy_batch(key, x, sigma_max: float):
    """Augment ``x`` (one transform per image), draw ``sigma ~ U[0, sigma_max]`` per image (0..1
    scale) and return ``(clean, noisy, sigma)``."""
    k_aug, k_sig, k_noise = jax.random.split(key, 3)
    ks = jax.random.randint(k_aug, (x.shape[0],), 0, 8)
    x = jax.vmap(lambda v, k: dihedral(v[None], k)[0])(x, ks)
    sigma = jax.random.uniform(k_sig, (x.shape[0],), x.dtype, 0.0, sigma_max)
    y = x + sigma[:, None, None, None] * jax.random.normal(k_noise, x.shape, x.dtype)
    return x, y, sigma


def make_lr(config: DenoiserTrainConfig):
    """Cosine decay from ``lr`` to ``lr_end`` over the run."""
    return optax.cosine_decay_schedule(config.lr, config.steps, alpha=config.lr_end / config.lr)


def make_optimizer(config: DenoiserTrainConfig) -> optax.GradientTransformation:
    return optax.adam(make_lr(config))


@functools.partial(jax.jit, static_argnames=("graphdef", "tx", "sigma_max", "loss"))
def train_step(params, opt_state, x, key, step, *, graphdef, tx, sigma_max: float, loss: str):
    x, y, sigma = noisy_batch(step_keys(key, step)[1], x, sigma_max)

    def loss_fn(p):
        r = nnx.merge(graphdef, p)(y, sigma) - x
        return jnp.mean(jnp.abs(r)) if loss == "l1" else jnp.mean(r * r)

    value, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _denoise_psnr(params, x, y, sigma, *, graphdef):
    out = nnx.merge(graphdef, params)(y, sigma)
    return jax.vmap(psnr)(jnp.clip(out, 0.0, 1.0), x)


# ----------------------------------------------------------------------------- the run


def train_denoiser(config: DenoiserTrainConfig, *, resume: bool | None = None, max_steps: int | None = None,
                   progress: bool = True) -> TrainResult:
    """Train as ``config`` says, writing to ``config.out_dir``: ``metrics.jsonl``,
    ``checkpoints/periodic``, ``checkpoints/best`` and, once complete, ``drunet_<name>.npz``.
    ``resume`` and ``max_steps`` as in :func:`jaxrestore.train.irestnet.train_irestnet`."""
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    c = config
    c.out_dir.mkdir(parents=True, exist_ok=True)
    model = create(c.model, c.seed)
    graphdef, params = nnx.split(model)
    params = strong(params)
    tx = make_optimizer(c)
    opt_state = tx.init(params)
    key = jax.random.split(jax.random.key(c.seed))  # (train, validation)
    images = TrainImages(c.train, c.crop)
    val_x = ImageFolder(c.val, crop=c.val_crop, limit=c.val_limit).stack().astype(np.float32)
    val_noisy = []
    for i, s in enumerate(c.val_sigmas):
        n = np.asarray(jax.random.normal(jax.random.fold_in(key[1], i), val_x.shape, jnp.float32))
        val_noisy.append((s, (val_x + np.float32(s / 255.0) * n).astype(np.float32)))

    periodic = CheckpointStore(c.out_dir / "checkpoints" / "periodic", max_to_keep=c.checkpoint_keep)
    best_store = CheckpointStore(c.out_dir / "checkpoints" / "best", max_to_keep=1)
    step, elapsed, best = 0, 0.0, None  # best: (mean psnr, step)
    latest = periodic.latest_step()
    if latest is None and resume:
        raise ValueError(f"cannot restore checkpoint from {periodic.directory}: no checkpoint found")
    if latest is not None and resume is False:
        raise ValueError(f"{c.out_dir} already holds checkpoints; resume the run or choose another output folder")
    check_run_identity(c, latest is not None)
    if latest is not None:
        state, meta = periodic.restore(latest, {"params": params, "opt": opt_state})
        params, opt_state = strong(state["params"]), strong(state["opt"])
        step, elapsed = latest, float(meta.get("elapsed") or 0.0)
        if meta.get("best_step") is not None:
            best = (meta["best_psnr"], meta["best_step"])
    best_store.delete_after(step)
    log = MetricsLog(c.out_dir / "metrics.jsonl", keep_until=step)

    def validate():
        scores = {}
        for s, y in val_noisy:
            vals = [np.asarray(_denoise_psnr(params, jnp.asarray(val_x[i:i + 4]), jnp.asarray(y[i:i + 4]),
                                             jnp.full((len(y[i:i + 4]),), s / 255.0, jnp.float32), graphdef=graphdef))
                    for i in range(0, len(y), 4)]
            scores[f"val_psnr_{s:g}"] = float(np.mean(np.concatenate(vals)))
        return scores

    def save():
        meta = {"elapsed": elapsed, "best_psnr": best and best[0], "best_step": best and best[1]}
        periodic.save(step, {"params": params, "opt": opt_state}, meta)

    stop_at = c.steps if max_steps is None else min(c.steps, max_steps)
    t0, e0 = time.perf_counter(), elapsed
    bar = tqdm(total=c.steps, initial=step, file=sys.stderr, disable=None if progress else True, unit="step", dynamic_ncols=True,
               desc="denoiser")
    pending, last_val = [], None
    try:
        while step < stop_at:
            x = jnp.asarray(images.batch(key[0], step, c.batch_size))
            params, opt_state, loss = train_step(params, opt_state, x, key[0], np.uint32(step), graphdef=graphdef, tx=tx,
                                                 sigma_max=c.sigma_max / 255.0, loss=c.loss)
            pending.append(loss)
            step += 1
            validate_now = step % c.validate_every == 0 or step == c.steps
            # a checkpoint step is also logged: its loss is checked for divergence first, and a run
            # resumed from it logs the same records as the uninterrupted one
            checkpoint_now = step % c.checkpoint_every == 0 or step == stop_at
            if validate_now or checkpoint_now or step % c.log_every == 0:
                elapsed = e0 + time.perf_counter() - t0
                record = {"step": step, "lr": float(make_lr(c)(step - 1)), "train_loss": float(np.mean([float(v) for v in pending]))}
                pending = []
                if not np.isfinite(record["train_loss"]):
                    raise TrainingDiverged(f"training loss is {record['train_loss']} at step {step}")
                if validate_now:
                    scores = validate()
                    record.update(scores)
                    last_val = float(np.mean(list(scores.values())))
                    record["val_psnr"] = last_val
                    if best is None or last_val > best[0]:
                        best = (last_val, step)
                        best_store.save(step, params, {"val_psnr": last_val, **scores})
                record["wall_time"] = round(elapsed, 3)
                log.write(record)
                post = {"loss": f"{record['train_loss']:.4f}"}
                if last_val is not None:
                    post["val_psnr"] = f"{last_val:.2f}"
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
    completed = step >= c.steps
    weights = None
    if completed:
        final, best_step = params, step
        if best is not None:
            final, meta = best_store.restore(best[1], params)
            best_step = meta["step"]
        meta = {"step": best_step, "val_psnr": best and best[0], "val_sigmas": list(c.val_sigmas), "val_crop": c.val_crop,
                "val_limit": c.val_limit, "train_minutes": round(elapsed / 60, 2), "train_config": c.to_dict()}
        weights = save_weights(nnx.merge(graphdef, final), c.out_dir / f"drunet_{c.name}.npz", meta)
    periodic.close()
    best_store.close()
    return TrainResult(out_dir=c.out_dir, steps=step, total_steps=c.steps, completed=completed, weights=weights,
                       best_step=best and best[1], best_val_loss=None, best_val_ssim=None, elapsed=elapsed,
                       metrics=c.out_dir / "metrics.jsonl", best_val_psnr=best and best[0])


__all__ = ["DenoiserTrainConfig", "denoiser_config_from_dict", "load_denoiser_config", "train_denoiser", "train_step",
           "noisy_batch", "dihedral"]
