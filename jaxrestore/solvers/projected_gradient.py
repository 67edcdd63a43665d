"""Projected (accelerated) gradient for ``min_{x in [0, beta]^n} 1/2 ||A x - y||^2 + lam R(x)``
with the smoothed TV ``R`` of eq. (13): the "VAR" baseline of the iRestNet paper."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrestore._validation import is_concrete
from jaxrestore.regularizers import TVGradient, tv_lipschitz, tv_smooth, tv_smooth_grad
from jaxrestore.solvers.base import Solver


class PGState(NamedTuple):
    x: jax.Array  # current iterate, in [0, beta]
    z: jax.Array  # extrapolated point (equals x without acceleration)
    t: jax.Array  # FISTA momentum parameter
    aty: jax.Array  # A^T y, computed once


def tv_objective(op, y, x, lam, delta=0.01):
    """``1/2 ||A x - y||^2 + lam R(x)``."""
    r = op(x) - y
    return 0.5 * jnp.sum(r * r) + lam * tv_smooth(x, delta)


def projected_gradient(op, lam, delta=0.01, *, beta=1.0, step_size=None, accelerate: bool = True,
                       tv_gradient: TVGradient = "exact") -> Solver:
    """``x_{k+1} = P_[0, beta](z_k - tau (A^T (A z_k - y) + lam grad R(z_k)))`` with FISTA
    extrapolation ``z`` (Beck & Teboulle 2009) unless ``accelerate=False``.

    ``step_size`` defaults to ``1 / L`` with ``L = ||A||^2 + 8 lam / delta^2``, the Lipschitz
    constant of the smooth part, which guarantees monotone convergence of the plain iteration.
    ``x_0`` is ``clip(y)`` (``clip(A^T y)`` when ``y`` has another size, e.g. super-resolution).
    ``step(state, params)`` ignores ``params``.
    """
    for name, value, ok in (("lam", lam, lambda v: v >= 0), ("delta", delta, lambda v: v > 0)):
        # numpy, not jnp: inside jit even a Python float becomes a tracer once jnp touches it
        if is_concrete(value) and not (np.all(np.isfinite(np.asarray(value))) and np.all(ok(np.asarray(value)))):
            raise ValueError(f"projected_gradient: {name} must be finite and {'>= 0' if name == 'lam' else '> 0'}, got {value}")
    tau = step_size if step_size is not None else 1.0 / (op.lipschitz() + lam * tv_lipschitz(delta))

    def grad(x, aty):
        # A^T (A x - y) = A^T A x - A^T y: one FFT round trip per iteration instead of two
        return op.gram(x) - aty + lam * tv_smooth_grad(x, delta, tv_gradient)

    def init(y):
        x = jnp.clip(op.adjoint(y) if y.shape[:2] != op.shape else y, 0.0, beta)
        return PGState(x, x, jnp.ones((), x.dtype), op.adjoint(y))

    def step(state, params=None):
        del params
        x = jnp.clip(state.z - tau * grad(state.z, state.aty), 0.0, beta)
        if not accelerate:
            return PGState(x, x, state.t, state.aty)
        t = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * state.t**2))
        z = x + ((state.t - 1.0) / t) * (x - state.x)
        return PGState(x, z, t, state.aty)

    return Solver(init, step)


__all__ = ["PGState", "projected_gradient", "tv_objective"]
