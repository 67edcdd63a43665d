"""Solvers as ``(init, step)`` pairs, and the loops that run them.

A solver is built from the problem's fixed parts (operator, options) and exposes

* ``init(y) -> state``: the starting state for observation ``y``;
* ``step(state, params) -> state``: one iteration; ``params`` holds what may change per
  iteration (step sizes, barrier weights, learned weights) or ``None``.

Every state is a pytree with the current iterate in ``state.x``. Because the problem enters
through ``init``/closures built inside the caller's function, solvers vmap over operators::

    restore = lambda op, y: run(projected_gradient(op, lam=2e-4), y, num_iters=300).x
    xs = jax.vmap(restore)(ops, ys)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrestore._validation import check_image


class Solver(NamedTuple):
    init: Callable[[jax.Array], Any]
    step: Callable[[Any, Any], Any]


class SolveInfo(NamedTuple):
    """What a tolerance-driven run did: iterations used, last relative change, whether it met
    the tolerance before the cap."""

    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


def run(solver: Solver, y, params=None, *, num_iters: int | None = None, trace: Callable | None = None, unroll: int = 1):
    """Run ``solver`` from ``solver.init(y)`` with ``lax.scan``.

    With ``num_iters``, the same ``params`` is passed to every step. Without it, ``params`` is a
    schedule: a pytree whose leaves have a leading axis of length ``K`` (one slice per step).

    ``trace(state) -> pytree`` records a quantity after every step (e.g. PSNR per iteration);
    the function then returns ``(state, history)``.
    """
    check_image(y, "y")
    if num_iters is None:
        leaves = jax.tree_util.tree_leaves(params)
        if not leaves:
            raise ValueError("run: give num_iters, or params with a leading per-iteration axis")
        xs, length = params, None
    else:
        if isinstance(num_iters, bool) or not isinstance(num_iters, (int, np.integer)) or num_iters < 0:
            raise ValueError(f"num_iters must be a whole number >= 0, got {num_iters!r}")
        xs, length = None, num_iters

    def body(state, p):
        state = solver.step(state, params if num_iters is not None else p)
        return state, (trace(state) if trace is not None else None)

    state, history = jax.lax.scan(body, solver.init(y), xs, length=length, unroll=unroll)
    return (state, history) if trace is not None else state


def relative_change(new, old):
    """``||new - old|| / max(||old||, tiny)`` over a whole iterate."""
    num = jnp.linalg.norm((new - old).ravel())
    return num / jnp.maximum(jnp.linalg.norm(old.ravel()), jnp.finfo(old.dtype).tiny)


def run_to_tolerance(solver: Solver, y, params=None, *, tol: float = 1e-4, max_iters: int = 1000):
    """Iterate with ``lax.while_loop`` until the relative change of ``state.x`` drops below
    ``tol`` or ``max_iters`` steps are done. Returns ``(state, SolveInfo)``; non-convergence is
    reported in ``info.converged``, never hidden."""
    check_image(y, "y")
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    state0 = solver.init(y)

    def cond(carry):
        _, k, res = carry
        return (k < max_iters) & (res >= tol)

    def body(carry):
        state, k, _ = carry
        new = solver.step(state, params)
        return new, k + 1, relative_change(new.x, state.x)

    inf = jnp.asarray(jnp.inf, state0.x.dtype)
    state, k, res = jax.lax.while_loop(cond, body, (state0, jnp.asarray(0), inf))
    return state, SolveInfo(k, res, res < tol)


__all__ = ["Solver", "SolveInfo", "run", "run_to_tolerance", "relative_change"]
