"""Feature extractors for perceptual losses, behind the ``(apply_fn, params)`` boundary:
``apply_fn(params, x)`` maps ``(N, H, W, 3)`` images in ``[0, 1]`` to ``(N, h, w, c)`` features.

The Golf Optimizer's paper uses the features after the 5th max-pool of an ImageNet VGG-11 with
batch norm. No VGG weights can be downloaded here, so the default is :func:`random_features`, a
VGG-style network whose weights are drawn from a fixed seed and never trained: it needs no weights
file, and randomly initialised deep networks are known to give usable perceptual losses (Liu et al.,
"Generic Perceptual Loss for Modeling Structured Output Dependencies", CVPR 2021). Any trained
extractor in the same form (e.g. a VGG loaded from the user's own file) plugs in instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_features(seed: int = 0, widths=(16, 32, 64)):
    """``(apply_fn, params)``: ``len(widths)`` stages of conv3x3 + ReLU + 2x2 max-pool (He-normal
    weights from ``seed``, no bias; inputs standardised by ImageNet's RGB mean and std), so the
    features are at ``1 / 2^len(widths)`` of the image's resolution."""
    if not widths or any(int(w) != w or w < 1 for w in widths):
        raise ValueError(f"widths must be positive integers, got {widths}")
    keys = jax.random.split(jax.random.key(seed), len(widths))
    params, cin = [], 3
    for k, w in zip(keys, widths):
        params.append(jax.random.normal(k, (3, 3, cin, int(w)), jnp.float32) * jnp.sqrt(2.0 / (9 * cin)))
        cin = int(w)
    mean = jnp.array([0.485, 0.456, 0.406], jnp.float32)
    std = jnp.array([0.229, 0.224, 0.225], jnp.float32)

    def apply_fn(params, x):
        v = (x - mean) / std
        for w in params:
            v = jax.lax.conv_general_dilated(v, w.astype(v.dtype), (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            v = jax.lax.reduce_window(jax.nn.relu(v), -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        return v

    return apply_fn, params


def perceptual_distance(features, a, b):
    """``mean((phi(a) - phi(b))^2)`` over the feature map (the paper's ``1 / (W H D) ||.||^2``),
    ``features = (apply_fn, params)``."""
    apply_fn, params = features
    return jnp.mean((apply_fn(params, a) - apply_fn(params, b)) ** 2)


__all__ = ["random_features", "perceptual_distance"]
