"""The SUPPA test protocol (Le Bon, Le Pendu & Guillemot, EUSIPCO 2023; ../shared/PROTOCOLS.md
section 2): degradations, test images, and the restoration methods compared in its tables.

Tasks:

* ``deblur``: circular convolution with a Gaussian of std 2 truncated at 3 std (13x13, MATLAB
  ``fspecial``), then white Gaussian noise of std 0.01 (1 %). Full test images (BSDS500 val:
  481x321 and 321x481), the observation is not clipped.
* ``sr2``, ``sr3``, ``sr4``: bicubic downsampling *without* antialiasing by ``s`` (the USRNet /
  SUPPA protocol; in the interior it equals MATLAB ``imresize(x, 1/s, 'bicubic',
  'Antialiasing', false)``, at the border our operator is circular), images first modcropped to
  a multiple of ``s``. **No noise** (``noise_std = 0``), as in the SR literature; PnP needs a
  noise level in its ``rho`` schedule anyway and uses :data:`~jaxrestore.solvers.admm.SIGMA_FLOOR`.

Images are RGB in ``[0, 1]`` (grayscale repeated to three channels). Degradation runs in float64
with one ``numpy.random.default_rng(seed)`` per image (:func:`degrade`); restoration in float32.
Scores (:func:`score`) are PSNR on RGB of the output clipped to ``[0, 1]``, over the full image
without shaving a border (the paper does not state one; SR papers often shave ``s`` pixels and
use the Y channel, which gives higher numbers).

Every runner takes the task and a list of observations ``ys`` (each image may have its own
shape; the operator is rebuilt from the task and ``y``'s shape) and returns the list of
restorations, unclipped. Each is one ``jax.jit``-compiled function, recompiled once per image
shape and cached by ``jit``.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxrestore import kernels
from jaxrestore.data import list_images, load_image
from jaxrestore.operators import Blur, Downsample
from jaxrestore.solvers import Solver, initial_estimate, pnp_admm, projected_gradient, run

TASKS = ("deblur", "sr2", "sr3", "sr4")

BLUR_STD = 2.0
BLUR_SIZE = 13  # 2 * ceil(3 * std) + 1: truncated at 3 std
DEBLUR_NOISE = 0.01

# Tuned by grids over restore_tv / restore_pnp (seed 0) on the first 10 BSDS500 val
# images (deblur) and on Set5 (sr2; PnP sr3 / sr4 below); TV sr3 / sr4 reuse the sr2 settings. Mean PSNR printed:
#
# TV, delta 0.01. projected_gradient minimises 1/2 ||A x - y||^2 + lam R(x) with the smoothed TV
# R = sum sqrt(|D x|^2 / delta^2 + 1) ~ TV(x) / delta, so lam is ~100x smaller than a plain TV
# weight. Deblur (observed 24.489): lam 1e-6 25.828, 2e-6 26.613, 3.5e-6 26.810, 5e-6 26.819,
# 1e-5 26.690, 2e-5 26.449, 3e-5 26.273, 5e-5 26.020, 1e-4 25.622, 3e-4 24.861, 1e-3 23.783;
# 500 and 1000 iterations agree to 0.001 dB at every lam. sr2 (bicubic 32.378): lam 1e-7 31.643,
# 1e-6 31.637, 1e-5 31.592 at 1000 iterations (2000: within 0.003 dB): noiseless, the lam -> 0
# limit is the data-consistent image of least smoothed TV, and it is *below* bicubic (sr3 24.81,
# sr4 24.55 against bicubic 27.90, 26.25): point-sampling SR is not a problem TV is good at.
TV_PARAMS = {
    "deblur": {"lam": 5e-6, "delta": 0.01, "iterations": 500},
    "sr2": {"lam": 1e-6, "delta": 0.01, "iterations": 1000},
    "sr3": {"lam": 1e-6, "delta": 0.01, "iterations": 1000},
    "sr4": {"lam": 1e-6, "delta": 0.01, "iterations": 1000},
}

# PnP-ADMM (pnp_admm): sigma_k log-spaced from sigma_max to sigma_min (None: the noise level),
# rho_k = lam * max(noise, SIGMA_FLOOR)^2 / sigma_k^2, with the shipped small DRUNet (trained with
# sigma = 50 u^2 / 255; configs/denoiser/small.yaml).
# Deblur (first 10 val images, TV 26.819): 8 / 12 / 16 iterations x lam 0.35 / 0.5 x sigma_min
# noise / 5/255 from 49/255: best 8 iterations, lam 0.5, 49 -> noise, 27.270 (12: 27.252, 16:
# 27.200; sigma_min 5/255 -0.015 dB); lam 0.7 / 1: 27.214 / 27.103; sigma_max 35 / 64: 27.210 /
# 27.272. (The earlier denoiser, sigma uniform, peaked at 6 iterations, 49 -> 5/255: 27.074.)
# sr2 (first 5 val images, modcropped, bicubic 28.225): 4 / 8 / 16 iterations x sigma_max 25 / 49
# x sigma_min 2.55 / 10 / 20 (/255), lam 0.23: best 4 iterations, 25 -> 10/255, 28.284; all 18
# settings lie in 28.03..28.28. Without antialiasing the aliasing is in y, and a Gaussian denoiser
# does not undo it: PnP ties bicubic, only training (the unrolled modes) goes beyond it.
# sr3 / sr4 (Set5, bicubic 27.901 / 26.252), 6 iterations, lam 0.23, sigma_max -> sigma_min (/255):
# 25 -> 10: 27.472 / 26.058; 10 -> 5: 27.794 / 26.194; 5 -> 2: 27.809 / 26.201; 3 -> 1: 27.769 /
# 26.185. Without antialiasing, x3 is plain decimation (the kernel's taps fall on the zeros of the
# cubic), and no schedule reaches bicubic; 10 -> 5 is kept (within 0.02 dB of the best, and the
# start of configs/suppa/explicit-sr3/4.yaml).
PNP_PARAMS = {
    "deblur": {"num_iters": 8, "lam": 0.5, "sigma_max": 49 / 255, "sigma_min": None},
    "sr2": {"num_iters": 4, "lam": 0.23, "sigma_max": 25 / 255, "sigma_min": 10 / 255},
    "sr3": {"num_iters": 6, "lam": 0.23, "sigma_max": 10 / 255, "sigma_min": 5 / 255},
    "sr4": {"num_iters": 6, "lam": 0.23, "sigma_max": 10 / 255, "sigma_min": 5 / 255},
}


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; available: {', '.join(TASKS)}")


def scale_factor(task: str) -> int:
    """1 for deblurring, ``s`` for ``sr<s>``."""
    _check_task(task)
    return 1 if task == "deblur" else int(task[2:])


def task_kernel(task: str) -> np.ndarray:
    """The task's kernel (float64): the 13x13 Gaussian of std 2, or the bicubic (``a = -0.5``,
    no antialiasing) downsampling kernel of :func:`kernels.bicubic`."""
    s = scale_factor(task)
    return kernels.gaussian(BLUR_SIZE, BLUR_STD) if s == 1 else kernels.bicubic(s, antialias=False)


def task_operator(task: str, image_shape, dtype=None):
    """The degradation ``A`` on high-resolution images of ``image_shape`` (``(H, W[, C])``):
    :class:`Blur` (circular convolution) for ``deblur``, :class:`Downsample` for ``sr<s>`` (``H``,
    ``W`` multiples of ``s``). ``dtype``: of the operator's transfer function's source kernel
    (default float32; float64 needs ``jax.enable_x64``)."""
    s = scale_factor(task)
    k = jnp.asarray(task_kernel(task), jnp.float32 if dtype is None else dtype)
    if s == 1:
        return Blur.from_kernel(k, image_shape)
    return Downsample.from_kernel(k, image_shape, s)


def noise_std(task: str) -> float:
    """Std of the observation noise on the ``[0, 1]`` scale: 0.01 for deblurring, 0 for SR."""
    return DEBLUR_NOISE if scale_factor(task) == 1 else 0.0


def modcrop(x, s: int):
    """``x[:H - H % s, :W - W % s]`` (the SR convention: crop bottom/right to a multiple of ``s``)."""
    h, w = x.shape[:2]
    return x[: h - h % s, : w - w % s]


def load_task_images(folder, task: str, limit: int | None = None) -> tuple[list[str], list[np.ndarray]]:
    """``(names, images)``: the folder's images in sorted name order, ``(H, W, 3)`` float32 in
    ``[0, 1]`` (grayscale repeated), modcropped to a multiple of ``s`` for SR, full size for
    deblurring (shapes may differ between images)."""
    s = scale_factor(task)
    paths = list_images(folder)[:limit]
    if not paths:
        raise ValueError(f"no images in {folder}")
    return [p.name for p in paths], [modcrop(load_image(p), s) for p in paths]


def degrade(task: str, x, seed: int):
    """``(y, op)``: ``y = A x + noise_std(task) * n`` with ``n`` from
    ``numpy.random.default_rng(seed).standard_normal`` (same seed, same ``y``), ``A x`` computed
    in float64; ``y`` float32, not clipped; ``op`` the float32 operator for restoration."""
    x = np.asarray(x, np.float64)
    if x.ndim != 3:
        raise ValueError(f"x must be (H, W, C), got shape {x.shape}")
    s = scale_factor(task)
    if x.shape[0] % s or x.shape[1] % s:
        raise ValueError(f"image size {x.shape[:2]} is not a multiple of {s}; modcrop it first")
    with jax.enable_x64(True):
        op64 = task_operator(task, x.shape, jnp.float64)
        ax = np.asarray(_apply(op64, jnp.asarray(x, jnp.float64)))
    std = noise_std(task)
    y = ax + std * np.random.default_rng(seed).standard_normal(ax.shape) if std > 0 else ax
    return y.astype(np.float32), task_operator(task, x.shape)


def observation_operator(task: str, y):
    """The float32 operator that produced the observation ``y`` (``y`` low-resolution for SR)."""
    s = scale_factor(task)
    return task_operator(task, (y.shape[0] * s, y.shape[1] * s))


def score(gt, x) -> float:
    """PSNR (dB) on RGB of ``clip(x, 0, 1)`` against ``gt``, full image, float64."""
    gt, x = np.asarray(gt, np.float64), np.clip(np.asarray(x, np.float64), 0.0, 1.0)
    if gt.shape != x.shape:
        raise ValueError(f"shapes differ: {gt.shape} vs {x.shape}")
    return float(10.0 * np.log10(1.0 / np.mean((gt - x) ** 2)))


@jax.jit
def _apply(op, x):
    return op(x)


# ----------------------------------------------------------------------------------- methods


@partial(jax.jit, static_argnames=("iterations",))
def _tv_one(op, y, lam, delta, iterations: int):
    solver = projected_gradient(op, lam, delta)
    if y.shape[:2] != op.shape:
        # SR: start from the bicubic upsampling rather than clip(A^T y) (a zero-filled grid);
        # the problem is convex, so this changes the speed, not the limit
        x0 = jnp.clip(initial_estimate(op, y), 0.0, 1.0)
        base = solver
        solver = Solver(lambda y: base.init(y)._replace(x=x0, z=x0), base.step)
    return run(solver, y, num_iters=iterations).x


def restore_tv(task: str, ys, lam=None, delta=None, iterations=None) -> list[np.ndarray]:
    """Smoothed-TV reconstruction: FISTA projected gradient on
    ``1/2 ||A x - y||^2 + lam R(x)`` over ``[0, 1]^n`` (:func:`projected_gradient`, eq. (13) of
    iRestNet for ``R``); defaults from :data:`TV_PARAMS`."""
    _check_task(task)
    p = dict(TV_PARAMS[task])
    p.update({k: v for k, v in (("lam", lam), ("delta", delta), ("iterations", iterations)) if v is not None})
    return [np.asarray(_tv_one(observation_operator(task, y), jnp.asarray(y, jnp.float32),
                               jnp.float32(p["lam"]), jnp.float32(p["delta"]), int(p["iterations"]))) for y in ys]


@jax.jit
def _bicubic_one(op, y):
    return initial_estimate(op, y)


def restore_bicubic(task: str, ys) -> list[np.ndarray]:
    """Bicubic upsampling of ``y`` (``jax.image.resize``, Keys ``a = -0.5``, the geometry of the
    degradation; the ``x_0`` of the SUPPA iteration). SR tasks only."""
    if scale_factor(task) == 1:
        raise ValueError("method bicubic applies to super-resolution tasks only (sr2, sr3, sr4)")
    return [np.asarray(_bicubic_one(observation_operator(task, y), jnp.asarray(y, jnp.float32))) for y in ys]


@partial(jax.jit, static_argnames=("denoiser", "num_iters"))
def _pnp_one(op, y, net_params, noise_sigma, sigma_max, sigma_min, lam, denoiser, num_iters: int):
    return pnp_admm(op, denoiser, net_params, y, noise_sigma=noise_sigma, num_iters=num_iters, sigma_max=sigma_max,
                    sigma_min=sigma_min, lam=lam)


def _pnp_settings(task, noise_sigma, num_iters, sigma_max, sigma_min, lam) -> dict:
    _check_task(task)
    p = dict(PNP_PARAMS[task])
    p.update({k: v for k, v in (("num_iters", num_iters), ("sigma_max", sigma_max), ("sigma_min", sigma_min),
                                ("lam", lam)) if v is not None})
    p["noise_sigma"] = noise_std(task) if noise_sigma is None else noise_sigma
    return p


def restore_pnp(task: str, ys, denoiser, net_params, *, noise_sigma=None, num_iters=None, sigma_max=None,
                sigma_min=None, lam=None) -> list[np.ndarray]:
    """PnP-ADMM with a fixed denoiser (:func:`pnp_admm`, DPIR's schedule): ``denoiser(net_params,
    v, sigma)`` from :func:`jaxrestore.models.drunet.as_denoiser`. ``noise_sigma`` defaults to
    :func:`noise_std` (0 for SR: the schedule then uses its floor); the rest to
    :data:`PNP_PARAMS` (``sigma_min=None`` there means: the noise level)."""
    p = _pnp_settings(task, noise_sigma, num_iters, sigma_max, sigma_min, lam)
    smin = p["sigma_min"]
    return [np.asarray(_pnp_one(observation_operator(task, y), jnp.asarray(y, jnp.float32), net_params,
                                jnp.float32(p["noise_sigma"]), jnp.float32(p["sigma_max"]),
                                None if smin is None else jnp.float32(smin), jnp.float32(p["lam"]),
                                denoiser=denoiser, num_iters=int(p["num_iters"])))
            for y in ys]


def _batched(op):
    return jax.tree.map(lambda a: a[None], op)


@partial(jax.jit, static_argnums=(0, 1), static_argnames=("x8",))
def _unrolled_one(config, graphdef, params, op, y, *, x8: bool = False):
    from jaxrestore.models.unrolled import solve

    x, _ = solve(config, graphdef, params, _batched(op), y[None], x8=x8)
    return x[0]


def load_unrolled(model):
    """``(config, graphdef, params)`` from a path to a trained model (:func:`unrolled.load`) or
    such a tuple (a 4-tuple with metadata is accepted)."""
    if isinstance(model, (str, os.PathLike)):
        from jaxrestore.models.unrolled import load

        return load(Path(model))[:3]
    return tuple(model)[:3]


def restore_unrolled(task: str, ys, model, *, x8: bool = False) -> list[np.ndarray]:
    """A trained SUPPA / explicit / DEQ / JFB model (``model``: path or ``(config, graphdef,
    params)``) on each image, as a batch of one with a batched operator
    (:func:`jaxrestore.models.unrolled.solve`: explicit runs its iterations, the others iterate to
    the model's tolerance). ``x8``: the denoiser's self-ensemble in every iteration."""
    config, graphdef, params = load_unrolled(model)
    return [np.asarray(_unrolled_one(config, graphdef, params, observation_operator(task, y), jnp.asarray(y, jnp.float32),
                                     x8=x8))
            for y in ys]


@partial(jax.jit, static_argnums=(0, 1, 2), static_argnames=("x8",))
def _trajectory_one(config, graphdef, num_iters, params, op, y, gt, *, x8: bool = False):
    from jaxrestore.models.unrolled import trajectory

    return trajectory(config, graphdef, params, _batched(op), y[None], num_iters, x_gt=gt[None], x8=x8)


def unrolled_trajectory(task: str, ys, gts, model, num_iters: int, *, x8: bool = False) -> np.ndarray:
    """PSNR per iteration ``(len(ys), num_iters)`` of a trained model run for ``num_iters``
    iterations without a tolerance (:func:`jaxrestore.models.unrolled.trajectory`); ``x8``: with
    the denoiser's self-ensemble."""
    config, graphdef, params = load_unrolled(model)
    return np.stack([np.asarray(_trajectory_one(config, graphdef, int(num_iters), params, observation_operator(task, y),
                                                jnp.asarray(y, jnp.float32), jnp.asarray(g, jnp.float32), x8=x8))
                     for y, g in zip(ys, gts)])


__all__ = ["TASKS", "TV_PARAMS", "PNP_PARAMS", "BLUR_STD", "BLUR_SIZE", "DEBLUR_NOISE", "scale_factor", "task_kernel",
           "task_operator", "noise_std", "modcrop", "load_task_images", "degrade", "observation_operator", "score",
           "restore_tv", "restore_bicubic", "restore_pnp", "load_unrolled", "restore_unrolled", "unrolled_trajectory"]
