"""Applying a fully convolutional network to a large image in overlapping tiles.

A network whose output at a pixel depends only on the input within ``radius`` pixels (its
receptive field's half-width) gives, on a window of the image, the same values as on the whole
image at every pixel at least ``radius`` from the window's edges that are not edges of the image.
:func:`tiled` cuts the image into ``tile x tile`` cores, runs the network on windows that extend
each core by ``margin >= radius`` (shifted inward at the image's borders, so that every window has
the same shape and compiles once, and its border coincides with the image's where they meet), and
keeps each core: the result equals the untiled one to float round-off, with the memory of one
window instead of the whole image.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def _starts(n: int, tile: int, margin: int) -> list[tuple[int, int, int]]:
    """``(window start, core start, core stop)`` along one axis of length ``n``."""
    size = min(n, tile + 2 * margin)
    out = []
    for a in range(0, n, tile):
        b = min(a + tile, n)
        out.append((min(max(a - margin, 0), n - size), a, b))
    return out


def check_tiling(shape, tile: int, radius: int) -> None:
    """``ValueError`` unless ``tile`` fits the image ``(..., H, W, C)`` and covers the receptive
    field (``tile >= 2 radius + 1``)."""
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be a positive whole number of pixels, got {tile!r}")
    h, w = shape[-3], shape[-2]
    if tile > max(h, w):
        raise ValueError(f"tile {tile} is larger than the image ({h}x{w}); restore it without tiling")
    if tile < 2 * radius + 1:
        raise ValueError(f"tile {tile} is smaller than the network's receptive field ({2 * radius + 1} px); "
                         f"use a tile of at least {2 * radius + 1}")


def tiled(fn: Callable[[jax.Array], jax.Array], x, *, tile: int, margin: int):
    """``fn(x)`` computed tile by tile (see the module docstring): ``x`` ``(H, W, C)`` or
    ``(N, H, W, C)``, ``fn`` shape-preserving in ``H, W`` and of receptive radius ``<= margin``.
    The windows run one after another (``lax.map``). Jittable."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    h, w = x.shape[-3], x.shape[-2]
    rows, cols = _starts(h, tile, margin), _starts(w, tile, margin)
    sh, sw = min(h, tile + 2 * margin), min(w, tile + 2 * margin)
    windows = jnp.stack([jax.lax.slice_in_dim(jax.lax.slice_in_dim(x, r, r + sh, axis=x.ndim - 3), c, c + sw, axis=x.ndim - 2)
                         for r, _, _ in rows for c, _, _ in cols])
    results = jax.lax.map(fn, windows)
    out = jnp.zeros(x.shape[:-1] + (results.shape[-1],), results.dtype)
    i = 0
    for r, a, b in rows:
        for c, p, q in cols:
            core = results[i][..., a - r:b - r, p - c:q - c, :]
            out = out.at[..., a:b, p:q, :].set(core)
            i += 1
    return out


__all__ = ["tiled", "check_tiling"]
