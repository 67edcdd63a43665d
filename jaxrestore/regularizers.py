"""Smoothed total variation, eq. (13) of iRestNet (Corbineau et al. 2019).

``R(x) = sum_i sqrt(((D_v x)_i^2 + (D_h x)_i^2) / delta^2 + 1)`` per channel, with forward
differences and a replicate (Neumann) boundary: the last row of ``D_v x`` and the last column of
``D_h x`` are zero.
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp

TVGradient = Literal["exact", "authors"]


def diff_v(x):
    """``(D_v x)[i] = x[i + 1] - x[i]``, zero on the last row. ``x`` is ``(H, W, ...)``."""
    return jnp.concatenate([x[1:] - x[:-1], jnp.zeros_like(x[:1])], axis=0)


def diff_h(x):
    """``(D_h x)[:, j] = x[:, j + 1] - x[:, j]``, zero on the last column."""
    return jnp.concatenate([x[:, 1:] - x[:, :-1], jnp.zeros_like(x[:, :1])], axis=1)


def diff_v_adjoint(p):
    """``D_v^T p``: ``p[i - 1] - p[i]`` with ``p[-1] = 0`` and the last row of ``p`` ignored."""
    p = jnp.concatenate([p[:-1], jnp.zeros_like(p[:1])], axis=0)
    return jnp.concatenate([jnp.zeros_like(p[:1]), p[:-1]], axis=0) - p


def diff_h_adjoint(p):
    """``D_h^T p`` (see :func:`diff_v_adjoint`)."""
    p = jnp.concatenate([p[:, :-1], jnp.zeros_like(p[:, :1])], axis=1)
    return jnp.concatenate([jnp.zeros_like(p[:, :1]), p[:, :-1]], axis=1) - p


def _diff_v_transpose_replicate(p):
    """``p[i - 1] - p[i]`` with ``p[-1] := p[0]`` (the iRestNet code's replicate-padded filter)."""
    return jnp.concatenate([p[:1], p[:-1]], axis=0) - p


def _diff_h_transpose_replicate(p):
    return jnp.concatenate([p[:, :1], p[:, :-1]], axis=1) - p


def _weight(x, delta):
    gv, gh = diff_v(x), diff_h(x)
    return gv, gh, 1.0 / jnp.sqrt((gv * gv + gh * gh) / delta**2 + 1.0)


def tv_smooth(x, delta=0.01):
    """Value of the smoothed TV (13) of an ``(H, W, C)`` image (sum over pixels and channels)."""
    gv, gh = diff_v(x), diff_h(x)
    return jnp.sum(jnp.sqrt((gv * gv + gh * gh) / delta**2 + 1.0))


def tv_smooth_grad(x, delta=0.01, variant: TVGradient = "exact"):
    """Gradient of :func:`tv_smooth`.

    ``variant="exact"``: ``(D_v^T (w D_v x) + D_h^T (w D_h x)) / delta^2`` with
    ``w = 1 / sqrt(|D x|^2 / delta^2 + 1)``, the true gradient of (13).

    ``variant="authors"``: ``w (D_v' D_v x + D_h' D_h x) / delta^2`` as in the iRestNet code: the
    weight is applied after the transposed differences, and ``D'`` is their "transpose" filter
    ``p[i - 1] - p[i]`` applied with *replicate* padding, which gives 0 instead of ``-p[0]`` on the
    first row (column), so it is not the adjoint there either. It is not the gradient of (13), but
    the published iRestNet weights were trained with it.
    """
    gv, gh, w = _weight(x, delta)
    if variant == "exact":
        return (diff_v_adjoint(w * gv) + diff_h_adjoint(w * gh)) / delta**2
    if variant == "authors":
        return w * (_diff_v_transpose_replicate(gv) + _diff_h_transpose_replicate(gh)) / delta**2
    raise ValueError(f"variant must be 'exact' or 'authors', got {variant!r}")


def tv_lipschitz(delta=0.01):
    """Upper bound ``||D||^2 / delta^2 = 8 / delta^2`` on the Lipschitz constant of the gradient."""
    return 8.0 / delta**2


def gradient_spread(x):
    """``eta(x)``: standard deviation of all entries of ``(D_v x, D_h x)`` (iRestNet eq. 14)."""
    return jnp.std(jnp.concatenate([diff_v(x).ravel(), diff_h(x).ravel()]))


__all__ = ["diff_v", "diff_h", "diff_v_adjoint", "diff_h_adjoint", "tv_smooth", "tv_smooth_grad", "tv_lipschitz", "gradient_spread"]
