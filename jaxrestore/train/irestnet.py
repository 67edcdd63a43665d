"""Training iRestNet with the paper's staged recipe (Corbineau et al. 2019; ``../shared/PROTOCOLS.md``
section 1).

The run is a sequence of *phases*, each with its own Adam optimizer and learning-rate schedule
(``lr x 0.9`` every ``decay_every`` epochs of the phase):

* ``first``: layer 0 alone, loss on ``x_1``;
* ``greedy``: layers ``k = 1 .. G-1`` one at a time, layer ``k`` initialised as a copy of layer
  ``k - 1``, loss on ``x_{k+1}``; earlier layers are frozen;
* ``last``: layers ``G .. K-1`` (each initialised from layer ``G - 1``) and the post-processing
  ``Lpp`` trained end to end, loss on ``sigmoid(x_K + Lpp(x_K))`` (or ``sigmoid(logit(x_K) +
  Lpp(x_K))``, ``model.lpp_residual: logit``) with BatchNorm in training mode.

The loss is :func:`jaxrestore.losses.ssim_loss` (``-SSIM``, the authors' zero-padded window), plus
``loss.l1_weight`` times the mean absolute error where the config asks for it (the paper: 0).
Only the trainable slice of the stacked layer parameters is given to the optimizer; frozen layers
run without gradients (``stop_gradient``), recomputed at every step. The layer ``k`` trained in
the first and greedy phases is a traced argument, so all greedy layers share one compilation.

Checkpoints (orbax) hold the parameters, BatchNorm statistics, optimizer state, step counter and
RNG key; batches depend only on ``(seed, step)``, so a resumed run reaches exactly the state of
an uninterrupted one. The model chosen at the end is the one with the lowest validation loss
within the final phase (earlier phases train partial networks whose losses are not comparable);
it is exported with :func:`jaxrestore.models.irestnet_io.save_weights`.
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
from flax import nnx
from tqdm import tqdm

from jaxrestore.losses import ssim_l1_loss, ssim_same
from jaxrestore.metrics import ssim
from jaxrestore.models.irestnet import IRestNet, IRestNetConfig, lpp_output
from jaxrestore.models.irestnet_io import save_weights
from jaxrestore.noise import estimate_sigma
from jaxrestore.operators import Blur
from jaxrestore.presets import load_preset
from jaxrestore.train.checkpoint import CheckpointStore
from jaxrestore.train.config import TrainConfig
from jaxrestore.train.data import TrainImages, ValidationSet, batched, degrade, step_keys, validation_set
from jaxrestore.train.common import TrainingDiverged, TrainResult, strong as _strong
from jaxrestore.train.common import check_run_identity as _check_run_identity
from jaxrestore.train.log import MetricsLog

LR_DECAY = 0.9


# ----------------------------------------------------------------------------- schedule


@dataclasses.dataclass(frozen=True)
class Phase:
    """One optimizer's worth of training: a stage and the layer(s) it trains, global steps
    ``start .. start + steps``."""

    index: int
    stage: str          # "first", "greedy" or "last"
    layer: int          # first/greedy: the layer trained; last: G, the first layer of the block
    start: int
    steps: int
    lr: float
    decay_steps: int    # steps between two lr x 0.9

    @property
    def end(self) -> int:
        return self.start + self.steps

    def output_layer(self, num_layers: int) -> int:
        """The layer whose output the loss sees (``K - 1`` in the last stage)."""
        return num_layers - 1 if self.stage == "last" else self.layer

    def learning_rate(self, local_step: int) -> float:
        """The learning rate of the phase's ``local_step``-th update (0-based)."""
        return self.lr * LR_DECAY ** (local_step // self.decay_steps)


def build_phases(config: TrainConfig) -> list[Phase]:
    """The phases of ``config``: ``first`` (layer 0), ``greedy`` (layers 1 .. G-1), ``last``
    (layers G .. K-1 + Lpp; absent when there is nothing left to train)."""
    s, K, G = config.schedule, config.model.num_layers, config.schedule.greedy_layers
    plan = [("first", 0)] + [("greedy", k) for k in range(1, G)]
    if G < K or config.model.use_lpp:
        plan.append(("last", G))
    phases, start = [], 0
    for i, (stage, layer) in enumerate(plan):
        st = s.stage(stage)
        steps = st.epochs * s.steps_per_epoch
        phases.append(Phase(i, stage, layer, start, steps, st.lr, st.decay_every * s.steps_per_epoch))
        start += steps
    return phases


def make_optimizer(lr, decay_steps) -> optax.GradientTransformation:
    """Adam (PyTorch's defaults) with the staircase schedule ``lr x 0.9^floor(count /
    decay_steps)`` (``optax.exponential_decay(..., staircase=True)``, written out so that ``lr``
    and ``decay_steps`` may be traced: every phase then shares one compiled step)."""
    return optax.adam(lambda count: lr * LR_DECAY ** (count // decay_steps))


# ----------------------------------------------------------------------------- the network as pure functions


@dataclasses.dataclass(frozen=True)
class Net:
    """The static half of an :class:`IRestNet` (hashable: a ``jit`` static argument): its
    config and the graph definitions of the stacked layers and of ``Lpp`` in training (batch
    statistics) and eval (running averages) mode. The arrays live in a ``params`` dict
    ``{"layers": State, "lpp": State, "stats": State}`` (no ``lpp``/``stats`` without Lpp)."""

    config: IRestNetConfig
    layers_gd: object
    lpp_train_gd: object = None
    lpp_eval_gd: object = None

    @classmethod
    def split(cls, model: IRestNet) -> tuple["Net", dict]:
        layers_gd, layers = nnx.split(model.layers, nnx.Param)
        params = {"layers": _strong(layers)}
        if model.lpp is None:
            return cls(model.config, layers_gd), params
        model.lpp.train()
        train_gd, _, _ = nnx.split(model.lpp, nnx.Param, nnx.BatchStat)
        model.lpp.eval()
        eval_gd, lpp, stats = nnx.split(model.lpp, nnx.Param, nnx.BatchStat)
        params.update(lpp=_strong(lpp), stats=_strong(stats))
        return cls(model.config, layers_gd, train_gd, eval_gd), params

    def build(self, params: dict, seed: int = 0) -> IRestNet:
        """An :class:`IRestNet` (eval mode) holding ``params``."""
        model = IRestNet(self.config, rngs=nnx.Rngs(seed))
        nnx.update(model.layers, params["layers"])
        if model.lpp is not None:
            nnx.update(model.lpp, params["lpp"], params["stats"])
        model.eval()
        return model


def take_layer(layers, k):
    """Layer ``k``'s parameters (the leading ``K`` axis indexed; ``k`` may be traced)."""
    return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, k, 0, keepdims=False), layers)


def put_layer(layers, layer, k):
    """``layers`` with layer ``k`` replaced by ``layer``."""
    return jax.tree.map(lambda a, v: jax.lax.dynamic_update_index_in_dim(a, v, k, 0), layers, layer)


def _observation_terms(ops, y):
    """``(H^T y, sigma_hat(y))``, as :meth:`IRestNet.run_layers` computes them."""
    return jax.vmap(lambda op, v: op.adjoint(v))(ops, y), jax.vmap(estimate_sigma)(y)


def _apply_layer(net: Net, layer, x, aty, ops, sigma):
    return nnx.merge(net.layers_gd, layer)(x, aty, ops, sigma, net.config)


def run_frozen(net: Net, layers, y, ops, start, stop, x=None):
    """Layers ``start .. stop - 1`` from ``x`` (default ``y``), no gradient; ``start`` and
    ``stop`` may be traced."""
    aty, sigma = _observation_terms(ops, y)
    body = lambda i, v: _apply_layer(net, take_layer(layers, i), v, aty, ops, sigma)  # noqa: E731
    return jax.lax.stop_gradient(jax.lax.fori_loop(start, stop, body, y if x is None else x))


def _run_block(net: Net, block, x, aty, ops, sigma):
    """A stack of layers (leading axis) from ``x``, differentiable (``lax.scan``)."""
    return jax.lax.scan(lambda v, layer: (_apply_layer(net, layer, v, aty, ops, sigma), None), x, block)[0]


def _apply_lpp(gd, lpp, stats, x, residual: str):
    """:func:`~jaxrestore.models.irestnet.lpp_output` and the BatchNorm statistics after the call
    (updated running averages in training mode, unchanged in eval mode)."""
    # fresh Variable objects at this trace level: BatchNorm may only update statistics it owns
    module = nnx.merge(gd, *jax.tree.map(lambda a: a, (lpp, stats)))
    out = lpp_output(module, x, residual)
    return out, nnx.state(module, nnx.BatchStat)


def _noise_kwargs(noise):
    kind, *values = noise
    return {"noise_std": values[0]} if kind == "std" else {"noise_range": tuple(values)}


@functools.partial(jax.jit, static_argnames=("net", "noise", "l1_weight"))
def layer_step(layers, opt_state, k, x, key, step, ops, lr, decay_steps, *, net: Net, noise, l1_weight: float = 0.0):
    """One Adam step on layer ``k`` alone (stages first and greedy): the batch ``x`` is
    degraded with the noise of ``(key, step)``, layers ``0 .. k-1`` run frozen, the loss is
    ``ssim_l1_loss(x_{k+1}, x, l1_weight)``. Returns ``(layers, opt_state, loss)``."""
    y = degrade(step_keys(key, step)[1], x, ops, **_noise_kwargs(noise))
    aty, sigma = _observation_terms(ops, y)
    x_k = run_frozen(net, layers, y, ops, 0, k)
    layer = take_layer(layers, k)

    def loss_fn(layer):
        return ssim_l1_loss(_apply_layer(net, layer, x_k, aty, ops, sigma), x, l1_weight)

    loss, grads = jax.value_and_grad(loss_fn)(layer)
    updates, opt_state = make_optimizer(lr, decay_steps).update(grads, opt_state, layer)
    return put_layer(layers, optax.apply_updates(layer, updates), k), opt_state, loss


def last_trainable(params: dict, first: int) -> dict:
    """What the last stage trains: layers ``first .. K-1`` and Lpp (those present)."""
    t = {}
    if first < jax.tree.leaves(params["layers"])[0].shape[0]:
        t["block"] = jax.tree.map(lambda a: a[first:], params["layers"])
    if "lpp" in params:
        t["lpp"] = params["lpp"]
    return t


@functools.partial(jax.jit, static_argnames=("net", "noise", "first", "l1_weight"))
def last_step(params, opt_state, x, key, step, ops, lr, decay_steps, *, net: Net, noise, first: int, l1_weight: float = 0.0):
    """One Adam step of the last stage: layers ``first .. K-1`` and Lpp (training-mode
    BatchNorm) end to end, layers ``0 .. first-1`` frozen. Returns ``(params, opt_state, loss)``."""
    y = degrade(step_keys(key, step)[1], x, ops, **_noise_kwargs(noise))
    aty, sigma = _observation_terms(ops, y)
    x_g = run_frozen(net, params["layers"], y, ops, 0, first)
    trainable = last_trainable(params, first)

    def loss_fn(t):
        out = _run_block(net, t["block"], x_g, aty, ops, sigma) if "block" in t else x_g
        stats = params.get("stats")
        if "lpp" in t:
            out, stats = _apply_lpp(net.lpp_train_gd, t["lpp"], stats, out, net.config.lpp_residual)
        return ssim_l1_loss(out, x, l1_weight), stats

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    updates, opt_state = make_optimizer(lr, decay_steps).update(grads, opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    new = dict(params)
    if "block" in trainable:
        new["layers"] = jax.tree.map(lambda a, b: a.at[first:].set(b), params["layers"], trainable["block"])
    if "lpp" in trainable:
        new["lpp"], new["stats"] = trainable["lpp"], stats
    return new, opt_state, loss


def _scores(out, x):
    """Per image: the training SSIM (zero-padded window), dm-pix's 'valid' SSIM and the mean
    absolute error."""
    return ssim_same(out, x), ssim(out, x), jnp.mean(jnp.abs(out - x), axis=(1, 2, 3))


@functools.partial(jax.jit, static_argnames=("net",))
def eval_layers(layers, y, x, ops, stop, *, net: Net):
    """Scores of ``x_stop`` (the first ``stop`` layers; ``stop`` may be traced)."""
    return _scores(run_frozen(net, layers, y, ops, 0, stop), x)


def forward(net: Net, params: dict, y, ops, *, use_lpp: bool | None = None):
    """The full network in eval mode, as ``IRestNet.__call__`` (``sigma`` estimated from ``y``)."""
    aty, sigma = _observation_terms(ops, y)
    out = _run_block(net, params["layers"], y, aty, ops, sigma)
    use_lpp = ("lpp" in params) if use_lpp is None else use_lpp
    if use_lpp:
        out, _ = _apply_lpp(net.lpp_eval_gd, params["lpp"], params["stats"], out, net.config.lpp_residual)
    return out


@functools.partial(jax.jit, static_argnames=("net",))
def eval_model(params, y, x, ops, *, net: Net):
    return _scores(forward(net, params, y, ops), x)


# ----------------------------------------------------------------------------- phase transitions


def enter_phase(params: dict, phase: Phase) -> dict:
    """Initialise the layers a phase trains: greedy layer ``k`` <- layer ``k - 1``; last stage:
    layers ``G .. K-1`` <- layer ``G - 1``."""
    if phase.stage == "greedy":
        k = phase.layer
        return dict(params, layers=jax.tree.map(lambda a: a.at[k].set(a[k - 1]), params["layers"]))
    if phase.stage == "last" and phase.layer > 0:
        g = phase.layer
        return dict(params, layers=jax.tree.map(lambda a: a.at[g:].set(a[g - 1]), params["layers"]))
    return params


def init_optimizer(params: dict, phase: Phase):
    tx = make_optimizer(np.float32(phase.lr), np.int32(phase.decay_steps))
    if phase.stage == "last":
        return tx.init(last_trainable(params, phase.layer))
    return tx.init(take_layer(params["layers"], phase.layer))


# ----------------------------------------------------------------------------- the run


class _Run:
    """State and bookkeeping of one training run (see :func:`train_irestnet`)."""

    def __init__(self, config: TrainConfig):
        self.config = config
        c = config
        self.out_dir = c.out_dir
        self.preset = load_preset(c.preset)
        kernel = np.asarray(self.preset.kernel(), np.float32)
        self.noise = ("std", float(self.preset.noise_std)) if self.preset.noise_std is not None else ("range", *map(float, self.preset.noise_range))
        self.phases = build_phases(c)
        self.total = self.phases[-1].end
        model = IRestNet(c.irestnet_config(), rngs=nnx.Rngs(c.seed))
        self.net, self.params = Net.split(model)
        self.key = jax.random.split(jax.random.key(c.seed))  # (train, validation)
        self.rng = jax.random.key_data(self.key[0])
        self.images = TrainImages(c.data.train, c.data.crop)
        nk = dict(_noise_kwargs(self.noise))
        self.val: ValidationSet = validation_set(c.data.val, c.data.val_crop, c.data.val_limit, kernel, self.preset.convention,
                                                 self.key[1], **nk)
        b = c.schedule.batch_size
        self.ops = batched(Blur.from_kernel(jnp.asarray(kernel), (c.data.crop,) * 2, self.preset.convention), b)
        self.val_chunk = min(b, len(self.val.x))
        self.val_ops = batched(Blur.from_kernel(jnp.asarray(kernel), (c.data.val_crop,) * 2, self.preset.convention), self.val_chunk)
        ckpt = self.out_dir / "checkpoints"
        self.periodic = CheckpointStore(ckpt / "periodic", max_to_keep=c.checkpoint.keep)
        self.best = CheckpointStore(ckpt / "best", max_to_keep=1)
        self.step = 0
        self.opt_state = None
        self.opt_phase = None
        self.best_val = None  # (val_loss, val_ssim, step)
        self.elapsed = 0.0

    # -- checkpoints

    def _ckpt_state(self):
        state = {"params": self.params, "rng": self.rng}
        if self.opt_state is not None:
            state["opt"] = self.opt_state
        return state

    def _meta(self):
        best = self.best_val
        return {"phase": self.opt_phase, "elapsed": self.elapsed, "best_val_loss": best and best[0],
                "best_val_ssim": best and best[1], "best_step": best and best[2]}

    def save(self):
        self.periodic.save(self.step, self._ckpt_state(), self._meta())

    def restore(self, step: int):
        meta = self.periodic.restore_meta(step)
        phase = meta.get("phase")
        template = {"params": self.params, "rng": self.rng}
        if phase is not None:
            if not (isinstance(phase, int) and 0 <= phase < len(self.phases)):
                raise ValueError(f"cannot restore checkpoint {self.periodic.directory}/{step}: unknown phase {phase!r}")
            template["opt"] = init_optimizer(self.params, self.phases[phase])
        state, meta = self.periodic.restore(step, template)
        if not np.array_equal(np.asarray(state["rng"]), np.asarray(self.rng)):
            raise ValueError(f"cannot restore checkpoint {self.periodic.directory}/{step}: it was made with another seed")
        self.params, self.opt_state, self.opt_phase = _strong(state["params"]), _strong(state.get("opt")), phase
        self.step, self.elapsed = step, float(meta.get("elapsed") or 0.0)
        if meta.get("best_step") is not None:
            self.best_val = (meta["best_val_loss"], meta["best_val_ssim"], meta["best_step"])

    # -- validation

    def validate(self, phase: Phase) -> tuple[float, float]:
        n, chunk = len(self.val.x), self.val_chunk
        same, pix, l1 = [], [], []
        for i in range(0, n, chunk):
            idx = np.arange(i, i + chunk) % n  # the last chunk is padded with the first images
            x, y = jnp.asarray(self.val.x[idx]), jnp.asarray(self.val.y[idx])
            if phase.stage == "last":
                s, p, a = eval_model(self.params, y, x, self.val_ops, net=self.net)
            else:
                s, p, a = eval_layers(self.params["layers"], y, x, self.val_ops, np.int32(phase.layer + 1), net=self.net)
            keep = min(chunk, n - i)
            same.append(np.asarray(s)[:keep])
            pix.append(np.asarray(p)[:keep])
            l1.append(np.asarray(a)[:keep])
        # the training loss on the validation crops (per-image means averaged: the crops have one size)
        loss = -float(np.mean(np.concatenate(same))) + self.config.loss.l1_weight * float(np.mean(np.concatenate(l1)))
        return loss, float(np.mean(np.concatenate(pix)))

    # -- one step

    def train_step(self, phase: Phase):
        x = jnp.asarray(self.images.batch(self.key[0], self.step, self.config.schedule.batch_size))
        kw = dict(net=self.net, noise=self.noise, l1_weight=self.config.loss.l1_weight)
        args = (x, self.key[0], np.uint32(self.step), self.ops, np.float32(phase.lr), np.int32(phase.decay_steps))
        if phase.stage == "last":
            self.params, self.opt_state, loss = last_step(self.params, self.opt_state, *args, first=phase.layer, **kw)
        else:
            layers, self.opt_state, loss = layer_step(self.params["layers"], self.opt_state, np.int32(phase.layer), *args, **kw)
            self.params = dict(self.params, layers=layers)
        self.step += 1
        return loss


def train_irestnet(config: TrainConfig, *, resume: bool | None = None, max_steps: int | None = None,
                   progress: bool = True) -> TrainResult:
    """Train iRestNet as ``config`` says, writing to ``config.out_dir``: ``metrics.jsonl``,
    ``checkpoints/periodic`` (every ``checkpoint.every`` steps and at the end), ``checkpoints/best``
    (lowest validation loss of the final phase) and, once training completes,
    ``irestnet_<preset>.npz`` (:func:`jaxrestore.models.irestnet_io.load_weights`).

    ``resume``: ``None`` continues from the latest checkpoint when there is one, ``True``
    requires one, ``False`` refuses to touch a folder that has one. ``max_steps``: stop once the
    global step reaches it (a checkpoint is written there, so the run can be resumed)."""
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    config.out_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(config)
    latest = run.periodic.latest_step()
    if latest is None and resume:
        raise ValueError(f"cannot restore checkpoint from {run.periodic.directory}: no checkpoint found")
    if latest is not None and resume is False:
        raise ValueError(f"{config.out_dir} already holds checkpoints; resume the run or choose another output folder")
    resuming = latest is not None
    _check_run_identity(config, resuming)
    if resuming:
        run.restore(latest)
    run.best.delete_after(run.step)  # a best checkpoint newer than the resumed step is in the discarded future
    log = MetricsLog(config.out_dir / "metrics.jsonl", keep_until=run.step)
    stop_at = run.total if max_steps is None else min(run.total, max_steps)
    sched = config.schedule
    val_interval = sched.validate_every * sched.steps_per_epoch
    final = run.phases[-1]
    t_session = time.perf_counter()
    elapsed0 = run.elapsed
    bar = tqdm(total=run.total, initial=run.step, file=sys.stderr, disable=None if progress else True, unit="step",
               dynamic_ncols=True)
    pending, last_val_ssim = [], None
    try:
        for phase in run.phases:
            if run.step >= phase.end:
                continue
            if run.step >= stop_at:
                break
            if run.step == phase.start:
                run.params = enter_phase(run.params, phase)
                run.opt_state, run.opt_phase = init_optimizer(run.params, phase), phase.index
            elif run.opt_phase != phase.index:
                raise ValueError(f"cannot resume from the checkpoint of step {run.step}: it holds the optimizer of phase "
                                 f"{run.opt_phase}, not of phase {phase.index} ({phase.stage}, layer {phase.layer})")
            layer = phase.output_layer(config.model.num_layers)
            bar.set_description(f"{phase.stage} L{layer}")
            while run.step < min(phase.end, stop_at):
                lr = phase.learning_rate(run.step - phase.start)
                pending.append(run.train_step(phase))
                local = run.step - phase.start
                validate = local % val_interval == 0 or run.step == phase.end
                checkpoint_now = run.step % config.checkpoint.every == 0 or run.step == stop_at
                # a checkpoint step is also a logged step: its loss is checked for divergence before
                # it is saved, and a run resumed from it logs what the uninterrupted run logs
                if not (validate or checkpoint_now or run.step % sched.log_every == 0):
                    bar.update()
                    continue
                run.elapsed = elapsed0 + time.perf_counter() - t_session
                record = {"step": run.step, "stage": phase.stage, "layer": layer, "lr": lr,
                          "train_loss": float(np.mean([float(v) for v in pending]))}
                pending = []
                if validate:
                    val_loss, val_ssim = run.validate(phase)
                    record.update(val_loss=val_loss, val_ssim=val_ssim)
                    last_val_ssim = val_ssim
                    if phase is final and (run.best_val is None or val_loss < run.best_val[0]):
                        run.best_val = (val_loss, val_ssim, run.step)
                        run.best.save(run.step, run.params, {"val_loss": val_loss, "val_ssim": val_ssim})
                record["wall_time"] = round(run.elapsed, 3)
                log.write(record)
                if not np.isfinite(record["train_loss"]):
                    raise TrainingDiverged(f"training loss is {record['train_loss']} at step {run.step} ({phase.stage}, layer {layer})")
                post = {"loss": f"{record['train_loss']:.4f}"}
                if last_val_ssim is not None:
                    post["val_ssim"] = f"{last_val_ssim:.4f}"
                bar.set_postfix(post, refresh=False)
                bar.update()
                if checkpoint_now:
                    run.save()
        if run.step not in run.periodic.steps():
            run.elapsed = elapsed0 + time.perf_counter() - t_session
            run.save()
    finally:
        bar.close()
        log.close()
    completed = run.step >= run.total
    weights = None
    if completed:
        weights = _export(run)
    result = TrainResult(
        out_dir=config.out_dir, steps=run.step, total_steps=run.total, completed=completed, weights=weights,
        best_step=run.best_val and run.best_val[2], best_val_loss=run.best_val and run.best_val[0],
        best_val_ssim=run.best_val and run.best_val[1], elapsed=run.elapsed, metrics=config.out_dir / "metrics.jsonl",
    )
    run.periodic.close()
    run.best.close()
    return result


def _export(run: _Run) -> Path:
    """Write the best-validation model of the final phase (the last state if there is none)."""
    params, step = run.params, run.step
    if run.best_val is not None:
        template = {k: v for k, v in run.params.items()}
        params, meta = run.best.restore(run.best_val[2], template)
        step = meta["step"]
    model = run.net.build(params, run.config.seed)
    c = run.config
    meta = {"preset": c.preset, "convention": run.preset.convention, "step": step, "val_loss": run.best_val and run.best_val[0],
            "val_ssim": run.best_val and run.best_val[1], "val_crop": c.data.val_crop, "crop": c.data.crop,
            "train_config": c.to_dict()}
    return save_weights(model, c.out_dir / f"irestnet_{c.preset}.npz", meta)


__all__ = ["Phase", "build_phases", "make_optimizer", "Net", "take_layer", "put_layer", "run_frozen", "forward",
           "layer_step", "last_step", "eval_layers", "eval_model", "enter_phase", "init_optimizer",
           "TrainResult", "TrainingDiverged", "train_irestnet"]
