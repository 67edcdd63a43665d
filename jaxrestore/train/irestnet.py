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
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxrestore.losses import ssim_l1_loss, ssim_same
from jaxrestore.metrics import ssim
from jaxrestore.models.irestnet import IRestNet, IRestNetConfig, lpp_output, to_channels_first, to_channels_last
from jaxrestore.models.irestnet_io import save_weights
from jaxrestore.noise import estimate_sigma
from jaxrestore.operators import Blur
from jaxrestore.presets import load_preset
from jaxrestore.train.common import TrainingDiverged, TrainResult, strong as _strong
from jaxrestore.train.config import TrainConfig
from jaxrestore.train.data import TrainImages, ValidationSet, batched, degrade, step_keys, validation_set
from jaxrestore.train.loop import Cadence, Run, Stage, run_stages
from jaxrestore.train.parallel import DataParallel

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


def _apply_layer(net: Net, layer, x, aty, ops, sigma, *, channels_first: bool = False):
    return nnx.merge(net.layers_gd, layer)(x, aty, ops, sigma, net.config, channels_first=channels_first)


def run_frozen(net: Net, layers, y, ops, start, stop, x=None):
    """Layers ``start .. stop - 1`` from ``x`` (default ``y``), no gradient; ``start`` and
    ``stop`` may be traced. The loop runs channels first, as :meth:`IRestNet.run_layers`."""
    aty, sigma = _observation_terms(ops, y)
    aty = to_channels_first(aty)
    body = lambda i, v: _apply_layer(net, take_layer(layers, i), v, aty, ops, sigma, channels_first=True)  # noqa: E731
    x = jax.lax.fori_loop(start, stop, body, to_channels_first(y if x is None else x))
    return jax.lax.stop_gradient(to_channels_last(x))


def _run_block(net: Net, block, x, aty, ops, sigma):
    """A stack of layers (leading axis) from ``x``, differentiable (``lax.scan``, channels first)."""
    aty = to_channels_first(aty)
    step = lambda v, layer: (_apply_layer(net, layer, v, aty, ops, sigma, channels_first=True), None)  # noqa: E731
    return to_channels_last(jax.lax.scan(step, to_channels_first(x), block)[0])


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


class _Setup:
    """What one training run reads once: the preset, the network's static half and initial
    parameters, the training images, the validation set and the batched operators."""

    def __init__(self, config: TrainConfig, par: DataParallel):
        c = self.config = config
        self.preset = load_preset(c.preset)
        kernel = np.asarray(self.preset.kernel(), np.float32)
        self.noise = ("std", float(self.preset.noise_std)) if self.preset.noise_std is not None else ("range", *map(float, self.preset.noise_range))
        self.phases = build_phases(c)
        model = IRestNet(c.irestnet_config(), rngs=nnx.Rngs(c.seed))
        self.net, self.params = Net.split(model)
        self.key = jax.random.split(jax.random.key(c.seed))  # (train, validation)
        self.images = TrainImages(c.data.train, c.data.crop)
        self.val: ValidationSet = validation_set(c.data.val, c.data.val_crop, c.data.val_limit, kernel, self.preset.convention,
                                                 self.key[1], **_noise_kwargs(self.noise))
        b = c.schedule.batch_size
        self.ops = par.shard(batched(Blur.from_kernel(jnp.asarray(kernel), (c.data.crop,) * 2, self.preset.convention), b))
        self.val_chunk = min(b, len(self.val.x))
        self.val_ops = batched(Blur.from_kernel(jnp.asarray(kernel), (c.data.val_crop,) * 2, self.preset.convention), self.val_chunk)
        self.par = par

    def validate(self, params, phase: Phase) -> tuple[float, dict]:
        """``(score, fields)``: minus the training loss on the validation crops (per-image means
        averaged: the crops have one size), and dm-pix's SSIM."""
        n, chunk = len(self.val.x), self.val_chunk
        same, pix, l1 = [], [], []
        for i in range(0, n, chunk):
            idx = np.arange(i, i + chunk) % n  # the last chunk is padded with the first images
            x, y = jnp.asarray(self.val.x[idx]), jnp.asarray(self.val.y[idx])
            if phase.stage == "last":
                s, p, a = eval_model(params, y, x, self.val_ops, net=self.net)
            else:
                s, p, a = eval_layers(params["layers"], y, x, self.val_ops, np.int32(phase.layer + 1), net=self.net)
            keep = min(chunk, n - i)
            same.append(np.asarray(s)[:keep])
            pix.append(np.asarray(p)[:keep])
            l1.append(np.asarray(a)[:keep])
        loss = -float(np.mean(np.concatenate(same))) + self.config.loss.l1_weight * float(np.mean(np.concatenate(l1)))
        return -loss, {"val_loss": loss, "val_ssim": float(np.mean(np.concatenate(pix)))}

    def step(self, params, opt_state, i: int, phase: Phase):
        x = self.par.shard(self.images.batch(self.key[0], i, self.config.schedule.batch_size))
        kw = dict(net=self.net, noise=self.noise, l1_weight=self.config.loss.l1_weight)
        args = (x, self.key[0], np.uint32(i), self.ops, np.float32(phase.lr), np.int32(phase.decay_steps))
        if phase.stage == "last":
            params, opt_state, loss = last_step(params, opt_state, *args, first=phase.layer, **kw)
        else:
            layers, opt_state, loss = layer_step(params["layers"], opt_state, np.int32(phase.layer), *args, **kw)
            params = dict(params, layers=layers)
        return params, opt_state, loss, {}

    def stage(self, phase: Phase) -> Stage:
        c, final = self.config, self.phases[-1]
        layer = phase.output_layer(c.model.num_layers)

        def enter(params):
            params = enter_phase(params, phase)
            return params, init_optimizer(params, phase)

        return Stage(
            name=f"{phase.stage} L{layer}", steps=phase.steps, enter=enter,
            step=lambda params, opt_state, i: self.step(params, opt_state, i, phase),
            validate=lambda params: self.validate(params, phase),
            validate_every=c.schedule.validate_every * c.schedule.steps_per_epoch, select_best=phase is final,
            fields=lambda params, step: {"stage": phase.stage, "layer": layer,
                                         "lr": phase.learning_rate(step - 1 - phase.start)})

    def export(self, params, step: int, best: dict | None, elapsed: float) -> Path:
        """The best-validation model of the final phase (the last state if there is none)."""
        model = self.net.build(params, self.config.seed)
        c = self.config
        meta = {"preset": c.preset, "convention": self.preset.convention, "step": step, "val_loss": best and best["val_loss"],
                "val_ssim": best and best["val_ssim"], "val_crop": c.data.val_crop, "crop": c.data.crop,
                "train_minutes": round(elapsed / 60, 2), "train_config": c.to_dict()}
        return save_weights(model, c.out_dir / f"irestnet_{c.preset}.npz", meta)


def _postfix(record, last_val):
    post = {"loss": f"{record['train_loss']:.4f}"}
    if last_val:
        post["val_ssim"] = f"{last_val['val_ssim']:.4f}"
    return post


def train_irestnet(config: TrainConfig, *, resume: bool | None = None, max_steps: int | None = None,
                   progress: bool = True, devices: int | None = None) -> TrainResult:
    """Train iRestNet as ``config`` says, writing to ``config.out_dir``: ``metrics.jsonl``,
    ``checkpoints/periodic`` (every ``checkpoint.every`` steps and at the end), ``checkpoints/best``
    (lowest validation loss of the final phase) and, once training completes,
    ``irestnet_<preset>.npz`` (:func:`jaxrestore.models.irestnet_io.load_weights`).

    Each phase is one :class:`~jaxrestore.train.loop.Stage` of the common loop
    (:func:`~jaxrestore.train.loop.run_stages`, which documents ``resume`` and ``max_steps``);
    ``devices`` (default ``config.devices``, else all visible) spans the data-parallel mesh."""
    if max_steps is not None and max_steps < 0:
        raise ValueError(f"max_steps must be >= 0, got {max_steps}")
    c = config
    par = DataParallel.create(devices if devices is not None else c.devices, batch_size=c.schedule.batch_size)
    setup = _Setup(c, par)
    run = Run(export=setup.export, cadence=Cadence(c.schedule.log_every, c.checkpoint.every, c.checkpoint.keep), parallel=par,
              postfix=_postfix, extras={"rng": jax.random.key_data(setup.key[0])}, desc="irestnet")
    return run_stages(c, [setup.stage(p) for p in setup.phases], setup.params, run, resume=resume, max_steps=max_steps,
                      progress=progress)


__all__ = ["Phase", "build_phases", "make_optimizer", "Net", "take_layer", "put_layer", "run_frozen", "forward",
           "layer_step", "last_step", "eval_layers", "eval_model", "enter_phase", "init_optimizer",
           "TrainResult", "TrainingDiverged", "train_irestnet"]
