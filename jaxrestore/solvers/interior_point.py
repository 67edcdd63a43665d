"""The proximal interior-point iteration (5) that iRestNet unfolds (Corbineau et al. 2019)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrestore.prox import barrier_prox
from jaxrestore.regularizers import TVGradient, tv_smooth_grad
from jaxrestore.solvers.base import Solver


class IPState(NamedTuple):
    x: jax.Array  # iterate, strictly inside (0, beta) after the first step
    aty: jax.Array  # A^T y, computed once


class IPParams(NamedTuple):
    """Per-iteration parameters: barrier weight ``mu``, step ``gamma``, regularisation ``lam``.
    Scalars, or arrays with a leading schedule axis when run with :func:`run`."""

    mu: jax.Array
    gamma: jax.Array
    lam: jax.Array


def proximal_interior_point(op, delta=0.01, *, beta=1.0, tv_gradient: TVGradient = "exact") -> Solver:
    """``x_{k+1} = prox_{gamma_k mu_k B}(x_k - gamma_k (A^T (A x_k - y) + lam_k grad R(x_k)))`` with
    the log-barrier ``B`` of ``[0, beta]`` and the smoothed TV ``R`` (13); ``x_0 = y`` (``A^T y``
    when ``y`` has another size than ``x``, e.g. super-resolution).

    ``step(state, IPParams(mu, gamma, lam))``; run a schedule with
    ``run(solver, y, IPParams(mus, gammas, lams))``.
    """

    def init(y):
        aty = op.adjoint(y)
        return IPState(y if y.shape[:2] == op.shape else aty, aty)

    def step(state, params: IPParams):
        x, aty = state
        g = op.gram(x) - aty + params.lam * tv_smooth_grad(x, delta, tv_gradient)
        u = x - params.gamma * g
        return IPState(barrier_prox(u, params.gamma * params.mu, beta), aty)

    return Solver(init, step)


def constant_schedule(num_iters: int, mu, gamma, lam, dtype=jnp.float32) -> IPParams:
    """``IPParams`` repeating the same values ``num_iters`` times."""
    full = lambda v: jnp.full((num_iters,), v, dtype)  # noqa: E731
    return IPParams(full(mu), full(gamma), full(lam))


__all__ = ["IPState", "IPParams", "proximal_interior_point", "constant_schedule"]
