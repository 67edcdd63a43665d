"""Training the Golf Optimizer (blind deblurring; :mod:`jaxrestore.models.golf`, configs in
``configs/golf/``), in the paper's two stages, on the common loop (:mod:`jaxrestore.train.loop`).

With ``l(a, x) = mean((a - x)^2) + w * mean((phi(a) - phi(x))^2)`` (content MSE plus the
perceptual term, ``phi`` a feature extractor, :mod:`jaxrestore.models.features`), ``K`` the
iterations (``schedule.iterations``, 3 by default) and ``x_{k+1} = x_k + R2(x_k)``:

* stage ``g2`` (the paper's eq. 4, ``G2`` trained recurrently on the blurred image itself), over
  ``T`` iterations (``schedule.train_iterations``, default ``K``; a ``T`` above the ``K`` used at
  test time teaches ``G2`` to keep improving, or at least to hold, on its own later states)::

      L2 = 1/T sum_{k=1..T} l(x_k, x),   x_0 = y

* stage ``g1`` (eq. 6, ``G2`` fixed; our reading of its garbled text): ``G1`` gets the same
  composition target with its own output as the start, so that ``x_0 = G1(y)`` is both close to
  the sharp image (the ``k = 0`` term) and a state from which the fixed ``G2`` keeps improving
  (the ``k >= 1`` terms: ``G1``'s output must lie where ``G2`` was trained to work)::

      L1 = 1/(T+1) sum_{k=0..T} l(x_k, x),   x_0 = G1(y)

  (with ``T > K`` this stage needs the long unroll too: trained over ``K = 3`` only, a ``G1``
  moved its output to where three steps of ``G2`` are best and ten are 0.5 dB worse)

``model.init`` (a ``golf_*.npz`` of the same widths) starts both networks from trained weights
instead of the random initialisation, e.g. to continue a shipped model with a longer ``T``.

Each stage has its own Adam with a learning rate decayed exponentially from ``lr`` to ``lr_end``
over the stage; the other network's updates are zero. The exported model is the best validation
of stage ``g1`` (PSNR of the full ``golf-K`` restoration); stage ``g2`` validates ``G2`` alone
(``K`` steps from the blurred image) and hands its last state on.

Data. Synthetic (default): sharp crops of ``data.train`` blurred by random camera shake from our
generator (:func:`jaxrestore.data.blind.synthetic_pairs`: kernels of ``blur.size`` with lengths in
``[blur.min_length, size - 3]``, linear convolution of a larger crop so no border wraps, noise std
uniform in ``[0, blur.noise_max]`` on the 0..255 scale, random flips). Real pairs: ``data.pairs``
(a folder in the GoPro layout, :func:`jaxrestore.data.blind.pair_paths`) replaces the synthetic
blur, with the same crop positions on both images and random flips. Validation: centre crops of
the first ``val_limit`` images of ``data.val`` blurred the synthetic way with a fixed key, or of
``data.val_pairs``.

Schema (every key optional; unknown keys are errors)::

    kind: golf
    model: {g1_width: 32, g2_width: 16, init: null}   # the paper's 1.78 MB G1 and 0.46 MB G2
    data: {train: ../shared/data/bsds500/train, val: ../shared/data/bsds500/val, pairs: null,
           val_pairs: null, crop: 64, val_crop: 128, val_limit: 8}
    blur: {size: 31, min_length: 5, noise_max: 2.55}
    loss: {perceptual: 0.01, features: random}   # weight 0: MSE only
    schedule: {batch_size: 4, iterations: 3, train_iterations: 3, g2_steps: 2500, g1_steps: 1500, lr: 2.0e-4, lr_end: 2.0e-5,
               validate_every: 250, log_every: 10}
    checkpoint: {every: 250, keep: 2}
    mesh: {devices: null}
    seed: 0
    out_dir: runs/golf/<config name>

Batches, kernels and noise depend on ``(seed, step)`` only, so a resumed run is the uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxrestore.data import ImageFolder, load_image
from jaxrestore.data.blind import pair_paths, synthetic_pairs
from jaxrestore.metrics import psnr
from jaxrestore.models.features import random_features
from jaxrestore.models.golf import (Golf, GolfConfig, load_golf, merge as merge_golf, residual_fn, save_golf,
                                   split as split_golf)
from jaxrestore.solvers.golf import trajectory
from jaxrestore.train.common import TrainResult, run_identity, strong
from jaxrestore.train.config_reader import DEFAULT_TRAIN, DEFAULT_VAL, load_yaml, mesh_devices, top_reader
from jaxrestore.train.data import TrainImages, _compact, _draw_crops, step_keys
from jaxrestore.train.loop import Cadence, Run, Stage, run_stages
from jaxrestore.train.parallel import DataParallel


@dataclasses.dataclass(frozen=True)
class GolfTrainConfig:
    g1: GolfConfig
    g2: GolfConfig
    train: tuple[Path, ...]
    val: Path
    pairs: Path | None
    val_pairs: Path | None
    crop: int
    val_crop: int
    val_limit: int | None
    kernel_size: int
    min_length: float
    noise_max: float           # 0..255 scale
    perceptual: float
    features: str
    batch_size: int
    iterations: int
    train_iterations: int
    g2_steps: int
    g1_steps: int
    lr: float
    lr_end: float
    validate_every: int
    log_every: int
    checkpoint_every: int
    checkpoint_keep: int
    seed: int
    out_dir: Path
    name: str = "run"
    source: str = "<dict>"
    devices: int | None = None
    init: Path | None = None

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "source"}
        for k in ("g1", "g2"):
            d[k] = {**dataclasses.asdict(getattr(self, k)), "kernels": list(getattr(self, k).kernels)}
        for k in ("val", "pairs", "val_pairs", "out_dir", "init"):
            d[k] = None if d[k] is None else str(d[k])
        d["train"] = [str(p) for p in self.train]
        return d

    def run_identity(self) -> dict:
        return run_identity(self.to_dict())


def golf_config_from_dict(raw, *, source: str = "<dict>", out_dir=None) -> GolfTrainConfig:
    top = top_reader(raw, source)
    if top.raw("kind", "golf") != "golf":
        raise ValueError(f"{source}: 'kind' must be golf here")
    m = top.sub("model")
    g1, g2 = GolfConfig(width=m.integer("g1_width", 32, minimum=1)), GolfConfig(width=m.integer("g2_width", 16, minimum=1))
    init = m.file("init", None) if m.raw("init") is not None else None
    m.done()
    d = top.sub("data")
    pairs = d.folder("pairs", None) if d.raw("pairs") is not None else None
    # the sharp folders are only read for synthetic training
    if pairs is None:
        train = d.folders("train", DEFAULT_TRAIN)
    else:
        d.raw("train")
        train = ()
    val_pairs = d.folder("val_pairs", None) if d.raw("val_pairs") is not None else None
    val = d.folder("val", DEFAULT_VAL) if val_pairs is None else Path(str(d.raw("val", DEFAULT_VAL)))
    crop = d.integer("crop", 64, minimum=16)
    val_crop = d.integer("val_crop", 128, minimum=16)
    val_limit = d.integer("val_limit", 8, minimum=1, optional=True)
    d.done()
    b = top.sub("blur")
    size = b.integer("size", 31, minimum=5)
    if size % 2 == 0:
        raise ValueError(f"{source}: 'blur.size' must be odd (the kernel has a centre pixel), got {size}")
    min_length = b.positive_float("min_length", 5.0)
    if min_length > size - 3:
        raise ValueError(f"{source}: 'blur.min_length' must be <= blur.size - 3 = {size - 3}, got {min_length:g}")
    noise_max = b.positive_float("noise_max", 2.55, allow_zero=True)
    b.done()
    lo = top.sub("loss")
    perceptual = lo.positive_float("perceptual", 0.01, allow_zero=True)
    features = lo.choice("features", "random", ("random",))
    lo.done()
    s = top.sub("schedule")
    batch_size = s.integer("batch_size", 4, minimum=1)
    iterations = s.integer("iterations", 3, minimum=1)
    train_iterations = s.integer("train_iterations", iterations, minimum=1)
    g2_steps, g1_steps = s.integer("g2_steps", 2500, minimum=1), s.integer("g1_steps", 1500, minimum=1)
    lr, lr_end = s.decaying_lr(2e-4, lambda lr: lr / 10)
    validate_every = s.integer("validate_every", 250, minimum=1)
    log_every = s.integer("log_every", 10, minimum=1)
    s.done()
    c = top.sub("checkpoint")
    every, keep = c.integer("every", validate_every, minimum=1), c.integer("keep", 2, minimum=1)
    c.done()
    seed = top.integer("seed", 0, minimum=0)
    devices = mesh_devices(top)
    name = Path(source).stem if source != "<dict>" else "run"
    out = top.out_dir(out_dir, "golf", name)
    top.done()
    return GolfTrainConfig(g1, g2, train, val, pairs, val_pairs, crop, val_crop, val_limit, size, float(min_length),
                           float(noise_max), float(perceptual), features, batch_size, iterations, train_iterations, g2_steps,
                           g1_steps, lr, lr_end, validate_every, log_every, every, keep, seed, out, name, source, devices,
                           init)


def load_golf_config(path, *, out_dir=None) -> GolfTrainConfig:
    return golf_config_from_dict(load_yaml(path), source=str(path), out_dir=out_dir)


# ----------------------------------------------------------------------------- data


class PairImages:
    """Real blur/sharp pairs (:func:`~jaxrestore.data.blind.pair_paths`) in memory, from which
    ``crop x crop`` batches are cut at the same position in both images."""

    def __init__(self, folder, crop: int):
        self.crop = int(crop)
        self.blur, self.sharp = [], []
        for b, s in pair_paths(folder):
            yb, xs = load_image(b), load_image(s)
            if yb.shape != xs.shape:
                raise ValueError(f"{b} is {yb.shape[0]}x{yb.shape[1]} but its sharp image {s} is {xs.shape[0]}x{xs.shape[1]}")
            if yb.shape[0] < crop or yb.shape[1] < crop:
                raise ValueError(f"training pair {b} is {yb.shape[0]}x{yb.shape[1]}, smaller than the {crop}x{crop} crop")
            self.blur.append(_compact(yb))
            self.sharp.append(_compact(xs))
        self.sizes = np.array([x.shape[:2] for x in self.sharp], np.int32)

    def batch(self, key, step: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
        cpu = jax.local_devices(backend="cpu")[0]
        with jax.default_device(cpu):
            rows = np.asarray(_draw_crops(*jax.device_put((key, np.uint32(step), self.sizes), cpu), batch=batch, crop=self.crop))
        c = self.crop

        def cut(images):
            out = np.empty((batch, c, c, 3), np.float32)
            for n, (i, top, left) in enumerate(rows):
                p = images[i][top:top + c, left:left + c]
                out[n] = p.astype(np.float32) / np.float32(255.0) if p.dtype == np.uint8 else p
            return out

        return cut(self.blur), cut(self.sharp)


@jax.jit
def _flip_pairs(key, y, x):
    flips = jax.random.bernoulli(key, 0.5, (y.shape[0], 2))

    def flip(v):
        v = jnp.where(flips[:, 0, None, None, None], v[:, :, ::-1], v)
        return jnp.where(flips[:, 1, None, None, None], v[:, ::-1], v)

    return flip(y), flip(x)


def validation_pairs(config: GolfTrainConfig, key) -> tuple[np.ndarray, np.ndarray]:
    """``(y, x)`` of the validation crops: real pairs from ``val_pairs``, or centre crops of
    ``val`` blurred by kernels drawn from ``key`` (the same every time)."""
    c = config
    if c.val_pairs is not None:
        pairs = pair_paths(c.val_pairs)[: c.val_limit]
        from jaxrestore.data.images import center_crop

        ys = np.stack([center_crop(load_image(b), c.val_crop) for b, _ in pairs])
        xs = np.stack([center_crop(load_image(s), c.val_crop) for _, s in pairs])
        return ys.astype(np.float32), xs.astype(np.float32)
    padded = ImageFolder(c.val, crop=c.val_crop + c.kernel_size - 1, limit=c.val_limit).stack().astype(np.float32)
    y, x, _ = synthetic_pairs(key, jnp.asarray(padded), size=c.kernel_size, min_length=c.min_length,
                              noise_max=c.noise_max / 255.0)
    return np.asarray(y), np.asarray(x)


# ----------------------------------------------------------------------------- the step


def make_optimizer(trained: str, lr: float, lr_end: float, steps: int) -> optax.GradientTransformation:
    """Adam on ``params[trained]`` (rate decayed exponentially from ``lr`` to ``lr_end`` over
    ``steps``), zero updates and no state for the other network."""
    rate = lr if lr_end == lr else optax.exponential_decay(lr, steps, lr_end / lr)
    labels = lambda params: {k: jax.tree.map(lambda _: "train" if k == trained else "fixed", v)  # noqa: E731
                             for k, v in params.items()}
    return optax.multi_transform({"train": optax.adam(rate), "fixed": optax.set_to_zero()}, labels)


def golf_loss(residual, params, y, x, *, stage: str, iterations: int, perceptual: float, features):
    """``(L, aux)``: the stage's loss of the module docstring (``stage`` ``"g2"`` or ``"g1"``;
    the network not trained is held fixed by ``stop_gradient``), ``aux`` the MSE and perceptual
    term of the last state."""
    fixed = "G1" if stage == "g2" else "G2"
    p = {**params, fixed: jax.lax.stop_gradient(params[fixed])}
    xs = trajectory(residual, p, y, iterations, first_step=stage == "g1")
    if stage == "g2":
        xs = xs[1:]
    total, mse, perc = 0.0, 0.0, 0.0
    for v in xs:
        mse = jnp.mean((v - x) ** 2)
        perc = jnp.mean((features[0](features[1], v) - features[0](features[1], x)) ** 2) if perceptual else jnp.zeros(())
        total = total + mse + perceptual * perc
    return total / len(xs), {"mse": mse, "perceptual": perc}


@functools.partial(jax.jit, static_argnames=("graphdefs", "tx", "stage", "iterations", "perceptual", "features_fn",
                                             "size", "min_length", "noise_max", "synthetic"))
def train_step(params, opt_state, batch, feature_params, key, step, *, graphdefs, tx, stage: str, iterations: int,
               perceptual: float, features_fn, size: int, min_length: float, noise_max: float, synthetic: bool):
    """One step at global step ``step``: ``batch`` is padded sharp crops (synthetic: blurred here
    with the kernels and noise of ``(key, step)``) or a ``(y, x)`` pair of real crops (flipped
    here). Returns ``(params, opt_state, loss, aux)``."""
    k = step_keys(key, step)[1]
    if synthetic:
        y, x, _ = synthetic_pairs(k, batch, size=size, min_length=min_length, noise_max=noise_max)
    else:
        y, x = _flip_pairs(k, *batch)
    residual = residual_fn(graphdefs)
    (value, aux), grads = jax.value_and_grad(
        lambda p: golf_loss(residual, p, y, x, stage=stage, iterations=iterations, perceptual=perceptual,
                            features=(features_fn, feature_params)), has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value, aux


@functools.partial(jax.jit, static_argnames=("graphdefs", "iterations", "long"))
def _val_batch(params, y, x, *, graphdefs, iterations: int, long: int):
    """PSNR of: blurred, ``G2`` alone (``iterations`` steps from ``y``), ``G1``, golf-``iterations``
    and golf-``long`` (``long >= iterations``)."""
    residual = residual_fn(graphdefs)
    g2_only = trajectory(residual, params, y, iterations, first_step=False)[-1]
    full = trajectory(residual, params, y, long)
    score = lambda v: jax.vmap(psnr)(jnp.clip(v, 0.0, 1.0), x)  # noqa: E731
    return score(y), score(g2_only), score(full[0]), score(full[iterations]), score(full[-1])


# ----------------------------------------------------------------------------- the run


def _initial_model(c: GolfTrainConfig) -> Golf:
    """The random initialisation of ``c.seed``, or the weights of ``c.init`` (same widths)."""
    if c.init is None:
        return Golf.create(c.g1, c.g2, seed=c.seed)
    model = load_golf(c.init)
    for which, want in (("G1", c.g1), ("G2", c.g2)):
        have = getattr(model, which).config
        if have != want:
            raise ValueError(f"{c.source}: model.init {c.init} holds a {which} of width {have.width}, "
                             f"the config asks for {want.width}")
    return model


def train_golf(config: GolfTrainConfig, *, resume: bool | None = None, max_steps: int | None = None, progress: bool = True,
               devices: int | None = None) -> TrainResult:
    """Train as ``config`` says, writing ``metrics.jsonl``, ``checkpoints/`` and, once complete,
    ``golf_<name>.npz`` to ``config.out_dir``. ``resume``, ``max_steps`` and ``devices`` as in
    :func:`jaxrestore.train.denoiser.train_denoiser`."""
    c = config
    par = DataParallel.create(devices if devices is not None else c.devices, batch_size=c.batch_size)
    graphdefs, params = split_golf(_initial_model(c))
    params = strong(params)
    features_fn, feature_params = random_features(seed=0)
    feature_params = par.replicate(strong(feature_params))
    key = jax.random.split(jax.random.key(c.seed))  # (train, validation)
    synthetic = c.pairs is None
    source = TrainImages(c.train, c.crop + c.kernel_size - 1) if synthetic else PairImages(c.pairs, c.crop)
    val_y, val_x = validation_pairs(c, key[1])
    tx = {"g2": make_optimizer("G2", c.lr, c.lr_end, c.g2_steps), "g1": make_optimizer("G1", c.lr, c.lr_end, c.g1_steps)}

    def step_for(stage):
        def step(params, opt_state, i):
            raw = source.batch(key[0], i, c.batch_size)
            batch = par.shard(raw) if synthetic else tuple(par.shard(a) for a in raw)
            return train_step(params, opt_state, batch, feature_params, key[0], np.uint32(i), graphdefs=graphdefs,
                              tx=tx[stage], stage=stage, iterations=c.train_iterations, perceptual=c.perceptual,
                              features_fn=features_fn, size=c.kernel_size, min_length=c.min_length,
                              noise_max=c.noise_max / 255.0, synthetic=synthetic)
        return step

    def validate_for(stage):
        def validate(params):
            parts = [[] for _ in range(5)]
            long = max(c.iterations, c.train_iterations)
            for j in range(0, len(val_y), 4):
                for acc, v in zip(parts, _val_batch(params, jnp.asarray(val_y[j:j + 4]), jnp.asarray(val_x[j:j + 4]),
                                                    graphdefs=graphdefs, iterations=c.iterations, long=long)):
                    acc.append(np.asarray(v))
            blurred, g2_only, g1, full, full_long = (float(np.mean(np.concatenate(a))) for a in parts)
            fields = {"val_psnr_blurred": blurred, "val_psnr_g2": g2_only}
            if long > c.iterations:
                fields[f"val_psnr_golf{long}"] = full_long
            if stage == "g1":
                fields.update(val_psnr_g1=g1, val_psnr=full)
                return full, fields
            fields["val_psnr"] = g2_only
            return g2_only, fields
        return validate

    def export(params, best_step, best_fields, elapsed):
        meta = {"step": best_step, **(best_fields or {}), "iterations": c.iterations,
                "train_iterations": c.train_iterations, "init": None if c.init is None else str(c.init), "val_crop": c.val_crop,
                "val_limit": c.val_limit, "train_minutes": round(elapsed / 60, 2), "train_config": c.to_dict()}
        return save_golf(merge_golf(graphdefs, params), c.out_dir / f"golf_{c.name}.npz", meta)

    stages = [Stage("g2", c.g2_steps, enter=lambda p: (p, tx["g2"].init(p)), step=step_for("g2"), validate=validate_for("g2"),
                    validate_every=c.validate_every, select_best=False, desc="golf G2 (recurrent)"),
              Stage("g1", c.g1_steps, enter=lambda p: (p, tx["g1"].init(p)), step=step_for("g1"), validate=validate_for("g1"),
                    validate_every=c.validate_every, desc="golf G1 (G2 fixed)")]
    run = Run(export=export, cadence=Cadence(c.log_every, c.checkpoint_every, c.checkpoint_keep), parallel=par,
              validate_first=True)
    return run_stages(c, stages, params, run, resume=resume, max_steps=max_steps, progress=progress)


__all__ = ["GolfTrainConfig", "golf_config_from_dict", "load_golf_config", "PairImages", "validation_pairs",
           "make_optimizer", "golf_loss", "train_step", "train_golf"]
