"""PnP-ADMM with a learned denoiser, trained end to end in one of four ways (Le Bon, Le Pendu &
Guillemot, "SUPPA", EUSIPCO 2023; ``../shared/PROTOCOLS.md`` section 2).

The iteration is the scaled ADMM of :mod:`jaxrestore.solvers.admm` with a DRUNet denoiser. What
is learned: the denoiser's weights and the iteration's ``(sigma, rho)``, stored as logarithms
(positive by construction):

* ``explicit``: ``K`` (default 6) unrolled iterations, one ``(sigma_k, rho_k)`` per iteration,
  loss on ``x_K``, reverse mode through every iteration (memory grows with ``K``);
* ``deq``: one ``(sigma, rho)``; the output is the fixed point ``x*`` (forward to a tolerance),
  differentiated implicitly (:class:`jaxrestore.fixed_point.Implicit`, Anderson ``m = 5``);
* ``jfb``: as ``deq``, differentiated through one last iteration only (Jacobian-free);
* ``suppa``: as ``deq`` for inference; trained per iteration with the learned convergence rate
  ``lambda``: ``l_k = ||(1 + lambda) f(x_k) - lambda x_k - x_gt||^2`` on the last iterate and one
  drawn at random (reservoir sampling: no stored history), the forward pass running without
  gradients (:func:`suppa_forward`).

Everything here is a pure function of ``(graphdef, params)``: :func:`solve` restores a batch,
:func:`loss` is the training objective of a mode. The trained model is saved as one ``.npz``
(:func:`save` / :func:`load`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrestore.fixed_point import (Anderson, FixedPointInfo, Implicit, JacobianFree, Picard, fixed_point,
                                    relative_residual)
from jaxrestore.models.drunet import SMALL, DRUNet, DRUNetConfig, self_ensemble
from jaxrestore.solvers.admm import ADMMParams, ADMMState, admm_map, initial_estimate

Mode = Literal["explicit", "deq", "jfb", "suppa"]
MODES = ("explicit", "deq", "jfb", "suppa")
FORMAT = "jaxrestore.unrolled_admm.weights/1"


@dataclasses.dataclass(frozen=True)
class UnrolledConfig:
    """``iterations``: unrolled steps of ``explicit``; ``max_iters`` / ``tol``: the forward
    fixed-point pass of the other modes (relative change of ``(x, u)``); ``backward_*``: the
    implicit backward solve of ``deq`` (Anderson, ``m = 5``). ``unroll``: inline the
    differentiated loops (explicit's iterations, deq's backward solve) instead of looping; XLA:CPU
    runs convolution gradients inside loops about 10x slower, so CPU configs set it."""

    mode: Mode = "suppa"
    iterations: int = 6
    max_iters: int = 50
    tol: float = 1e-3
    backward_tol: float = 1e-4
    backward_max_iters: int = 50
    unroll: bool = False
    drunet: DRUNetConfig = SMALL

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.iterations < 1 or self.max_iters < 1:
            raise ValueError(f"iterations and max_iters must be >= 1, got {self.iterations}, {self.max_iters}")
        if not (self.tol > 0 and self.backward_tol > 0):
            raise ValueError("tol and backward_tol must be > 0")

    @property
    def steps(self) -> int:
        """Length of the ``(sigma, rho)`` arrays: ``iterations`` for explicit, 1 otherwise."""
        return self.iterations if self.mode == "explicit" else 1

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["drunet"]["channels"] = list(self.drunet.channels)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "UnrolledConfig":
        d = json.loads(text)
        d["drunet"] = DRUNetConfig(**d["drunet"])
        return cls(**d)


def init_params(config: UnrolledConfig, net, sigma, rho) -> dict:
    """Trainable parameters: ``net`` (the denoiser's ``nnx.State``), ``log_sigma`` and
    ``log_rho`` of shape ``(config.steps,)`` (from scalars or per-iteration arrays), and
    ``log1p_lambda`` (SUPPA's convergence rate, ``lambda = exp(.) - 1``, initialised to 1)."""
    k = config.steps
    sigma = np.broadcast_to(np.asarray(sigma, np.float32), (k,)) if np.size(sigma) in (1, k) else None
    rho = np.broadcast_to(np.asarray(rho, np.float32), (k,)) if np.size(rho) in (1, k) else None
    if sigma is None or rho is None:
        raise ValueError(f"sigma and rho must be scalars or have {k} entries")
    if np.any(~(sigma > 0)) or np.any(~(rho > 0)):
        raise ValueError(f"sigma and rho must be > 0, got {sigma}, {rho}")
    return {"net": net, "log_sigma": jnp.log(jnp.asarray(sigma)), "log_rho": jnp.log(jnp.asarray(rho)),
            "log1p_lambda": jnp.log(jnp.asarray(2.0, jnp.float32))}


def sigma_rho(params) -> tuple[jax.Array, jax.Array]:
    return jnp.exp(params["log_sigma"]), jnp.exp(params["log_rho"])


def convergence_rate(params) -> jax.Array:
    """SUPPA's learned ``lambda``."""
    return jnp.exp(params["log1p_lambda"]) - 1.0


def _denoiser(graphdef, x8: bool = False):
    def denoiser(net, v, sigma):
        return nnx.merge(graphdef, net)(v, sigma)

    return self_ensemble(denoiser) if x8 else denoiser


def batch_map(graphdef, ops, y, x8: bool = False):
    """``f(admm_params, state) -> state``: one ADMM iteration on a batch (``ops`` and ``y``
    carry a leading batch axis; ``state`` is a batched ``ADMMState(x, u)``). ``x8``: the
    denoiser is its geometric self-ensemble (:func:`jaxrestore.models.drunet.self_ensemble`,
    eight calls per iteration), an inference-time option."""
    den = _denoiser(graphdef, x8)

    def f(p: ADMMParams, state: ADMMState) -> ADMMState:
        return jax.vmap(lambda op, yy, s: admm_map(op, den, yy)(p, s))(ops, y, state)

    return f


def initial_state(ops, y) -> ADMMState:
    x0 = jax.vmap(initial_estimate)(ops, y)
    return ADMMState(x0, jnp.zeros_like(x0))


def _fixed_params(params) -> ADMMParams:
    sigma, rho = sigma_rho(params)
    return ADMMParams(params["net"], sigma[0], rho[0])


def _unroll(graphdef, params, ops, y, num_iters: int, trace=None, unroll: bool = False, x8: bool = False):
    """``num_iters`` iterations with per-iteration ``(sigma_k, rho_k)`` (explicit mode)."""
    f = batch_map(graphdef, ops, y, x8)
    sigma, rho = sigma_rho(params)

    def body(state, sr):
        state = f(ADMMParams(params["net"], sr[0], sr[1]), state)
        return state, (trace(state) if trace is not None else None)

    return jax.lax.scan(body, initial_state(ops, y), (sigma[:num_iters], rho[:num_iters]), unroll=unroll)


def solve(config: UnrolledConfig, graphdef, params, ops, y, *, max_iters: int | None = None, tol: float | None = None,
          adjoint=None, anderson: bool = False, x8: bool = False):
    """Restore a batch ``y`` ``(N, h, w, C)`` with per-image operators ``ops``. Returns ``(x,
    info)``: ``explicit`` runs its ``iterations`` (info reports them); the other modes iterate
    to ``tol`` (default ``config.tol``) or ``max_iters`` (default ``config.max_iters``), with
    Anderson acceleration if asked, differentiated by ``adjoint`` (default: the mode's own).
    ``x8``: use the denoiser's geometric self-ensemble in every iteration (8x the cost)."""
    if config.mode == "explicit":
        state, _ = _unroll(graphdef, params, ops, y, config.iterations, unroll=config.unroll, x8=x8)
        n = jnp.asarray(config.iterations)
        return state.x, FixedPointInfo(n, jnp.asarray(jnp.nan), jnp.asarray(True), jnp.all(jnp.isfinite(state.x)))
    if adjoint is None:
        adjoint = {"deq": Implicit("anderson", tol=config.backward_tol, max_iters=config.backward_max_iters, m=5,
                                   unroll=config.unroll),
                   "jfb": JacobianFree(), "suppa": JacobianFree()}[config.mode]
    f = batch_map(graphdef, ops, y, x8)
    state, info = fixed_point(f, _fixed_params(params), initial_state(ops, y), adjoint=adjoint,
                              forward=Anderson(m=5) if anderson else Picard(),
                              tol=config.tol if tol is None else tol, max_iters=config.max_iters if max_iters is None else max_iters)
    return state.x, info


def trajectory(config: UnrolledConfig, graphdef, params, ops, y, num_iters: int, x_gt=None, x8: bool = False):
    """Every iterate ``x_1 .. x_num_iters`` (no tolerance): for the PSNR-per-iteration plot.
    Explicit mode repeats its last ``(sigma, rho)`` past ``config.iterations``. With ``x_gt``,
    returns the per-iteration mean PSNR instead of the iterates. ``x8`` as in :func:`solve`."""
    from jaxrestore.metrics import psnr

    def score(state):
        if x_gt is None:
            return state.x
        return jnp.mean(jax.vmap(psnr)(jnp.clip(state.x, 0, 1), x_gt))

    if config.mode == "explicit":
        sigma, rho = sigma_rho(params)
        pad = max(num_iters - config.iterations, 0)
        sigma = jnp.concatenate([sigma, jnp.repeat(sigma[-1:], pad)])[:num_iters]
        rho = jnp.concatenate([rho, jnp.repeat(rho[-1:], pad)])[:num_iters]
        params = dict(params, log_sigma=jnp.log(sigma), log_rho=jnp.log(rho))
        return _unroll(graphdef, params, ops, y, num_iters, score, x8=x8)[1]
    f = batch_map(graphdef, ops, y, x8)
    p = _fixed_params(params)

    def body(state, _):
        state = f(p, state)
        return state, score(state)

    return jax.lax.scan(body, initial_state(ops, y), None, length=num_iters)[1]


def _mse(a, b):
    return jnp.mean((a - b) ** 2)


def loss(config: UnrolledConfig, graphdef, params, ops, y, x_gt, key):
    """The training objective of ``config.mode`` on a batch (mean squared error per pixel).
    ``key`` draws SUPPA's random iterate. Returns ``(loss, aux)`` with ``aux`` the forward
    pass's iteration count and residual."""
    if config.mode in ("explicit", "deq", "jfb"):
        x, info = solve(config, graphdef, params, ops, y)
        return _mse(x, x_gt), {"iterations": info.iterations, "residual": info.residual}
    # SUPPA: the forward pass without gradients, then the per-iteration loss (21) on the last
    # iterate and one earlier iterate drawn uniformly
    f = batch_map(graphdef, ops, y)
    p = _fixed_params(params)
    last, drawn, count, picked = suppa_forward(f, p, initial_state(ops, y), key, tol=config.tol, max_iters=config.max_iters)
    lam = convergence_rate(params)
    total = 0.0
    for s in (last, drawn):
        total = total + _mse((1.0 + lam) * f(p, s).x - lam * s.x, x_gt)
    return total / 2, {"iterations": count, "residual": jnp.asarray(jnp.nan), "picked": picked}


def suppa_forward(f, params, state0, key, *, tol: float, max_iters: int):
    """SUPPA's forward pass: iterate ``f`` without gradients to a relative change below ``tol``
    (over the whole state) or ``max_iters``, keeping the last iterate and one of the earlier
    iterates ``s_0 .. s_{n-1}`` drawn uniformly by reservoir sampling (iterate ``k`` replaces
    the kept one with probability ``1 / (k + 1)``). Memory stays constant in ``max_iters``:
    no history is stored. Returns ``(last, drawn, n, index of drawn)``."""
    params = jax.lax.stop_gradient(params)
    def cond(c):
        return (c[2] < max_iters) & (c[4] >= tol)  # NaN residual (non-finite iterate) stops too

    def body(c):
        s, kept, k, idx, _, key = c
        key, sub = jax.random.split(key)
        take = jax.random.uniform(sub) * (k + 1) < 1.0
        kept = jax.tree.map(lambda a, b: jnp.where(take, a, b), s, kept)
        new = f(params, s)
        return new, kept, k + 1, jnp.where(take, k, idx), relative_residual(new, s), key

    state0 = jax.lax.stop_gradient(state0)
    dtype = jax.tree.leaves(state0)[0].dtype
    init = (state0, state0, jnp.asarray(0), jnp.asarray(0), jnp.asarray(jnp.inf, dtype), key)
    last, drawn, n, idx, _, _ = jax.lax.while_loop(cond, body, init)
    return last, drawn, n, idx


# ----------------------------------------------------------------------------- files


def save(path, config: UnrolledConfig, graphdef, params, metadata: dict | None = None):
    """Write the trained model (denoiser weights, ``sigma``/``rho`` logs, ``lambda``) to ``path``."""
    from jaxrestore.models import weights_io as wio

    model = nnx.merge(graphdef, params["net"])
    state = nnx.state(model)
    pure = {"net": nnx.to_pure_dict(state), **{k: np.asarray(v) for k, v in params.items() if k != "net"}}
    return wio.save_pure(path, pure, FORMAT, config.to_json(), metadata)


def load(path):
    """``(config, graphdef, params, metadata)`` of a model saved by :func:`save`."""
    from jaxrestore.models import weights_io as wio

    data = wio.read(path, FORMAT, "unrolled ADMM")
    try:
        config = UnrolledConfig.from_json(str(data["__config__"]))
    except (json.JSONDecodeError, TypeError, ValueError, KeyError) as e:
        raise ValueError(f"cannot load unrolled ADMM weights {path}: bad config ({e})") from None
    abstract = nnx.eval_shape(lambda: DRUNet(config.drunet, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    k = config.steps
    template = {"net": nnx.to_pure_dict(state), "log_sigma": jax.ShapeDtypeStruct((k,), jnp.float32),
                "log_rho": jax.ShapeDtypeStruct((k,), jnp.float32), "log1p_lambda": jax.ShapeDtypeStruct((), jnp.float32)}
    pure = wio.fill_pure(template, data, path, "unrolled ADMM")
    nnx.replace_by_pure_dict(state, pure["net"])
    params = dict(pure, net=state)
    return config, graphdef, params, wio.metadata(data)


__all__ = ["MODES", "UnrolledConfig", "init_params", "sigma_rho", "convergence_rate", "batch_map", "initial_state",
           "solve", "trajectory", "loss", "suppa_forward", "save", "load", "FORMAT"]
