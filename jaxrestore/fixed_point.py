"""Fixed-point iteration ``x_{k+1} = f(params, x_k)`` with a pluggable differentiation strategy.

``fixed_point(f, params, x0, adjoint=..., forward=...)`` runs the iteration to a tolerance or a
step cap. How gradients reach ``params`` is chosen by ``adjoint`` (as optimistix's ``adjoint=``):

* ``Explicit()``: reverse (and forward) mode through every step of a ``lax.scan`` unroll;
* ``Implicit()``: the implicit function theorem at the fixed point (deep equilibrium models,
  Bai, Kolter & Koltun 2019), solving ``(I - J_x) t = J_p dp`` matrix-free;
* ``JacobianFree()``: Jacobian-free backpropagation (Fung et al. 2022), the gradient of one step
  at the fixed point.

``forward`` chooses the forward iteration: ``Picard()`` or ``Anderson()`` acceleration.

``f(params, x) -> x`` takes the parameters as an explicit argument; ``x`` is any pytree of float
arrays (e.g. a NamedTuple of two images, batched or not). Everything is pure and works under
``jit``, ``vmap``, ``grad`` and ``jvp``.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxrestore._validation import is_concrete

_BACKWARD_SOLVERS = ("anderson", "neumann", "gmres")
_ON_FAILURE = ("warn", "nan", "ignore")
_GMRES_RESTART = 20


# --------------------------------------------------------------------------------------------
# Strategies (static, hashable configuration)


@dataclasses.dataclass(frozen=True)
class Picard:
    """Plain iteration ``x_{k+1} = f(params, x_k)``."""


@dataclasses.dataclass(frozen=True)
class Anderson:
    """Anderson acceleration (type II; Anderson 1965, Walker & Ni 2011).

    With the last ``m`` points ``z_i`` and residuals ``r_i = f(z_i) - z_i``, the next point is
    ``z = sum_i a_i (beta f(z_i) + (1 - beta) z_i)`` where ``a`` minimises
    ``||sum_i a_i r_i||^2 + reg ||a||^2`` (residuals scaled to unit size) subject to
    ``sum_i a_i = 1``. ``reg`` is a Tikhonov weight relative to the largest ``||r_i||^2``; it is
    floored at ten machine epsilons of the iterate's dtype, because a weight below rounding does
    not regularise the nearly collinear residuals met close to convergence. Works on the raveled
    pytree, with the history in fixed-size ``(m, n)`` arrays.
    """

    m: int = 5
    beta: float = 1.0
    reg: float = 1e-8

    def __post_init__(self):
        if not isinstance(self.m, int) or self.m < 1:
            raise ValueError(f"Anderson: m (history length) must be an int >= 1, got {self.m!r}")
        if not 0 < self.beta <= 1:
            raise ValueError(f"Anderson: beta (mixing) must be in (0, 1], got {self.beta!r}")
        if not self.reg >= 0:
            raise ValueError(f"Anderson: reg must be >= 0, got {self.reg!r}")


@dataclasses.dataclass(frozen=True)
class Explicit:
    """Differentiate by unrolling: exactly ``max_iters`` steps of ``lax.scan``, the state frozen
    after convergence (so the value equals the tolerance-driven loop's). Reverse mode stores
    every step; ``checkpoint=True`` recomputes each step in the backward pass instead
    (``jax.checkpoint``), trading compute for memory. Gradients reach ``params`` and ``x0``."""

    checkpoint: bool = False


@dataclasses.dataclass(frozen=True)
class Implicit:
    """Differentiate by the implicit function theorem at ``x* = f(p, x*)``:
    ``(I - J_x) dx* = J_p dp`` (Bai et al. 2019; Blondel et al. 2022).

    The forward loop records no gradients. The tangent system is posed with
    ``jax.lax.custom_linear_solve`` with matvec ``v - J_x v`` (a JVP of ``f``), so reverse mode
    solves the transposed system ``(I - J_x^T) g = v`` (VJPs of ``f``) and forward mode works
    too; no Jacobian is ever formed. ``solver``: ``"neumann"`` (the linear fixed-point iteration
    ``g <- v + J^T g``), ``"anderson"`` (that iteration Anderson-accelerated with history ``m``)
    or ``"gmres"`` (restarted GMRES on the raveled vector; ``max_iters`` then bounds the Krylov
    vectors built, in cycles of at most 20).

    A backward solve whose relative residual ``||v - A g|| / ||v||`` is above ``tol`` after
    ``max_iters`` is not hidden: ``on_failure="warn"`` emits a ``RuntimeWarning`` with the
    residual (through ``jax.debug.callback``, so also under ``jit``), ``"nan"`` returns a NaN
    derivative so that training stops visibly, ``"ignore"`` returns the inexact solution.

    ``x0`` receives a zero gradient: the fixed point does not depend on where the iteration
    started.

    ``unroll=True`` (neumann and anderson) runs the backward iteration as ``max_iters`` inlined
    steps (frozen once the tolerance is met) instead of a ``while_loop``: XLA:CPU executes the
    convolution VJPs of a CNN inside a loop body about 10x slower than inlined (measured on
    DRUNet), so CPU training of convolutional fixed points wants it; compile time grows with
    ``max_iters``.
    """

    solver: str = "anderson"
    tol: float = 1e-6
    max_iters: int = 100
    m: int = 5
    on_failure: str = "warn"
    unroll: bool = False

    def __post_init__(self):
        if self.solver not in _BACKWARD_SOLVERS:
            raise ValueError(f"Implicit: solver must be one of {_BACKWARD_SOLVERS}, got {self.solver!r}")
        if self.on_failure not in _ON_FAILURE:
            raise ValueError(f"Implicit: on_failure must be one of {_ON_FAILURE}, got {self.on_failure!r}")
        _check_tol(self.tol, "Implicit: tol")
        _check_max_iters(self.max_iters, "Implicit: max_iters")
        if not isinstance(self.m, int) or self.m < 1:
            raise ValueError(f"Implicit: m (Anderson history) must be an int >= 1, got {self.m!r}")


@dataclasses.dataclass(frozen=True)
class JacobianFree:
    """Jacobian-free backpropagation (Fung et al. 2022, "JFB: Jacobian-free backpropagation for
    implicit networks"): iterate without gradients to ``x*``, then return
    ``f(params, stop_gradient(x*))``, whose derivative is ``J_p`` of that one step (the implicit
    derivative with ``(I - J_x)^{-1}`` replaced by ``I``). The final step counts as one of the
    ``max_iters``. Forward mode works; ``x0`` receives a zero gradient."""


class FixedPointInfo(NamedTuple):
    """What the forward iteration did.

    ``iterations``: applications of ``f``; ``residual``: ``||f(z) - z|| / ||z||`` over the whole
    pytree at the last point ``z`` where ``f`` was applied (for ``Picard``, the relative change
    of the last step); ``converged``: ``residual < tol``; ``finite``: whether every iterate was
    finite (the loop stops at the first non-finite one). No gradient flows through ``residual``.
    """

    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array
    finite: jax.Array


# --------------------------------------------------------------------------------------------
# Pytree helpers


def _tree_sq_norm(x):
    return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(x))


def relative_residual(new, old):
    """``||new - old|| / max(||old||, tiny)`` over a whole pytree (cf. ``base.relative_change``).

    Computed on ``stop_gradient``-ed values: it only steers the loop, and the derivative of a
    norm at zero change is ``0 / 0``, which would turn an unrolled gradient into NaN."""
    new, old = jax.lax.stop_gradient((new, old))
    diff = jax.tree_util.tree_map(jnp.subtract, new, old)
    den = jnp.sqrt(_tree_sq_norm(old))
    return jnp.sqrt(_tree_sq_norm(diff)) / jnp.maximum(den, jnp.finfo(den.dtype).tiny)


def _all_finite(x):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(x)]))


def _anderson_mix(X, F, count, z, fz, beta, reg):
    """Push ``(z, fz)`` into the ring buffers ``X, F`` (``(m, n)``, ``count`` entries so far) and
    return the buffers and the Anderson-mixed next point."""
    m = X.shape[0]
    slot = count % m
    X, F = X.at[slot].set(z), F.at[slot].set(fz)
    valid = jnp.arange(m) < jnp.minimum(count + 1, m)
    R = jnp.where(valid[:, None], F - X, 0.0)
    # Scale the residuals to unit size: the Gram matrix of residuals near convergence would
    # otherwise underflow in float32, and the Tikhonov weight becomes scale-free.
    R = R / jnp.maximum(jnp.max(jnp.abs(R)), jnp.finfo(R.dtype).tiny)
    G = R @ R.T
    lam = max(reg, 10 * float(jnp.finfo(G.dtype).eps)) * jnp.max(jnp.diag(G)) + jnp.finfo(G.dtype).tiny
    # min a^T (G + lam I) a s.t. sum(a) = 1 has a = w / sum(w) with (G + lam I) w = 1. Empty
    # slots have zero rows, a diagonal of lam and a zero right-hand side, hence a zero weight.
    w = jnp.linalg.solve(G + lam * jnp.eye(m, dtype=G.dtype), valid.astype(G.dtype))
    a = w / jnp.sum(w)
    mixed = beta * (a @ F) + (1.0 - beta) * (a @ X)
    # G + lam I is positive definite, so sum(w) > 0; a non-finite result can only come from a
    # non-finite history, and then the plain step reports it just as well.
    return X, F, jnp.where(jnp.all(jnp.isfinite(mixed)), mixed, fz)


# --------------------------------------------------------------------------------------------
# The forward iteration as (init, step), run by a while_loop or a masked scan


class _Loop(NamedTuple):
    x: Any  # current estimate (the next point where f is applied)
    iterations: jax.Array
    residual: jax.Array
    finite: jax.Array
    history: Any  # Anderson's (X, F) buffers, or None


def _iteration(forward, f, x0):
    """``(init, step)`` of the forward solver; ``step(params, loop) -> loop`` applies ``f`` once."""
    finite0 = _all_finite(x0)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(x0))

    def start(history):
        # A non-finite x0 gives residual NaN, so that no loop starts from it.
        res0 = jnp.where(finite0, jnp.asarray(jnp.inf, dtype), jnp.asarray(jnp.nan, dtype))
        return _Loop(x0, jnp.asarray(0, jnp.int32), res0, finite0, history)

    if isinstance(forward, Picard):
        def step(params, loop):
            fx = f(params, loop.x)
            res = relative_residual(fx, loop.x)
            # finite values whose norms overflow (a diverging iteration) give a NaN residual: not finite either
            return _Loop(fx, loop.iterations + 1, res, _all_finite(fx) & ~jnp.isnan(res), None)

        return start(None), step

    flat0, unravel = ravel_pytree(x0)
    zeros = jnp.zeros((forward.m, flat0.size), flat0.dtype)

    def step(params, loop):
        fz = f(params, loop.x)
        X, F = loop.history
        X, F, nxt = _anderson_mix(X, F, loop.iterations, ravel_pytree(loop.x)[0], ravel_pytree(fz)[0],
                                  forward.beta, forward.reg)
        nxt = unravel(nxt)
        res = relative_residual(fz, loop.x)
        return _Loop(nxt, loop.iterations + 1, res, _all_finite(nxt) & ~jnp.isnan(res), (X, F))

    return start((zeros, zeros)), step


def _active(loop, tol):
    # NaN residuals compare False: a non-finite iterate stops the loop.
    return (loop.residual >= tol) & loop.finite


def _while(step, params, loop, tol, max_iters):
    return jax.lax.while_loop(lambda s: (s.iterations < max_iters) & _active(s, tol),
                              lambda s: step(params, s), loop)


def _masked_scan(step, params, loop, tol, max_iters, *, checkpoint=False, record=False):
    """Exactly ``max_iters`` steps; once converged (or non-finite) the state is frozen, so the
    result equals ``_while``'s while the scan stays reverse-differentiable."""
    if checkpoint:
        step = jax.checkpoint(step)

    def body(s, _):
        new = step(params, s)
        s = jax.tree_util.tree_map(lambda old, upd: jnp.where(_active(s, tol), upd, old), s, new)
        return s, (s.x if record else None)

    return jax.lax.scan(body, loop, None, length=max_iters)


def _info(loop, tol):
    return FixedPointInfo(loop.iterations, loop.residual, loop.residual < tol, loop.finite)


# --------------------------------------------------------------------------------------------
# Implicit differentiation


def _linear_solve(adjoint: Implicit, A, b):
    """Solve ``A g = b`` for a linear operator ``A = I - J`` on pytrees, matrix-free, and report
    (``adjoint.on_failure``) a relative residual above ``adjoint.tol``."""
    flat_b, unravel = ravel_pytree(b)
    matvec = lambda v: ravel_pytree(A(unravel(v)))[0]
    b_norm = jnp.linalg.norm(flat_b)
    target = adjoint.tol * b_norm

    if adjoint.solver == "gmres":
        restart = min(_GMRES_RESTART, flat_b.size, adjoint.max_iters)
        g, _ = jax.scipy.sparse.linalg.gmres(matvec, flat_b, tol=adjoint.tol, atol=0.0, restart=restart,
                                             maxiter=-(-adjoint.max_iters // restart))
        g = jnp.where(b_norm > 0, g, 0.0)  # GMRES normalises by ||b||
        r = flat_b - matvec(g)
        iterations = jnp.asarray(adjoint.max_iters)  # jax's gmres does not report its count
    else:
        # (I - J) g = b as the fixed point g = b + J g = g + r with r = b - A g; the state keeps
        # r at the current g, so the stopping test costs no extra matvec.
        def step(carry):
            g, r, k, (X, F) = carry
            if adjoint.solver == "neumann":
                nxt = g + r
            else:
                X, F, nxt = _anderson_mix(X, F, k, g, g + r, 1.0, 1e-8)
            return nxt, flat_b - matvec(nxt), k + 1, (X, F)

        m = adjoint.m if adjoint.solver == "anderson" else 1
        hist = jnp.zeros((m, flat_b.size), flat_b.dtype)
        init = (jnp.zeros_like(flat_b), flat_b, jnp.asarray(0), (hist, hist))
        cond = lambda c: (c[2] < adjoint.max_iters) & (jnp.linalg.norm(c[1]) > target)
        if adjoint.unroll:
            carry = init
            for _ in range(adjoint.max_iters):
                new = step(carry)
                carry = jax.tree_util.tree_map(lambda old, upd, go=cond(carry): jnp.where(go, upd, old), carry, new)
            g, r, iterations, _ = carry
        else:
            g, r, iterations, _ = jax.lax.while_loop(cond, step, init)

    residual = jnp.linalg.norm(r) / jnp.maximum(b_norm, jnp.finfo(b_norm.dtype).tiny)
    failed = ~(residual <= adjoint.tol)  # NaN counts as a failure
    if adjoint.on_failure == "warn":
        jax.debug.callback(functools.partial(_warn_backward, adjoint), residual, iterations, failed)
    elif adjoint.on_failure == "nan":
        g = jnp.where(failed, jnp.nan, g)
    return unravel(g)


def _warn_backward(adjoint, residual, iterations, failed):
    failed = np.asarray(failed)
    if np.any(failed):
        warnings.warn(
            f"fixed_point: the implicit backward solve ({adjoint.solver}) did not converge: relative "
            f"residual {np.max(np.asarray(residual)[failed]):.3g} > tol {adjoint.tol:g} after "
            f"{int(np.max(iterations))} iterations, so this derivative is inexact. Raise "
            "Implicit(max_iters=...), try another solver, or make f more contractive "
            "(on_failure='nan' makes such derivatives NaN).",
            RuntimeWarning,
            stacklevel=2,
        )


def _zero_tangent(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, jax.dtypes.float0)


def _implicit(f, params, x0, adjoint: Implicit, forward, tol, max_iters):
    # Hoist differentiated values that f closes over into explicit arguments: a custom
    # derivative only sees its arguments, and a closed-over tracer would otherwise escape.
    f_conv, consts = jax.closure_convert(f, params, x0)
    g = lambda theta, x: f_conv(theta[0], x, *theta[1])

    def forward_solve(theta, x0):
        init, step = _iteration(forward, g, x0)
        loop = _while(step, jax.lax.stop_gradient(theta), init, tol, max_iters)
        return loop.x, _info(loop, tol)

    solve = jax.custom_jvp(forward_solve)

    @solve.defjvp
    def solve_jvp(primals, tangents):
        theta, x0 = primals
        dtheta, _ = tangents  # the fixed point does not depend on x0
        x, info = forward_solve(theta, x0)
        _, b = jax.jvp(lambda th: g(th, x), (theta,), (dtheta,))
        _, jx = jax.linearize(lambda z: g(theta, z), x)
        matvec = lambda v: jax.tree_util.tree_map(jnp.subtract, v, jx(v))
        solver = lambda op, rhs: _linear_solve(adjoint, op, rhs)
        dx = jax.lax.custom_linear_solve(matvec, b, solve=solver, transpose_solve=solver)
        return (x, info), (dx, jax.tree_util.tree_map(_zero_tangent, info))

    return solve((params, consts), x0)


# --------------------------------------------------------------------------------------------
# Public API


def _check_tol(tol, name):
    if is_concrete(tol) and not (np.ndim(tol) == 0 and np.isfinite(tol) and tol > 0):
        raise ValueError(f"{name} must be a finite scalar > 0, got {tol!r}")


def _check_max_iters(max_iters, name):
    if isinstance(max_iters, bool) or not isinstance(max_iters, (int, np.integer)) or max_iters < 1:
        raise ValueError(f"{name} must be a Python int >= 1 (it fixes loop and scan lengths), got {max_iters!r}")


def _check_call(caller, f, params, x0, forward, tol, max_iters):
    if not callable(f):
        raise ValueError(f"{caller}: f must be a callable f(params, x) -> x, got {type(f).__name__}")
    if not isinstance(forward, (Picard, Anderson)):
        raise ValueError(f"{caller}: forward must be Picard() or Anderson(...), got {forward!r}")
    _check_tol(tol, f"{caller}: tol")
    _check_max_iters(max_iters, f"{caller}: max_iters")
    leaves = jax.tree_util.tree_leaves(x0)
    if not leaves or not all(jnp.issubdtype(jnp.result_type(leaf), jnp.floating) for leaf in leaves):
        raise ValueError(f"{caller}: x0 must be a non-empty pytree of float arrays, got "
                         f"{jax.tree_util.tree_map(lambda a: jnp.result_type(a).name, x0)}")
    want = jax.tree_util.tree_map(lambda a: (jnp.shape(a), jnp.result_type(a)), x0)
    got = jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), jax.eval_shape(f, params, x0))
    if jax.tree_util.tree_structure(want) != jax.tree_util.tree_structure(got) or want != got:
        raise ValueError(f"{caller}: f(params, x) must return the structure, shapes and dtypes of x0; "
                         f"x0 has {want}, f returned {got}")
    if all(is_concrete(leaf) for leaf in leaves) and not all(np.all(np.isfinite(np.asarray(leaf))) for leaf in leaves):
        raise ValueError(f"{caller}: x0 contains NaN or infinite values")


def _raise_if_not_finite(caller, iterations, finite):
    if is_concrete(finite) and not bool(np.all(finite)):
        k = int(np.max(np.asarray(iterations)))
        raise ValueError(f"{caller}: iterate {k} is not finite (NaN or inf): f diverged or produced NaN; "
                         "check the parameters and the contractivity of f")


def fixed_point(f: Callable, params, x0, *, adjoint=Implicit(), forward=Picard(), tol: float = 1e-3,
                max_iters: int = 50):
    """Solve ``x = f(params, x)`` by iterating from ``x0`` until the relative residual
    ``||f(z) - z|| / ||z||`` is below ``tol`` or ``max_iters`` applications of ``f`` are done.

    Args:
      f: ``f(params, x) -> x``, pure; ``x`` a pytree of float arrays (any shapes, e.g. a
        NamedTuple of ``(H, W, C)`` or ``(N, H, W, C)`` images), returned with the same
        structure, shapes and dtypes.
      params: pytree of everything to differentiate (network weights, step sizes). Pass it
        here, do not close over it; ``Implicit`` closure-converts ``f`` so a closed-over
        differentiated value still gets its derivative, but explicit arguments are the contract.
      x0: starting point.
      adjoint: ``Explicit()``, ``Implicit()`` (default) or ``JacobianFree()``: how derivatives
        reach ``params`` (see each class). Only ``Explicit`` differentiates with respect to
        ``x0``; the others give it a zero gradient.
      forward: ``Picard()`` or ``Anderson()``, the forward iteration (also for inference).
      tol, max_iters: relative tolerance and cap on applications of ``f``.

    Returns:
      ``(x, FixedPointInfo)``. Non-convergence is reported in ``info.converged`` and
      ``info.residual``, never hidden. A non-finite iterate stops the loop; when the report is
      concrete (eager calls, also under eager ``grad``) this raises ``ValueError``; under ``jit``
      or ``vmap`` nothing can raise, and ``info.finite=False`` with ``converged=False`` (and
      ``residual`` usually NaN) is what the caller must check.
    """
    _check_call("fixed_point", f, params, x0, forward, tol, max_iters)
    if isinstance(adjoint, Explicit):
        init, step = _iteration(forward, f, x0)
        loop, _ = _masked_scan(step, params, init, tol, max_iters, checkpoint=adjoint.checkpoint)
        x, info = loop.x, _info(loop, tol)
    elif isinstance(adjoint, Implicit):
        x, info = _implicit(f, params, x0, adjoint, forward, tol, max_iters)
    elif isinstance(adjoint, JacobianFree):
        init, step = _iteration(forward, f, jax.lax.stop_gradient(x0))
        loop = _while(step, jax.lax.stop_gradient(params), init, tol, max_iters - 1)
        x_star = jax.lax.stop_gradient(loop.x)
        x = f(params, x_star)
        residual = jnp.where(loop.finite, relative_residual(x, x_star), jnp.nan)
        finite = loop.finite & _all_finite(x)
        # A loop stopped by a non-finite iterate reports that iterate, not the step after it.
        info = FixedPointInfo(loop.iterations + loop.finite.astype(loop.iterations.dtype), residual,
                              residual < tol, finite)
    else:
        raise ValueError(f"fixed_point: adjoint must be Explicit(), Implicit() or JacobianFree(), got {adjoint!r}")
    _raise_if_not_finite("fixed_point", info.iterations, info.finite)
    return x, info


def fixed_point_iterates(f: Callable, params, x0, *, forward=Picard(), tol: float = 1e-3, max_iters: int = 50):
    """All iterates of the forward pass, without gradients (for SUPPA-style training, which
    backpropagates through one step from a randomly drawn iterate).

    Returns ``(history, count)``: ``history`` is ``x0``'s pytree with a leading axis of length
    ``max_iters + 1`` holding ``x_0, x_1, ...``; entries after the last iterate repeat it, so
    ``history[count]`` is the final estimate and ``history[:count + 1]`` the iterates actually
    computed; ``count`` is the number of applications of ``f`` (as ``FixedPointInfo.iterations``).
    A non-finite iterate stops the iteration as in ``fixed_point`` (``ValueError`` eagerly).
    """
    _check_call("fixed_point_iterates", f, params, x0, forward, tol, max_iters)
    x0, params = jax.lax.stop_gradient((x0, params))
    init, step = _iteration(forward, f, x0)
    loop, xs = _masked_scan(step, params, init, tol, max_iters, record=True)
    history = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), x0, xs)
    _raise_if_not_finite("fixed_point_iterates", loop.iterations, loop.finite)
    return history, loop.iterations


__all__ = ["fixed_point", "fixed_point_iterates", "FixedPointInfo", "Explicit", "Implicit", "JacobianFree",
           "Picard", "Anderson", "relative_residual"]
