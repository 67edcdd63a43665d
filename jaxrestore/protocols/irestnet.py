"""The iRestNet test protocol (Corbineau et al. 2019; ../shared/PROTOCOLS.md section 1).

Images are centre-cropped to 256x256 (grayscale repeated to RGB), blurred in float64 by
circular cross-correlation with the setting's 25x25 kernel, and given Gaussian noise from one
``numpy.random.default_rng(seed)`` drawn image after image in Python-sorted file-name order
(``std * rng.standard_normal((256, 256, 3))``). For GaussB the noise std of each image is drawn
first from the same generator, ``rng.uniform(0.01, 0.05)``. Blurred images are not clipped.
This reproduces, image for image, the authors' blurred SSIMs of
``../shared/data/irestnet_weights/authors_gaussA_val20.csv``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrestore.data import ImageFolder
from jaxrestore.noise import estimate_sigma
from jaxrestore.operators import Blur
from jaxrestore.presets import Preset
from jaxrestore.solvers import projected_gradient, run

CROP = 256


class DegradedSet(NamedTuple):
    names: list[str]
    gt: np.ndarray      # (N, 256, 256, 3) float64
    y: np.ndarray       # (N, 256, 256, 3) float64, blurred + noise, unclipped
    sigma: np.ndarray   # (N,) noise std used per image


def load_test_images(folder, limit: int | None = None, crop: int = CROP):
    """``(names, gt)``: the folder's images in sorted order, centre-cropped, float64."""
    ds = ImageFolder(folder, crop=crop, limit=limit)
    return ds.names, ds.stack().astype(np.float64)


def degrade_set(names, gt, preset: Preset, seed: int = 0, kernel_dir=None) -> DegradedSet:
    """Blur (float64, circular) and add the protocol's seeded noise to every image."""
    kernel = preset.kernel(kernel_dir)
    rng = np.random.default_rng(seed)
    with jax.enable_x64(True):
        op = Blur.from_kernel(jnp.asarray(kernel, jnp.float64), gt.shape[1:3], preset.convention)
        blurred = np.asarray(jax.jit(jax.vmap(op))(jnp.asarray(gt, jnp.float64)))
    ys, sigmas = [], []
    for b in blurred:
        s = preset.noise_level(rng)
        ys.append(b + s * rng.standard_normal(b.shape))
        sigmas.append(s)
    return DegradedSet(list(names), gt, np.stack(ys), np.asarray(sigmas))


def estimate_sigmas(y) -> np.ndarray:
    """``estimate_sigma`` of every image of ``(N, H, W, C)``."""
    return np.asarray(_ESTIMATE(jnp.asarray(y, jnp.float32)), np.float64)


_ESTIMATE = jax.jit(jax.vmap(estimate_sigma))


def restore_var(y, kernel, convention: str, lam, delta, iterations: int, batch_size: int = 20):
    """VAR: projected (FISTA) gradient on ``1/2||Hx - y||^2 + lam R(x)`` over ``[0, 1]^n`` for a
    batch ``y`` ``(N, H, W, 3)``, float32, jitted and vmapped in chunks. ``lam`` may be a scalar
    or one value per image."""
    y = np.asarray(y, np.float32)
    lam = np.broadcast_to(np.asarray(lam, np.float32), (len(y),))
    op = Blur.from_kernel(jnp.asarray(kernel, jnp.float32), y.shape[1:3], convention)
    fn = _var_batch(iterations)
    out = [np.asarray(fn(op, jnp.asarray(y[i : i + batch_size]), jnp.asarray(lam[i : i + batch_size]), delta))
           for i in range(0, len(y), batch_size)]
    return np.concatenate(out)


def restore_irestnet(model, y, kernel, convention: str, batch_size: int = 5, use_lpp: bool | None = None):
    """Run an :class:`~jaxrestore.models.irestnet.IRestNet` on ``y`` ``(N, H, W, 3)`` in chunks,
    one operator per image (built by vmap from the kernel), through the pure ``(apply_fn,
    state)`` boundary under one ``jax.jit``."""
    from jaxrestore.models.irestnet import as_function

    y = np.asarray(y, np.float32)
    apply_fn, state = as_function(model)
    kernel = jnp.asarray(kernel, jnp.float32)

    @jax.jit
    def run_chunk(state, y):
        ops = jax.vmap(lambda _: Blur.from_kernel(kernel, y.shape[1:3], convention))(jnp.arange(y.shape[0]))
        return apply_fn(state, y, ops, use_lpp=use_lpp)

    return np.concatenate([np.asarray(run_chunk(state, jnp.asarray(y[i : i + batch_size])))
                           for i in range(0, len(y), batch_size)])


def _var_batch(iterations: int):
    key = iterations
    if key not in _VAR_CACHE:
        def one(op, y, lam, delta):
            return run(projected_gradient(op, lam, delta), y, num_iters=iterations).x

        _VAR_CACHE[key] = jax.jit(jax.vmap(one, in_axes=(None, 0, 0, None)))
    return _VAR_CACHE[key]


_VAR_CACHE: dict = {}
