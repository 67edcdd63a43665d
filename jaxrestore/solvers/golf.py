"""The Golf Optimizer's recurrence (blind deblurring; :mod:`jaxrestore.models.golf`)::

    x_0 = G1(y) = y + R1(y),     x_{k+1} = x_k + R2(x_k)

``R1``/``R2`` come as one pure ``residual(params, which, x)`` (``which`` is ``"G1"`` or ``"G2"``)
with explicit ``params = {"G1": ..., "G2": ...}`` (:func:`jaxrestore.models.golf.as_networks`).
No kernel is needed. :func:`golf` runs a fixed number of iterations (``lax.scan``; the paper's
test setting is 3) or, with ``tol``, stops early once the relative update
``||R2(x_k)|| / ||x_k||`` falls below it (``lax.while_loop``); either way it reports the
iterations run and the last relative update. :func:`trajectory` returns every state (Python
unrolled, for the training losses: XLA:CPU runs convolutions inside loop bodies much slower).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class GolfInfo(NamedTuple):
    iterations: jax.Array  # int32: G2 iterations applied (per image when batched through vmap)
    update: jax.Array      # relative size of the last update, ||R2(x)|| / ||x|| (per image of a batch)
    converged: jax.Array   # bool: update <= tol (True when no tol was given)


def _relative(r, x):
    axes = tuple(range(x.ndim - 3, x.ndim))
    return jnp.sqrt(jnp.sum(r**2, axis=axes)) / jnp.maximum(jnp.sqrt(jnp.sum(x**2, axis=axes)), 1e-12)


def golf(residual: Callable[[Any, str, jax.Array], jax.Array], params, y, *, iterations: int = 3,
         tol: float | None = None) -> tuple[jax.Array, GolfInfo]:
    """Restore ``y`` (``(H, W, C)`` or ``(N, H, W, C)``) with ``iterations`` steps of ``G2`` after
    ``G1`` (``iterations = 0``: ``G1`` alone). With ``tol``, at most ``iterations`` steps, stopping
    once every image's relative update is ``<= tol``. Jittable and differentiable in ``params``
    (fixed count). Returns ``(x, GolfInfo)``."""
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a whole number >= 0, got {iterations!r}")
    if tol is not None and not (tol >= 0):
        raise ValueError(f"tol must be >= 0, got {tol}")
    x0 = y + residual(params, "G1", y)
    batch = jnp.shape(y)[:-3]
    zero = jnp.zeros(batch, y.dtype)
    if iterations == 0:
        return x0, GolfInfo(jnp.int32(0), zero, jnp.ones(batch, bool))

    if tol is None:
        def body(x, _):
            r = residual(params, "G2", x)
            return x + r, _relative(r, x)

        x, updates = jax.lax.scan(body, x0, None, length=iterations)
        return x, GolfInfo(jnp.int32(iterations), updates[-1], jnp.ones(batch, bool))

    def cond(state):
        k, _, upd = state
        return (k < iterations) & jnp.any(upd > tol)

    def step(state):
        k, x, _ = state
        r = residual(params, "G2", x)
        return k + 1, x + r, _relative(r, x)

    k, x, upd = jax.lax.while_loop(cond, step, (jnp.int32(0), x0, jnp.full(batch, jnp.inf, y.dtype)))
    return x, GolfInfo(k, upd, upd <= tol)


def trajectory(residual, params, x0, iterations: int, *, first_step: bool = True) -> list[jax.Array]:
    """``[x_0, x_1, ..., x_K]``: ``x_0 = G1(x0)`` when ``first_step`` (else ``x0`` itself, how
    ``G2`` is trained on the blurred image), then ``K = iterations`` steps of ``G2``. Python
    unrolled (the training losses differentiate through it)."""
    xs = [x0 + residual(params, "G1", x0) if first_step else x0]
    for _ in range(iterations):
        xs.append(xs[-1] + residual(params, "G2", xs[-1]))
    return xs


def tiled_residual(residual, *, tile: int, margin: int):
    """``residual`` applied in overlapping ``tile x tile`` windows (:func:`jaxrestore.tiling.tiled`;
    ``margin`` at least the networks' receptive radius): the same values, the memory of one window."""
    from jaxrestore.tiling import tiled

    def apply(params, which, x):
        return tiled(lambda v: residual(params, which, v), x, tile=tile, margin=margin)

    return apply


__all__ = ["golf", "trajectory", "tiled_residual", "GolfInfo"]
