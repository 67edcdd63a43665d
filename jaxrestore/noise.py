"""Additive white Gaussian noise and the iRestNet noise-level estimator."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrestore._validation import check_image


def add_gaussian_noise(key, x, sigma):
    """``x + sigma * n`` with ``n ~ N(0, I)``; ``sigma`` a scalar (or broadcastable array)."""
    return x + jnp.asarray(sigma, x.dtype) * jax.random.normal(key, x.shape, x.dtype)


def sample_sigma(key, sigma_range, shape=()):
    """Noise levels drawn uniformly in ``[lo, hi]`` (e.g. one per image of a batch)."""
    lo, hi = sigma_range
    if not 0 <= lo <= hi:
        raise ValueError(f"sigma_range must satisfy 0 <= lo <= hi, got {sigma_range}")
    return jax.random.uniform(key, shape, minval=lo, maxval=hi)


def add_noise(key, x, sigma=None, sigma_range=None):
    """Noise for one image ``(H, W, C)`` or a batch ``(N, H, W, C)``: a fixed ``sigma``, or with
    ``sigma_range=(lo, hi)`` a level drawn per image. Returns ``(noisy, sigma_per_image)``."""
    if (sigma is None) == (sigma_range is None):
        raise ValueError("give exactly one of sigma and sigma_range")
    batch_shape = x.shape[:-3]
    k_sigma, k_noise = jax.random.split(key)
    if sigma_range is not None:
        sigma = sample_sigma(k_sigma, sigma_range, batch_shape)
    sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype), batch_shape)
    return add_gaussian_noise(k_noise, x, sigma[..., None, None, None]), sigma


def estimate_sigma(y):
    """Noise standard deviation of ``y`` ``(H, W, C)`` exactly as the iRestNet code computes it
    (Donoho's MAD estimator): diagonal Haar filter ``[[.5, -.5], [-.5, .5]]`` applied with
    stride 2 after circular padding by one pixel on every side (so ``H // 2 + 1`` coefficients
    per column, the first row of pairs straddling the wrap-around), on all channels, then
    ``median(|d|) / 0.6745`` taking the upper median of an even count. Batches:
    ``jax.vmap(estimate_sigma)``."""
    check_image(y, "y")
    h, w = y.shape[:2]
    if h < 2 or w < 2:
        raise ValueError(f"image too small to estimate noise: {y.shape}")
    p = jnp.pad(y, ((1, 1), (1, 1), (0, 0)), mode="wrap")
    nh, nw = h // 2 + 1, w // 2 + 1
    top, bottom = p[0 : 2 * nh : 2], p[1 : 2 * nh : 2]
    d = 0.5 * (top[:, 0 : 2 * nw : 2] - top[:, 1 : 2 * nw : 2] - bottom[:, 0 : 2 * nw : 2] + bottom[:, 1 : 2 * nw : 2])
    a = jnp.sort(jnp.abs(d).ravel())
    return a[a.size // 2] / 0.6745


__all__ = ["add_gaussian_noise", "sample_sigma", "add_noise", "estimate_sigma"]
