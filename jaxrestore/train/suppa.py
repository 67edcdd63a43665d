"""Training PnP-ADMM end to end in one of four modes (explicit, deq, jfb, suppa) from a YAML
config (``configs/suppa/*.yaml``); the objectives are :func:`jaxrestore.models.unrolled.loss`.

Schema (every key optional unless marked; unknown keys are errors)::

    kind: suppa
    mode: suppa                          # required: explicit | deq | jfb | suppa
    task: deblur                         # required: deblur | sr2 | sr3 | sr4
    denoiser: small                      # a shipped DRUNet name or a drunet_*.npz path: the start point
    model: {iterations: 6, max_iters: 50, tol: 1.0e-3, backward_tol: 1.0e-4, backward_max_iters: 50, unroll: false}
    init: {sigma: 0.03, lam: 0.23, sigma_max: 0.19}
        # explicit: DPIR's schedule (sigma_max -> noise, rho = lam noise^2 / sigma^2) over the iterations;
        # other modes: one sigma and rho = lam noise^2 / sigma^2, or init.rho given directly (not with lam)
    # or init: {model: runs/suppa/explicit-sr2-long/suppa_explicit_sr2.npz}: continue from a trained model
    data: {train: ../shared/data/bsds500/train, val: ../shared/data/bsds500/val, crop: 128, val_crop: 128, val_limit: 8}
    schedule:
      batch_size: 16
      steps: 10000
      lr: 1.0e-5                         # the denoiser (Adam)
      lr_end: 1.0e-5                     # below lr: cosine decay of the denoiser's rate to lr_end (default: constant)
      scalar_lr: 1.0e-2                  # log sigma, log rho
      lambda_lr: 0.1                     # SUPPA's convergence rate lambda
      validate_every: 500
      log_every: 10
    checkpoint: {every: 500, keep: 3}
    mesh: {devices: null}                # data-parallel over N devices (default: all visible; --devices N)
    seed: 0
    out_dir: runs/suppa/<config name>

Batches (crops, noise) depend on ``(seed, step)`` only, so a resumed run is the uninterrupted
run. The best validation PSNR is kept and exported as ``suppa_<mode>_<task>.npz``
(:func:`jaxrestore.models.unrolled.load`) once training completes.
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
from jaxrestore.models import unrolled
from jaxrestore.models.drunet import load_weights as load_drunet
from jaxrestore.protocols.suppa import TASKS, noise_std, task_operator
from jaxrestore.solvers.admm import SIGMA_FLOOR, pnp_schedule
from jaxrestore.train.common import TrainResult, cosine_lr, strong
from jaxrestore.train.config_reader import DEFAULT_TRAIN, DEFAULT_VAL, REPO_ROOT, load_yaml, mesh_devices, top_reader
from jaxrestore.train.data import TrainImages, batched, step_keys
from jaxrestore.train.loop import Cadence, Run, Stage, run_stages
from jaxrestore.train.parallel import DataParallel


@dataclasses.dataclass(frozen=True)
class SuppaTrainConfig:
    mode: str
    task: str
    denoiser: str
    model: unrolled.UnrolledConfig
    init_sigma: float
    init_lam: float | None  # None when init.rho is given
    init_sigma_max: float
    train: tuple[Path, ...]
    val: Path
    crop: int
    val_crop: int
    val_limit: int | None
    batch_size: int
    steps: int
    lr: float
    lr_end: float
    scalar_lr: float
    lambda_lr: float
    validate_every: int
    log_every: int
    checkpoint_every: int
    checkpoint_keep: int
    seed: int
    out_dir: Path
    source: str = "<dict>"
    init_rho: float | None = None
    init_model: Path | None = None  # start from this trained model instead of the denoiser
    devices: int | None = None  # the data-parallel mesh (None: all visible devices)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "source"}
        d["model"] = dataclasses.asdict(self.model)
        d["model"]["drunet"]["channels"] = list(self.model.drunet.channels)
        d["train"], d["val"], d["out_dir"] = [str(p) for p in self.train], str(self.val), str(self.out_dir)
        d["init_model"] = None if self.init_model is None else str(self.init_model)
        return d

    def run_identity(self) -> dict:
        d = self.to_dict()
        for k in ("out_dir", "log_every", "checkpoint_every", "checkpoint_keep", "devices"):
            d.pop(k)
        for k in ("init_rho", "init_model"):
            if d[k] is None:  # runs recorded before these keys existed resume unchanged
                d.pop(k)
        return d

    @property
    def scale(self) -> int:
        return 1 if self.task == "deblur" else int(self.task[2:])


def _denoiser_path(name: str) -> Path:
    from jaxrestore.models.pretrained import drunet_path

    p = Path(name).expanduser()
    if p.suffix == ".npz" or p.exists():
        if not p.is_file():
            raise ValueError(f"denoiser weights not found: {p}")
        return p.resolve()
    p = drunet_path(name)
    if not p.is_file():
        raise ValueError(f"no shipped DRUNet weights named {name!r}; train them with `jaxrestore train denoiser/{name}`")
    return p


def suppa_config_from_dict(raw, *, source: str = "<dict>", out_dir=None) -> SuppaTrainConfig:
    top = top_reader(raw, source)
    if top.raw("kind", "suppa") != "suppa":
        raise ValueError(f"{source}: 'kind' must be suppa here")
    mode = top.choice("mode", None, unrolled.MODES)
    task = top.choice("task", None, TASKS)
    denoiser = top.raw("denoiser", "small")
    if not isinstance(denoiser, str):
        raise ValueError(f"{source}: 'denoiser' must be a shipped name or a .npz path, got {denoiser!r}")
    from jaxrestore.models.drunet import weights_metadata

    drunet_cfg = weights_metadata(_denoiser_path(denoiser))["config"]
    from jaxrestore.models.drunet import DRUNetConfig

    m = top.sub("model")
    model = unrolled.UnrolledConfig(
        mode=mode, iterations=m.integer("iterations", 6, minimum=1), max_iters=m.integer("max_iters", 50, minimum=1),
        tol=m.positive_float("tol", 1e-3), backward_tol=m.positive_float("backward_tol", 1e-4),
        backward_max_iters=m.integer("backward_max_iters", 50, minimum=1), unroll=m.boolean("unroll", False),
        drunet=DRUNetConfig(channels=tuple(drunet_cfg["channels"]), blocks=drunet_cfg["blocks"],
                            in_channels=drunet_cfg.get("in_channels", 3)))
    m.done()
    i = top.sub("init")
    init_model = _init_model(i.raw("model"), i, mode, task, model, source)
    init_sigma, init_lam, init_sigma_max = i.positive_float("sigma", 0.03), i.positive_float("lam", 0.23), i.positive_float("sigma_max", 49 / 255)
    init_rho = None
    if i.raw("rho") is not None:
        if mode == "explicit":
            raise ValueError(f"{source}: 'init.rho' is for the fixed-point modes (deq, jfb, suppa); explicit's rho_k "
                             "follow the schedule of init.lam")
        if i.has("lam"):
            raise ValueError(f"{source}: give 'init.rho' or 'init.lam', not both")
        init_rho, init_lam = i.positive_float("rho"), None
    i.done()
    d = top.sub("data")
    train, val = d.folders("train", DEFAULT_TRAIN), d.folder("val", DEFAULT_VAL)
    crop = d.integer("crop", 128, minimum=16)
    val_crop = d.integer("val_crop", crop, minimum=16)
    val_limit = d.integer("val_limit", 8, minimum=1, optional=True)
    d.done()
    scale = 1 if task == "deblur" else int(task[2:])
    for name, c in (("crop", crop), ("val_crop", val_crop)):
        if c % scale:
            raise ValueError(f"{source}: 'data.{name}' ({c}) must be a multiple of the scale factor {scale}")
    s = top.sub("schedule")
    lr, lr_end = s.decaying_lr(1e-5)
    sched = dict(batch_size=s.integer("batch_size", 16, minimum=1), steps=s.integer("steps", 10000, minimum=1),
                 lr=lr, lr_end=lr_end, scalar_lr=s.positive_float("scalar_lr", 1e-2),
                 lambda_lr=s.positive_float("lambda_lr", 0.1), validate_every=s.integer("validate_every", 500, minimum=1),
                 log_every=s.integer("log_every", 10, minimum=1))
    s.done()
    c = top.sub("checkpoint")
    every, keep = c.integer("every", sched["validate_every"], minimum=1), c.integer("keep", 3, minimum=1)
    c.done()
    seed = top.integer("seed", 0, minimum=0)
    devices = mesh_devices(top)
    out = top.out_dir(out_dir, "suppa", Path(source).stem if source != "<dict>" else f"{mode}-{task}")
    top.done()
    return SuppaTrainConfig(mode, task, denoiser, model, init_sigma, init_lam, init_sigma_max, train, val, crop, val_crop,
                            val_limit, checkpoint_every=every, checkpoint_keep=keep, seed=seed, out_dir=out, source=source,
                            init_rho=init_rho, init_model=init_model, devices=devices, **sched)


def _init_model(value, reader, mode: str, task: str, model: unrolled.UnrolledConfig, source: str) -> Path | None:
    """``init.model``: a trained ``suppa_<mode>_<task>.npz`` to continue from (its denoiser,
    ``sigma``/``rho`` and ``lambda``), checked against this config's mode, iteration count and
    DRUNet; it excludes the other ``init`` keys."""
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or not str(value):
        raise ValueError(f"{source}: 'init.model' must be a path to a trained suppa_<mode>_<task>.npz, got {value!r}")
    others = [k for k in ("sigma", "lam", "rho", "sigma_max") if reader.has(k)]
    if others:
        raise ValueError(f"{source}: 'init.model' sets sigma and rho itself; drop init.{', init.'.join(others)}")
    p = Path(value).expanduser()
    if not p.is_absolute() and not p.is_file() and (REPO_ROOT / p).is_file():
        p = REPO_ROOT / p
    if not p.is_file():
        raise ValueError(f"{source}: 'init.model' not found: {value}")
    got, _, _, meta = unrolled.load(p)
    if got.mode != mode:
        raise ValueError(f"{source}: 'init.model' {p.name} was trained in mode {got.mode}, this config trains {mode}")
    if got.steps != model.steps:
        raise ValueError(f"{source}: 'init.model' {p.name} has {got.steps} (sigma, rho) pairs, this config needs "
                         f"{model.steps} (model.iterations)")
    if got.drunet != model.drunet:
        raise ValueError(f"{source}: 'init.model' {p.name} holds a different DRUNet ({got.drunet}) from the "
                         f"denoiser's ({model.drunet})")
    if meta.get("task") not in (None, task):
        raise ValueError(f"{source}: 'init.model' {p.name} was trained for {meta['task']}, this config is {task}")
    return p.resolve()


def load_suppa_config(path, *, out_dir=None) -> SuppaTrainConfig:
    return suppa_config_from_dict(load_yaml(path), source=str(path), out_dir=out_dir)


# ----------------------------------------------------------------------------- pieces


def initial_params(config: SuppaTrainConfig):
    """``(graphdef, params)``: the pretrained denoiser and the initial ``(sigma, rho)``, or the
    trained model of ``init.model``."""
    if config.init_model is not None:
        _, graphdef, params, _ = unrolled.load(config.init_model)
        return graphdef, strong(params)
    model = load_drunet(_denoiser_path(config.denoiser))
    graphdef, net = nnx.split(model)
    noise = max(noise_std(config.task), SIGMA_FLOOR)
    if config.mode == "explicit":
        sched = pnp_schedule(config.model.iterations, noise, sigma_max=config.init_sigma_max, lam=config.init_lam,
                             sigma_min=max(config.init_sigma, noise) if config.task != "deblur" else None)
        sigma, rho = np.asarray(sched.sigma), np.asarray(sched.rho)
    else:
        sigma = config.init_sigma
        rho = config.init_rho if config.init_rho is not None else config.init_lam * noise**2 / sigma**2
    return graphdef, strong(unrolled.init_params(config.model, net, sigma, rho))


def net_lr(config: SuppaTrainConfig):
    """The denoiser's learning rate: constant ``lr``, or a cosine decay from ``lr`` to ``lr_end``
    over the run when ``lr_end < lr``."""
    return cosine_lr(config.lr, config.lr_end, config.steps)


def make_optimizer(config: SuppaTrainConfig) -> optax.GradientTransformation:
    """Adam with one learning rate per group: the denoiser (:func:`net_lr`), ``log sigma``/``log rho``,
    and SUPPA's ``lambda`` (its own rate, 0.1 in the paper)."""
    labels = {"net": "net", "log_sigma": "scalar", "log_rho": "scalar", "log1p_lambda": "lambda"}
    return optax.multi_transform({"net": optax.adam(net_lr(config)), "scalar": optax.adam(config.scalar_lr),
                                  "lambda": optax.adam(config.lambda_lr)},
                                 lambda params: {k: jax.tree.map(lambda _: labels[k], v) for k, v in params.items()})


def degrade_batch(key, x, ops, noise: float):
    y = jax.vmap(lambda op, v: op(v))(ops, x)
    return y + noise * jax.random.normal(key, y.shape, y.dtype) if noise > 0 else y


@functools.partial(jax.jit, static_argnames=("model", "graphdef", "tx", "noise"))
def train_step(params, opt_state, x, ops, key, step, *, model: unrolled.UnrolledConfig, graphdef, tx, noise: float):
    """One optimizer step of ``model.mode`` on the clean batch ``x`` (degraded here with the
    noise of ``(key, step)``). Returns ``(params, opt_state, loss, aux)``."""
    k_noise, k_iter = jax.random.split(step_keys(key, step)[1])
    y = degrade_batch(k_noise, x, ops, noise)
    (value, aux), grads = jax.value_and_grad(lambda p: unrolled.loss(model, graphdef, p, ops, y, x, k_iter), has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value, aux


@functools.partial(jax.jit, static_argnames=("model", "graphdef"))
def eval_batch(params, x, y, ops, *, model: unrolled.UnrolledConfig, graphdef):
    out, info = unrolled.solve(model, graphdef, params, ops, y)
    return jax.vmap(psnr)(jnp.clip(out, 0.0, 1.0), x), info.iterations


# ----------------------------------------------------------------------------- the run


def train_suppa(config: SuppaTrainConfig, *, resume: bool | None = None, max_steps: int | None = None,
                progress: bool = True, devices: int | None = None) -> TrainResult:
    """Train as ``config`` says, writing to ``config.out_dir`` ``metrics.jsonl``,
    ``checkpoints/`` and, once complete, ``suppa_<mode>_<task>.npz``. ``resume`` and
    ``max_steps`` as in :func:`jaxrestore.train.loop.run_stages`, ``devices`` as in
    :func:`jaxrestore.train.denoiser.train_denoiser`. The starting point (the pretrained
    denoiser) is validated too, so the export is never worse than it on the validation crops."""
    c = config
    par = DataParallel.create(devices if devices is not None else c.devices, batch_size=c.batch_size)
    graphdef, params = initial_params(c)
    tx = make_optimizer(c)
    key = jax.random.split(jax.random.key(c.seed))
    noise = float(noise_std(c.task))
    images = TrainImages(c.train, c.crop)
    ops = par.shard(batched(task_operator(c.task, (c.crop, c.crop)), c.batch_size))
    val_x = ImageFolder(c.val, crop=c.val_crop, limit=c.val_limit).stack().astype(np.float32)
    val_ops = batched(task_operator(c.task, (c.val_crop, c.val_crop)), 1)
    val_y = [np.asarray(degrade_batch(jax.random.fold_in(key[1], i), jnp.asarray(val_x[i:i + 1]), val_ops, noise))
             for i in range(len(val_x))]

    def step(params, opt_state, i):
        x = par.shard(images.batch(key[0], i, c.batch_size))
        params, opt_state, value, aux = train_step(params, opt_state, x, ops, key[0], np.uint32(i), model=c.model,
                                                   graphdef=graphdef, tx=tx, noise=noise)
        return params, opt_state, value, {"forward_iterations": aux["iterations"]}

    def validate(params):
        scores, iters = [], []
        for i in range(len(val_x)):
            p, n = eval_batch(params, jnp.asarray(val_x[i:i + 1]), jnp.asarray(val_y[i]), val_ops, model=c.model, graphdef=graphdef)
            scores.append(float(p[0]))
            iters.append(int(n))
        return float(np.mean(scores)), {"val_psnr": float(np.mean(scores)), "val_iterations": float(np.mean(iters))}

    lr = net_lr(c)

    def fields(params, i):
        sigma, rho = unrolled.sigma_rho(params)
        out = {"sigma": np.asarray(sigma).round(6).tolist(), "rho": np.asarray(rho).round(6).tolist()}
        if callable(lr):
            out["lr"] = float(lr(i - 1))
        if c.mode == "suppa":
            out["lambda"] = float(unrolled.convergence_rate(params))
        return out

    def export(params, best_step, best_fields, elapsed):
        meta = {"step": best_step, "val_psnr": best_fields and best_fields["val_psnr"], "task": c.task, "mode": c.mode, "val_crop": c.val_crop,
                "val_limit": c.val_limit, "train_minutes": round(elapsed / 60, 2), "train_config": c.to_dict()}
        return unrolled.save(c.out_dir / f"suppa_{c.mode}_{c.task}.npz", c.model, graphdef, params, meta)

    def postfix(record, last_val):
        post = {"loss": f"{record['train_loss']:.2e}"}
        if last_val:
            post["val"] = f"{last_val['val_psnr']:.2f}"
        return post

    stage = Stage(c.mode, c.steps, enter=lambda params: (params, tx.init(params)), step=step, validate=validate,
                  validate_every=c.validate_every, fields=fields, desc=f"{c.mode} {c.task}")
    run = Run(export=export, cadence=Cadence(c.log_every, c.checkpoint_every, c.checkpoint_keep), parallel=par,
              postfix=postfix, validate_first=True)
    return run_stages(c, [stage], params, run, resume=resume, max_steps=max_steps, progress=progress)


__all__ = ["SuppaTrainConfig", "suppa_config_from_dict", "load_suppa_config", "initial_params", "net_lr", "make_optimizer",
           "train_step", "eval_batch", "train_suppa"]
