"""Training PnP-ReG's regularising gradient ``G`` jointly with the denoiser ``D``
(``../shared/PROTOCOLS.md`` section 3; configs in ``configs/reg/``).

Loss of a step, with ``z = x + sigma0 n`` and ``D = D(z, sigma)``::

    L = delta * mean|D - x| + lam * mean((sigma^2 G(D) - (z - D))^2)

Steps alternate: even global steps take ``sigma = sigma0`` and ``delta = 1`` (the denoiser keeps
denoising), odd steps draw ``sigma`` independently of ``sigma0`` and take ``delta = 0`` (the
identity ``sigma^2 G(D_sigma(z)) = z - D_sigma(z)`` must hold for a denoiser applied at a level
that is not the noise's; gradients still reach ``D`` through the second term). ``sigma`` and
``sigma0`` are drawn per image, uniform in ``[0, sigma_max]``. One Adam over ``G`` and ``D``
(``lr`` for ``G``, ``d_lr`` for ``D``, equal by default as in the paper), halved every
``halve_every`` steps; ``freeze_denoiser: true`` keeps ``D`` fixed (the paper's ablation: its
updates are zero and it gets no optimizer state).

Schema (every key optional; unknown keys are errors)::

    kind: reg
    model: {channels: [64, 128, 256, 512], blocks: 4}   # G (no noise map); the authors' widths
    denoiser: small                      # D's start: a shipped DRUNet name or a drunet_*.npz path
    freeze_denoiser: false
    data: {train: ../shared/data/bsds500/train, val: ../shared/data/bsds500/val, crop: 128,
           val_crop: 128, val_limit: 8}
    noise: {sigma_max: 50, lam: 0.004, val_sigmas: [15, 25]}   # sigma_max and val_sigmas on the 0..255 scale
    schedule: {batch_size: 16, steps: 800000, lr: 1.0e-4, d_lr: 1.0e-4, halve_every: 100000,
               validate_every: 5000, log_every: 10}
    checkpoint: {every: 5000, keep: 3}
    mesh: {devices: null}
    seed: 0
    out_dir: runs/reg/<config name>

Validation (fixed noise on the centre crops, at each of ``val_sigmas``): ``val_identity``, the
relative error ``||sigma^2 G(D) - (z - D)|| / ||z - D||`` averaged over images and levels (the score:
lower is better, the best is exported), and ``val_psnr``, the denoiser's PSNR, so a drift of ``D``
shows. The export is ``reg_<config name>.npz`` (:func:`jaxrestore.models.reg.load_pair`).
Batches and noise depend on ``(seed, step)`` only, so a resumed run is the uninterrupted run.
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
from jaxrestore.models.drunet import DRUNetConfig, create as create_drunet, load_weights as load_drunet
from jaxrestore.models.reg import RegPair, g_config, save_pair
from jaxrestore.train.common import TrainResult, run_identity, strong
from jaxrestore.train.config_reader import DEFAULT_TRAIN, DEFAULT_VAL, load_yaml, mesh_devices, top_reader
from jaxrestore.train.data import TrainImages, step_keys
from jaxrestore.train.log import read_metrics
from jaxrestore.train.loop import Cadence, Run, Stage, run_stages
from jaxrestore.train.parallel import DataParallel


@dataclasses.dataclass(frozen=True)
class RegTrainConfig:
    g: DRUNetConfig
    denoiser: str
    freeze_denoiser: bool
    train: tuple[Path, ...]
    val: Path
    crop: int
    val_crop: int
    val_limit: int | None
    sigma_max: float            # 0..255 scale
    lam: float
    val_sigmas: tuple[float, ...]
    batch_size: int
    steps: int
    lr: float
    d_lr: float
    halve_every: int
    validate_every: int
    log_every: int
    checkpoint_every: int
    checkpoint_keep: int
    seed: int
    out_dir: Path
    name: str = "run"
    source: str = "<dict>"
    devices: int | None = None

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "source"}
        d["g"] = dataclasses.asdict(self.g)
        d["g"]["channels"] = list(self.g.channels)
        d["train"], d["val"], d["out_dir"] = [str(p) for p in self.train], str(self.val), str(self.out_dir)
        d["val_sigmas"] = list(self.val_sigmas)
        return d

    def run_identity(self) -> dict:
        return run_identity(self.to_dict())


def _denoiser_path(name: str) -> Path:
    from jaxrestore.train.suppa import _denoiser_path as find

    return find(name)


def reg_config_from_dict(raw, *, source: str = "<dict>", out_dir=None) -> RegTrainConfig:
    top = top_reader(raw, source)
    if top.raw("kind", "reg") != "reg":
        raise ValueError(f"{source}: 'kind' must be reg here")
    m = top.sub("model")
    channels = m.raw("channels", [64, 128, 256, 512])
    if not isinstance(channels, list) or not channels or not all(
            isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels):
        raise ValueError(f"{source}: 'model.channels' must be a list of positive integers, got {channels!r}")
    g = g_config(channels, m.integer("blocks", 4, minimum=0))
    m.done()
    denoiser = top.raw("denoiser", "small")
    if not isinstance(denoiser, str):
        raise ValueError(f"{source}: 'denoiser' must be a shipped name or a .npz path, got {denoiser!r}")
    try:
        _denoiser_path(denoiser)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    freeze = top.boolean("freeze_denoiser", False)
    d = top.sub("data")
    train, val = d.folders("train", DEFAULT_TRAIN), d.folder("val", DEFAULT_VAL)
    crop = d.integer("crop", 128, minimum=g.multiple)
    val_crop = d.integer("val_crop", crop, minimum=g.multiple)
    val_limit = d.integer("val_limit", 8, minimum=1, optional=True)
    d.done()
    n = top.sub("noise")
    sigma_max = n.positive_float("sigma_max", 50.0)
    lam = n.positive_float("lam", 0.004)
    val_sigmas = n.raw("val_sigmas", [15, 25])
    if not isinstance(val_sigmas, list) or not val_sigmas or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 255 for v in val_sigmas):
        raise ValueError(f"{source}: 'noise.val_sigmas' must be a list of noise levels in (0, 255), got {val_sigmas!r}")
    n.done()
    s = top.sub("schedule")
    batch_size = s.integer("batch_size", 16, minimum=1)
    steps = s.integer("steps", 800000, minimum=1)
    lr = s.positive_float("lr", 1e-4)
    d_lr = s.positive_float("d_lr", lr)
    halve_every = s.integer("halve_every", 100000, minimum=1)
    validate_every = s.integer("validate_every", 5000, minimum=1)
    log_every = s.integer("log_every", 10, minimum=1)
    s.done()
    c = top.sub("checkpoint")
    every, keep = c.integer("every", validate_every, minimum=1), c.integer("keep", 3, minimum=1)
    c.done()
    seed = top.integer("seed", 0, minimum=0)
    devices = mesh_devices(top)
    name = Path(source).stem if source != "<dict>" else "run"
    out = top.out_dir(out_dir, "reg", name)
    top.done()
    return RegTrainConfig(g, denoiser, freeze, train, val, crop, val_crop, val_limit, float(sigma_max), float(lam),
                          tuple(float(v) for v in val_sigmas), batch_size, steps, lr, d_lr, halve_every, validate_every,
                          log_every, every, keep, seed, out, name, source, devices)


def load_reg_config(path, *, out_dir=None) -> RegTrainConfig:
    return reg_config_from_dict(load_yaml(path), source=str(path), out_dir=out_dir)


# ----------------------------------------------------------------------------- the step


def initial_pair(config: RegTrainConfig) -> RegPair:
    """``G`` freshly initialised (seed ``config.seed``), ``D`` the pretrained denoiser."""
    return RegPair(create_drunet(config.g, config.seed), load_drunet(_denoiser_path(config.denoiser)))


def split_pair(pair: RegPair):
    """``(graphdefs, params)``: the static halves of ``G`` and ``D`` and their parameters
    ``{"G": State, "D": State}`` (what the optimizer sees)."""
    (gg, pg), (gd, pd) = nnx.split(pair.G), nnx.split(pair.D)
    return (gg, gd), {"G": pg, "D": pd}


def merge_pair(graphdefs, params) -> RegPair:
    return RegPair(nnx.merge(graphdefs[0], params["G"]), nnx.merge(graphdefs[1], params["D"]))


def make_optimizer(config: RegTrainConfig) -> optax.GradientTransformation:
    """One Adam over ``G`` (rate ``lr``) and ``D`` (``d_lr``; zero updates and no state when
    frozen), each halved every ``halve_every`` steps."""
    def rate(lr):
        return optax.exponential_decay(lr, config.halve_every, 0.5, staircase=True)

    d_tx = optax.set_to_zero() if config.freeze_denoiser else optax.adam(rate(config.d_lr))
    return optax.multi_transform({"G": optax.adam(rate(config.lr)), "D": d_tx},
                                 lambda params: {k: jax.tree.map(lambda _: k, v) for k, v in params.items()})


def draw_noise(key, x, sigma_max: float, joint_step):
    """``(z, sigma, sigma0)`` of a step: ``z = x + sigma0 n``; ``sigma = sigma0`` on the denoising
    steps (``joint_step`` false), drawn independently on the others. Per image, ``U[0, sigma_max]``."""
    k0, k1, kn = jax.random.split(key, 3)
    sigma0 = sigma_max * jax.random.uniform(k0, (x.shape[0],), x.dtype)
    sigma = jnp.where(joint_step, sigma_max * jax.random.uniform(k1, (x.shape[0],), x.dtype), sigma0)
    z = x + sigma0[:, None, None, None] * jax.random.normal(kn, x.shape, x.dtype)
    return z, sigma, sigma0


def reg_loss(pair_fn, params, x, z, sigma, delta, lam):
    """``(L, (l1, identity))``: the joint loss of the module docstring, its L1 term and the mean
    squared residual of ``sigma^2 G(D) = z - D``. ``pair_fn(params) -> RegPair``."""
    pair = pair_fn(params)
    den = pair.D(z, sigma)
    l1 = jnp.mean(jnp.abs(den - x))
    residual = sigma[:, None, None, None] ** 2 * pair.G(den) - (z - den)
    identity = jnp.mean(residual**2)
    return delta * l1 + lam * identity, (l1, identity)


@functools.partial(jax.jit, static_argnames=("graphdef", "tx", "sigma_max", "lam", "freeze"))
def train_step(params, opt_state, x, key, step, *, graphdef, tx, sigma_max: float, lam: float, freeze: bool):
    """One optimizer step at global step ``step``: even steps ``delta = 1, sigma = sigma0``, odd
    steps ``delta = 0`` with ``sigma`` drawn apart. Returns ``(params, opt_state, loss, aux)``."""
    joint = (step % 2) == 1
    z, sigma, _ = draw_noise(step_keys(key, step)[1], x, sigma_max, joint)
    delta = jnp.where(joint, 0.0, 1.0).astype(x.dtype)

    def pair_fn(p):
        if freeze:
            p = {"G": p["G"], "D": jax.lax.stop_gradient(p["D"])}
        return merge_pair(graphdef, p)

    (value, (l1, identity)), grads = jax.value_and_grad(lambda p: reg_loss(pair_fn, p, x, z, sigma, delta, lam),
                                                        has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value, {"l1": l1, "identity": identity}


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _val_batch(params, x, z, sigma, *, graphdef):
    pair = merge_pair(graphdef, params)
    den = pair.D(z, sigma)
    s2 = sigma[:, None, None, None] ** 2
    num = jnp.sqrt(jnp.sum((s2 * pair.G(den) - (z - den)) ** 2, axis=(1, 2, 3)))
    ref = jnp.sqrt(jnp.sum((z - den) ** 2, axis=(1, 2, 3)))
    return num / jnp.maximum(ref, 1e-12), jax.vmap(psnr)(jnp.clip(den, 0.0, 1.0), x)


# ----------------------------------------------------------------------------- the run


def train_reg(config: RegTrainConfig, *, resume: bool | None = None, max_steps: int | None = None, progress: bool = True,
              devices: int | None = None) -> TrainResult:
    """Train as ``config`` says, writing to ``config.out_dir`` ``metrics.jsonl``, ``checkpoints/``
    and, once complete, ``reg_<name>.npz``. ``resume``, ``max_steps`` and ``devices`` as in
    :func:`jaxrestore.train.denoiser.train_denoiser`."""
    c = config
    par = DataParallel.create(devices if devices is not None else c.devices, batch_size=c.batch_size)
    graphdef, params = split_pair(initial_pair(c))
    params = strong(params)
    tx = make_optimizer(c)
    key = jax.random.split(jax.random.key(c.seed))  # (train, validation)
    images = TrainImages(c.train, c.crop)
    val_x = ImageFolder(c.val, crop=c.val_crop, limit=c.val_limit).stack().astype(np.float32)
    val_sets = []
    for i, s in enumerate(c.val_sigmas):
        noise = np.asarray(jax.random.normal(jax.random.fold_in(key[1], i), val_x.shape, jnp.float32))
        val_sets.append((s, (val_x + np.float32(s / 255.0) * noise).astype(np.float32)))
    merge = functools.partial(merge_pair, graphdef)

    def step(params, opt_state, i):
        x = par.shard(images.batch(key[0], i, c.batch_size))
        return train_step(params, opt_state, x, key[0], np.uint32(i), graphdef=graphdef, tx=tx, sigma_max=c.sigma_max / 255.0,
                          lam=c.lam, freeze=c.freeze_denoiser)

    def validate(params):
        ident, scores, fields = [], [], {}
        for s, z in val_sets:
            r, p = [], []
            for j in range(0, len(z), 4):
                sig = jnp.full((len(z[j:j + 4]),), s / 255.0, jnp.float32)
                a, b = _val_batch(params, jnp.asarray(val_x[j:j + 4]), jnp.asarray(z[j:j + 4]), sig, graphdef=graphdef)
                r.append(np.asarray(a))
                p.append(np.asarray(b))
            ident.append(float(np.mean(np.concatenate(r))))
            scores.append(float(np.mean(np.concatenate(p))))
            fields[f"val_identity_{s:g}"] = ident[-1]
        fields.update(val_identity=float(np.mean(ident)), val_psnr=float(np.mean(scores)))
        return -fields["val_identity"], fields

    def export(params, best_step, best_fields, elapsed):
        # the training identity loss around the exported step (the last 10 logged windows up to it)
        logged = [r["identity"] for r in read_metrics(c.out_dir / "metrics.jsonl") if "identity" in r and r["step"] <= best_step]
        meta = {"step": best_step, **(best_fields or {}), "train_identity": float(np.mean(logged[-10:])) if logged else None, "val_sigmas": list(c.val_sigmas), "val_crop": c.val_crop,
                "val_limit": c.val_limit, "freeze_denoiser": c.freeze_denoiser, "train_minutes": round(elapsed / 60, 2),
                "train_config": c.to_dict()}
        return save_pair(merge(params), c.out_dir / f"reg_{c.name}.npz", meta)

    def postfix(record, last_val):
        post = {"loss": f"{record['train_loss']:.2e}"}
        if last_val:
            post["identity"] = f"{last_val['val_identity']:.3f}"
        return post

    stage = Stage("reg", c.steps, enter=lambda params: (params, tx.init(params)), step=step, validate=validate,
                  validate_every=c.validate_every, desc="reg frozen D" if c.freeze_denoiser else "reg joint")
    run = Run(export=export, cadence=Cadence(c.log_every, c.checkpoint_every, c.checkpoint_keep), parallel=par, postfix=postfix,
              validate_first=True)
    return run_stages(c, [stage], params, run, resume=resume, max_steps=max_steps, progress=progress)


__all__ = ["RegTrainConfig", "reg_config_from_dict", "load_reg_config", "initial_pair", "split_pair", "merge_pair",
           "make_optimizer", "draw_noise",
           "reg_loss", "train_step", "train_reg"]
