"""Plug-and-play scaled ADMM (the iteration SUPPA unrolls, Le Bon, Le Pendu & Guillemot 2023).

With a denoiser ``D`` in place of the regulariser's prox, ``x_0`` an initial estimate and
``u_0 = 0``, one iteration is (scaled ADMM, Boyd et al. 2011, sec. 3.1.1)::

    z_{k+1} = D(x_k + u_k, sigma_k)
    x_{k+1} = argmin_x 1/2 ||A x - y||^2 + rho_k/2 ||x - (z_{k+1} - u_k)||^2     (op.prox_data)
    u_{k+1} = u_k + x_{k+1} - z_{k+1}

The data step is the operator's closed form: a Fourier-domain division for blurs, the USRNet
polyphase (Woodbury) formula for blur + decimation (:class:`~jaxrestore.operators.Downsample`).

The denoiser is a pure function ``denoiser(net, v, sigma) -> z`` on ``(H, W, C)`` images in
``[0, 1]`` with ``sigma`` the Gaussian noise std on that scale. Its parameters ``net`` travel in
:class:`ADMMParams`, never in a closure, so that gradients reach them under explicit unrolling
and under implicit (DEQ) differentiation of :func:`admm_map`.
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrestore._validation import check_image, check_positive, is_concrete
from jaxrestore.operators import Downsample
from jaxrestore.solvers.base import Solver

Denoiser = Callable[[Any, jax.Array, jax.Array], jax.Array]

# DPIR (Zhang et al. 2021, utils_pnp.get_rho_sigma) never lets the noise level in the schedule
# drop below 0.255 / 255: a zero noise level would make rho = 0 and the data step singular.
SIGMA_FLOOR = 0.255 / 255


class ADMMState(NamedTuple):
    """``x``: the primal (data-consistent) iterate, ``(H, W, C)``; ``u``: the scaled dual.

    ``y`` is the observation. :func:`admm`'s states carry it, so that ``step(state, params)``
    depends on explicit arguments only and a batch of problems is a ``vmap`` over states. The
    fixed-point map of :func:`admm_map` works on ``ADMMState(x, u)`` (``y=None``): a fixed-point
    variable must not contain the data, whose block of the Jacobian is the identity and would
    make ``I - J`` singular in the implicit backward pass.
    """

    x: jax.Array
    u: jax.Array
    y: jax.Array | None = None


class ADMMParams(NamedTuple):
    """What one iteration uses: ``net``, the denoiser's parameters (any pytree); ``sigma``, the
    noise level given to the denoiser; ``rho``, the penalty of the data step. ``sigma`` and
    ``rho`` are scalars (or carry a leading per-iteration axis in a schedule)."""

    net: Any
    sigma: jax.Array
    rho: jax.Array


def _observation_shape(op) -> tuple[int, int]:
    return op.low_shape if isinstance(op, Downsample) else op.shape


def _check_observation(op, y, name: str = "y") -> jax.Array:
    check_image(y, name)
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise ValueError(f"{name} must be a floating-point image, got dtype {y.dtype}")
    obs = _observation_shape(op)
    if tuple(y.shape[:2]) != tuple(obs):
        raise ValueError(f"{name} must have shape ({obs[0]}, {obs[1]}, C) for this operator, got {y.shape}")
    return y


def initial_estimate(op, y) -> jax.Array:
    """``x_0`` of the SUPPA protocol: ``y`` itself when the operator keeps the image size
    (deblurring, denoising, inpainting), bicubic upsampling of ``y`` for
    :class:`~jaxrestore.operators.Downsample` (super-resolution).

    The upsampling is ``jax.image.resize(y, (H, W, C), "bicubic")``: Keys' cubic with
    ``a = -0.5`` (MATLAB's) and half-pixel centres, so low-resolution pixel ``i`` sits at
    high-resolution coordinate ``s i + (s - 1) / 2``, the geometry of :func:`kernels.bicubic`.
    It is not MATLAB ``imresize`` at the border: taps falling outside the image are dropped and
    the remaining weights renormalised (MATLAB mirrors the image), which changes the outer one or
    two pixels only. It is an initialisation, so this does not bias the fixed point.
    """
    y = _check_observation(op, y)
    if tuple(y.shape[:2]) == tuple(op.shape):
        return y
    return jax.image.resize(y, tuple(op.shape) + y.shape[2:], "bicubic")


def _admm_update(op, denoiser: Denoiser, x, u, y, params: ADMMParams):
    """One scaled-ADMM iteration ``(x, u) -> (x', u')`` for observation ``y``."""
    check_positive(params.sigma, "sigma")
    check_positive(params.rho, "rho")
    # sigma and rho in the iterate's precision: a float64 schedule must not promote a float32
    # iterate (a lax.scan carry has to keep its dtype).
    sigma = jnp.asarray(params.sigma).astype(x.dtype)
    rho = jnp.asarray(params.rho).astype(x.dtype)
    z = denoiser(params.net, x + u, sigma)
    if jnp.shape(z) != x.shape:
        raise ValueError(f"denoiser must return an image of the input's shape {x.shape}, got {jnp.shape(z)}")
    z = jnp.asarray(z).astype(x.dtype)
    x = op.prox_data(z - u, y, rho)
    return x, u + x - z


def admm(op, denoiser: Denoiser, *, x0: Callable[[jax.Array], jax.Array] | None = None) -> Solver:
    """Scaled PnP-ADMM as an ``(init, step)`` solver (PROTOCOLS.md section 2, SUPPA).

    Args:
      op: a linear operator of :mod:`jaxrestore.operators` (``Blur`` for deblurring,
        ``Downsample`` with :func:`kernels.bicubic` for super-resolution, ``Identity``,
        ``Inpaint``); it may be a vmapped batch inside the caller's ``vmap``.
      denoiser: ``denoiser(net, v, sigma) -> z`` with ``v``, ``z`` of shape ``(H, W, C)``.
      x0: optional ``x0(y) -> (H, W, C)``; default :func:`initial_estimate` (``y``, or bicubic
        upsampling of ``y`` for super-resolution).

    ``init(y)`` returns ``ADMMState(x0(y), 0, y)``; ``step(state, ADMMParams(net, sigma, rho))``
    does one iteration (see the module docstring). Run a fixed ``ADMMParams`` with
    ``run(solver, y, params, num_iters=K)``, or use :func:`pnp_admm` for a sigma schedule.
    """
    def init(y) -> ADMMState:
        y = _check_observation(op, y)
        x = initial_estimate(op, y) if x0 is None else jnp.asarray(x0(y))
        want = tuple(op.shape) + y.shape[2:]
        if x.shape != want:
            raise ValueError(f"x0(y) must have shape {want}, got {x.shape}")
        return ADMMState(x, jnp.zeros_like(x), y)

    def step(state: ADMMState, params: ADMMParams) -> ADMMState:
        if state.y is None:
            raise ValueError("admm step: the state has no observation y; build it with init(y)")
        x, u = _admm_update(op, denoiser, state.x, state.u, state.y, params)
        return ADMMState(x, u, state.y)

    return Solver(init, step)


def admm_map(op, denoiser: Denoiser, y) -> Callable[[ADMMParams, ADMMState], ADMMState]:
    """The ADMM iteration as the map ``f(params, state) -> state`` of a fixed-point problem
    (``jaxrestore.fixed_point(f, params, state0, ...)``: DEQ, JFB, SUPPA).

    ``state`` is ``ADMMState(x, u)`` with ``y=None``: the fixed-point variable is ``(x, u)``
    alone, and ``y`` (data, not a parameter) is closed over; gradients with respect to ``y`` are
    therefore not propagated through an implicit backward pass. ``params`` is
    :class:`ADMMParams`, whose ``net`` leaves receive the gradients. Start from
    ``admm(op, denoiser).init(y)._replace(y=None)``.
    """
    y = _check_observation(op, y)

    def f(params: ADMMParams, state: ADMMState) -> ADMMState:
        if state.y is not None:
            raise ValueError("admm_map: the fixed-point state must be ADMMState(x, u) with y=None "
                             "(use init(y)._replace(y=None))")
        x, u = _admm_update(op, denoiser, state.x, state.u, y, params)
        return ADMMState(x, u)

    return f


def _check_scalar(value, name: str, *, allow_zero: bool = False) -> None:
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")
    if is_concrete(value):
        v = float(np.asarray(value))
        if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
            raise ValueError(f"{name} must be finite and {'>= 0' if allow_zero else '> 0'}, got {value}")


def pnp_schedule(num_iters: int, noise_sigma, *, sigma_max=49 / 255, sigma_min=None, lam=0.23) -> ADMMParams:
    """DPIR's parameter schedule (Zhang, Li, Zuo, Zhang, Van Gool & Timofte, "Plug-and-Play
    Image Restoration with Deep Denoiser Prior", TPAMI 2021, sec. 4 and ``get_rho_sigma``).

    ``sigma_k`` decreases geometrically (log-spaced) from ``sigma_max`` (DPIR: 49/255) to
    ``sigma_min``, by default the noise level ``max(noise_sigma, SIGMA_FLOOR)`` (for
    super-resolution DPIR stops at ``scale / 255`` instead: pass ``sigma_min``), and
    ``rho_k = lam * max(noise_sigma, SIGMA_FLOOR)^2 / sigma_k^2`` (DPIR's ``alpha_k`` with
    ``lam = 0.23``). DPIR derives this coupling for half-quadratic splitting, whose data step is
    the same prox as ours; for ADMM it is a sensible default, not a derived optimum.

    Args:
      num_iters: ``K >= 1``.
      noise_sigma: std of the observation noise on the ``[0, 1]`` scale, ``>= 0`` (may be traced).

    Returns ``ADMMParams(net=None, sigma, rho)`` with ``sigma`` and ``rho`` of shape ``(K,)``;
    :func:`pnp_admm` fills in ``net``. Raises ``ValueError`` on a non-positive or non-finite
    value, or when ``sigma_min > sigma_max``.
    """
    try:
        k = operator.index(num_iters)
    except TypeError:
        k = 0
    if isinstance(num_iters, bool) or k < 1:
        raise ValueError(f"num_iters must be an integer >= 1, got {num_iters!r}")
    num_iters = k
    _check_scalar(noise_sigma, "noise_sigma", allow_zero=True)
    _check_scalar(sigma_max, "sigma_max")
    _check_scalar(lam, "lam")
    if sigma_min is not None:
        _check_scalar(sigma_min, "sigma_min")
    dtype = jnp.result_type(float)
    noise = jnp.maximum(jnp.asarray(noise_sigma, dtype), SIGMA_FLOOR)
    end = noise if sigma_min is None else jnp.asarray(sigma_min, dtype)
    start = jnp.asarray(sigma_max, dtype)
    if is_concrete(end) and is_concrete(start) and float(end) > float(start):
        raise ValueError(f"the final sigma {float(end):.4g} exceeds sigma_max {float(start):.4g}: "
                         "the schedule must decrease (raise sigma_max or lower sigma_min)")
    t = jnp.arange(num_iters, dtype=dtype) / max(num_iters - 1, 1)
    sigma = jnp.exp((1 - t) * jnp.log(start) + t * jnp.log(end))
    rho = jnp.asarray(lam, dtype) * noise**2 / sigma**2
    return ADMMParams(None, sigma, rho)


def check_denoiser_takes(denoiser, net_params, x, caller: str) -> None:
    """``ValueError`` unless ``denoiser(params, x, sigma)`` maps ``x``'s shape to itself (checked
    abstractly, no computation): a gray ``(H, W, 1)`` image given to an RGB denoiser would
    otherwise fail deep inside XLA."""
    try:
        out = jax.eval_shape(denoiser, net_params, x, jnp.asarray(0.1, x.dtype))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{caller}: the denoiser does not take an image of shape {tuple(x.shape)} "
                         f"({' '.join(str(e).split())[:160]}); our DRUNet denoises 3-channel RGB images: repeat a "
                         "gray image to 3 channels, or use a denoiser trained for its channels") from None
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"{caller}: the denoiser maps {tuple(x.shape)} to {tuple(out.shape)}; it must keep the shape")


def pnp_admm(op, denoiser: Denoiser, net_params, y, *, noise_sigma, num_iters: int = 8,
             sigma_max=49 / 255, sigma_min=None, lam=0.23, x0=None, trace: Callable | None = None):
    """Plain PnP-ADMM inference: ``num_iters`` iterations of :func:`admm` with the
    :func:`pnp_schedule` ``(sigma_k, rho_k)`` and the denoiser parameters ``net_params`` held
    fixed (they are an explicit argument: ``jax.grad`` with respect to them unrolls the loop).

    Returns the final primal iterate ``x`` ``(H, W, C)``, not clipped to ``[0, 1]`` (clip for
    display or metrics; a clip inside would hide data-step overshoot and kill gradients), or
    ``(x, history)`` when ``trace(state) -> pytree`` is given (one entry per iteration).
    """
    schedule = pnp_schedule(num_iters, noise_sigma, sigma_max=sigma_max, sigma_min=sigma_min, lam=lam)
    solver = admm(op, denoiser, x0=x0)
    state0 = solver.init(y)  # validates y
    check_denoiser_takes(denoiser, net_params, state0.x, "pnp_admm")

    def body(state, sigma_rho):
        sigma, rho = sigma_rho
        state = solver.step(state, ADMMParams(net_params, sigma, rho))
        return state, (trace(state) if trace is not None else None)

    state, history = jax.lax.scan(body, state0, (schedule.sigma, schedule.rho))
    return (state.x, history) if trace is not None else state.x


__all__ = ["ADMMState", "ADMMParams", "SIGMA_FLOOR", "check_denoiser_takes", "admm", "admm_map", "initial_estimate",
           "pnp_schedule", "pnp_admm"]
