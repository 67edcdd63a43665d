"""Input checks shared by the public entry points.

Checks on values (finiteness, ranges) run only when the array is concrete, i.e. outside
``jit``/``vmap``; shape checks use static shapes and therefore also run under tracing.
"""

from __future__ import annotations

import jax
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds actual values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def check_image(x, name: str = "image", *, batched: bool = False) -> None:
    """Raise ``ValueError`` unless ``x`` is an ``(H, W, C)`` (or ``(N, H, W, C)``) finite array."""
    rank = 4 if batched else 3
    layout = "(N, H, W, C)" if batched else "(H, W, C)"
    if np.ndim(x) != rank:
        raise ValueError(f"{name} must have shape {layout}, got shape {np.shape(x)}")
    if is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{name} contains NaN or infinite values")


def check_kernel(kernel, image_shape=None, name: str = "kernel", allow_negative: bool = False) -> np.ndarray | jax.Array:
    """Validate a 2-D kernel: finite, not larger than the image, and non-negative and not all
    zeros (a blur), or with ``allow_negative`` (resampling kernels such as bicubic with negative
    lobes) of non-zero sum."""
    if np.ndim(kernel) != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {np.shape(kernel)}")
    kh, kw = np.shape(kernel)
    if kh == 0 or kw == 0:
        raise ValueError(f"{name} is empty (shape {np.shape(kernel)})")
    if image_shape is not None:
        h, w = image_shape[:2]
        if kh > h or kw > w:
            raise ValueError(
                f"{name} of size {kh}x{kw} is larger than the image ({h}x{w}); "
                "a circular blur would wrap the kernel onto itself"
            )
    if is_concrete(kernel):
        k = np.asarray(kernel)
        if not np.all(np.isfinite(k)):
            raise ValueError(f"{name} contains NaN or infinite entries")
        if allow_negative:
            if k.sum() == 0:
                raise ValueError(f"{name} sums to zero")
        elif np.any(k < 0):
            raise ValueError(f"{name} has negative entries (min {k.min():.3g}); blur kernels must be non-negative")
        elif not np.any(k > 0):
            raise ValueError(f"{name} is all zeros")
    return kernel


def check_positive(value, name: str) -> None:
    if is_concrete(value):
        v = np.asarray(value)
        if not np.all(np.isfinite(v)) or np.any(v <= 0):
            raise ValueError(f"{name} must be finite and > 0, got {value}")
