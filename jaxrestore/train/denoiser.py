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
    noise:
      sigma_max: 50                      # on the 0..255 scale
      sigma_power: 1                     # sigma = sigma_max * u**p, u ~ U[0, 1]; 1: uniform, 2: more small sigmas
      val_sigmas: [15, 25, 50]
    schedule:
      batch_size: 16
      steps: 800000
      lr: 1.0e-4                         # cosine decay to lr_end over the run
      lr_end: 1.0e-6
      validate_every: 5000               # steps (and at the end)
      log_every: 10
    loss: l1                             # l1 (DRUNet's choice) or l2
    checkpoint: {every: 5000, keep: 3}
    mesh: {devices: null}                # data-parallel over N devices (default: all visible; --devices N)
    seed: 0
    out_dir: runs/denoiser/<config name>

Every step draws ``batch_size`` random crops (a random one of the 8 flips/rotations each), one
noise level per image ``sigma_max * u**sigma_power`` with ``u`` uniform in ``[0, 1]`` (``sigma_power: 1``
is DRUNet's uniform draw; 2 puts a third of the draws below ``sigma_max / 10``, which plug-and-play
solvers reach in their last iterations), and minimises the loss between
``D(x + sigma n, sigma)`` and ``x`` with Adam. Validation: mean PSNR on the centre crops at each
of ``val_sigmas`` (fixed noise); the best mean is kept (``checkpoints/best``) and exported as
``drunet_<config name>.npz`` (:func:`jaxrestore.models.drunet.load_weights`) once the run is
complete. Batches, augmentations and noise are functions of ``(seed, step)``, so a resumed run
is the uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxrestore.data import ImageFolder
from jaxrestore.metrics import psnr
from jaxrestore.models.drunet import DRUNetConfig, create, save_weights
from jaxrestore.train.common import TrainResult, cosine_lr, run_identity, strong
from jaxrestore.train.config_reader import DEFAULT_TRAIN, DEFAULT_VAL, load_yaml, mesh_devices, top_reader
from jaxrestore.train.data import TrainImages, step_keys
from jaxrestore.train.loop import Cadence, Run, Stage, run_stages
from jaxrestore.train.parallel import DataParallel


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
    sigma_power: float = 1.0   # sigma = sigma_max * u**sigma_power
    devices: int | None = None  # the data-parallel mesh (None: all visible devices)

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
        return run_identity(self.to_dict())


def denoiser_config_from_dict(raw, *, source: str = "<dict>", out_dir=None) -> DenoiserTrainConfig:
    top = top_reader(raw, source)
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
    train, val = d.folders("train", DEFAULT_TRAIN), d.folder("val", DEFAULT_VAL)
    crop = d.integer("crop", 128, minimum=model.multiple)
    val_crop = d.integer("val_crop", 256, minimum=model.multiple)
    val_limit = d.integer("val_limit", 8, minimum=1, optional=True)
    d.done()
    n = top.sub("noise")
    sigma_max = n.positive_float("sigma_max", 50.0)
    sigma_power = n.positive_float("sigma_power", 1.0)
    val_sigmas = n.raw("val_sigmas", [15, 25, 50])
    if not isinstance(val_sigmas, list) or not val_sigmas or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 255 for v in val_sigmas):
        raise ValueError(f"{source}: 'noise.val_sigmas' must be a list of noise levels in (0, 255), got {val_sigmas!r}")
    n.done()
    s = top.sub("schedule")
    batch_size = s.integer("batch_size", 16, minimum=1)
    steps = s.integer("steps", 10000, minimum=1)
    lr, lr_end = s.decaying_lr(1e-4, lambda lr: lr / 100)
    validate_every = s.integer("validate_every", 1000, minimum=1)
    log_every = s.integer("log_every", 10, minimum=1)
    s.done()
    loss = top.choice("loss", "l1", ("l1", "l2"))
    c = top.sub("checkpoint")
    every, keep = c.integer("every", validate_every, minimum=1), c.integer("keep", 3, minimum=1)
    c.done()
    seed = top.integer("seed", 0, minimum=0)
    devices = mesh_devices(top)
    name = Path(source).stem if source != "<dict>" else "run"
    out = top.out_dir(out_dir, "denoiser", name)
    top.done()
    return DenoiserTrainConfig(model, train, val, crop, val_crop, val_limit, float(sigma_max), tuple(float(v) for v in val_sigmas),
                               batch_size, steps, lr, lr_end, validate_every, log_every, loss, every, keep, seed, out, name,
                               source, float(sigma_power), devices)


def load_denoiser_config(path, *, out_dir=None) -> DenoiserTrainConfig:
    return denoiser_config_from_dict(load_yaml(path), source=str(path), out_dir=out_dir)


# ----------------------------------------------------------------------------- the step


def dihedral(x, k):
    """The ``k``-th (0..7) of the 8 flips/rotations of a batch ``(N, H, W, C)`` of square crops."""
    branches = [lambda v, r=r, f=f: jnp.rot90(v[:, :, ::-1] if f else v, r, axes=(1, 2)) for f in (0, 1) for r in range(4)]
    return jax.lax.switch(k, branches, x)


def noisy_batch(key, x, sigma_max: float, sigma_power: float = 1.0):
    """Augment ``x`` (one transform per image), draw ``sigma = sigma_max * u**sigma_power`` with
    ``u ~ U[0, 1]`` per image (0..1 scale) and return ``(clean, noisy, sigma)``."""
    k_aug, k_sig, k_noise = jax.random.split(key, 3)
    ks = jax.random.randint(k_aug, (x.shape[0],), 0, 8)
    x = jax.vmap(lambda v, k: dihedral(v[None], k)[0])(x, ks)
    sigma = sigma_max * jax.random.uniform(k_sig, (x.shape[0],), x.dtype) ** sigma_power
    y = x + sigma[:, None, None, None] * jax.random.normal(k_noise, x.shape, x.dtype)
    return x, y, sigma


def make_lr(config: DenoiserTrainConfig):
    """Cosine decay from ``lr`` to ``lr_end`` over the run."""
    return cosine_lr(config.lr, config.lr_end, config.steps)


def make_optimizer(config: DenoiserTrainConfig) -> optax.GradientTransformation:
    return optax.adam(make_lr(config))


@functools.partial(jax.jit, static_argnames=("graphdef", "tx", "sigma_max", "sigma_power", "loss"))
def train_step(params, opt_state, x, key, step, *, graphdef, tx, sigma_max: float, loss: str, sigma_power: float = 1.0):
    x, y, sigma = noisy_batch(step_keys(key, step)[1], x, sigma_max, sigma_power)

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
                   progress: bool = True, devices: int | None = None) -> TrainResult:
    """Train as ``config`` says, writing to ``config.out_dir``: ``metrics.jsonl``,
    ``checkpoints/periodic``, ``checkpoints/best`` and, once complete, ``drunet_<name>.npz``.
    ``resume`` and ``max_steps`` as in :func:`jaxrestore.train.loop.run_stages`; ``devices``
    (default ``config.devices``, else all visible) spans the data-parallel mesh."""
    c = config
    par = DataParallel.create(devices if devices is not None else c.devices, batch_size=c.batch_size)
    graphdef, params = nnx.split(create(c.model, c.seed))
    params = strong(params)
    tx = make_optimizer(c)
    key = jax.random.split(jax.random.key(c.seed))  # (train, validation)
    images = TrainImages(c.train, c.crop)
    val_x = ImageFolder(c.val, crop=c.val_crop, limit=c.val_limit).stack().astype(np.float32)
    val_noisy = []
    for i, s in enumerate(c.val_sigmas):
        n = np.asarray(jax.random.normal(jax.random.fold_in(key[1], i), val_x.shape, jnp.float32))
        val_noisy.append((s, (val_x + np.float32(s / 255.0) * n).astype(np.float32)))
    lr = make_lr(c)

    def step(params, opt_state, i):
        x = par.shard(images.batch(key[0], i, c.batch_size))
        params, opt_state, loss = train_step(params, opt_state, x, key[0], np.uint32(i), graphdef=graphdef, tx=tx,
                                             sigma_max=c.sigma_max / 255.0, sigma_power=c.sigma_power, loss=c.loss)
        return params, opt_state, loss, {}

    def validate(params):
        scores = {}
        for s, y in val_noisy:
            vals = [np.asarray(_denoise_psnr(params, jnp.asarray(val_x[i:i + 4]), jnp.asarray(y[i:i + 4]),
                                             jnp.full((len(y[i:i + 4]),), s / 255.0, jnp.float32), graphdef=graphdef))
                    for i in range(0, len(y), 4)]
            scores[f"val_psnr_{s:g}"] = float(np.mean(np.concatenate(vals)))
        mean = float(np.mean(list(scores.values())))
        return mean, {**scores, "val_psnr": mean}

    def export(params, best_step, best_fields, elapsed):
        meta = {"step": best_step, "val_psnr": best_fields and best_fields["val_psnr"], "val_sigmas": list(c.val_sigmas), "val_crop": c.val_crop,
                "val_limit": c.val_limit, "train_minutes": round(elapsed / 60, 2), "train_config": c.to_dict()}
        return save_weights(nnx.merge(graphdef, params), c.out_dir / f"drunet_{c.name}.npz", meta)

    stage = Stage("denoiser", c.steps, enter=lambda params: (params, tx.init(params)), step=step, validate=validate,
                  validate_every=c.validate_every, fields=lambda params, i: {"lr": float(lr(i - 1))})
    run = Run(export=export, cadence=Cadence(c.log_every, c.checkpoint_every, c.checkpoint_keep), parallel=par, desc="denoiser")
    return run_stages(c, [stage], params, run, resume=resume, max_steps=max_steps, progress=progress)


__all__ = ["DenoiserTrainConfig", "denoiser_config_from_dict", "load_denoiser_config", "train_denoiser", "train_step",
           "noisy_batch", "dihedral"]
