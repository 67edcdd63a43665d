"""Proximity operator of the logarithmic barrier of ``[0, beta]`` (iRestNet, Proposition 1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrestore._validation import is_concrete

# Newton steps from the quadratic lower bound: 3 reach float32 round-off and 5 float64's (at most
# 4.4e-16 relative to 30 steps over u in [-1e4, 1e4 + 1], alpha in [1e-12, 1e4])
_NEWTON_STEPS = 5


def _quadratic_root(c, alpha):
    """Positive root of ``w^2 - c w - alpha = 0`` without cancellation or overflow."""
    r = jnp.hypot(c, 2.0 * jnp.sqrt(alpha))
    return jnp.where(c >= 0, 0.5 * (c + r), 2.0 * alpha / (r - c))


def _distance_to_bound(u, alpha, beta):
    """Solve the prox optimality condition on the half of ``(0, beta)`` that holds the root.

    Returns ``(w, upper)``: ``v = w`` if not ``upper`` else ``v = beta - w``, with
    ``0 < w <= beta / 2`` the distance from ``v`` to its nearer bound.
    """
    upper = u > 0.5 * beta
    # The prox is symmetric: prox(u) = beta - prox(beta - u). Solving for the distance to the
    # nearer bound keeps full relative precision when the root hugs 0 or beta.
    c = jnp.where(upper, beta - u, u)
    # h(w) = w - c - alpha / w + alpha / (beta - w) is increasing and concave on (0, beta/2]
    # (h'' = -2 alpha / w^3 + 2 alpha / (beta - w)^3 <= 0). Since 1/beta <= 1/(beta - w) <= 2/beta
    # there, the root of the quadratic w - (c - 2 alpha / beta) - alpha / w = 0 is a lower bound
    # with h <= 0; Newton's method from a point left of the root of a concave increasing function
    # increases monotonically and never overshoots, and converges quadratically.
    tiny = jnp.finfo(u.dtype).tiny
    # w * w underflows to 0 near the bound; with alpha = 0 (a learned weight that underflowed)
    # alpha / (w * w) would be 0 / 0. A floor at the smallest normal float makes it +inf, whose
    # Newton step h / inf is 0. (Reordering as (alpha / w) / w is undone by XLA's simplifier.)
    alpha = jnp.maximum(alpha, tiny)
    w = jnp.clip(_quadratic_root(c - 2.0 * alpha / beta, alpha), tiny, 0.5 * beta)

    def newton(_, w):
        h = w - c - alpha / w + alpha / (beta - w)
        dh = 1.0 + alpha / (w * w) + alpha / ((beta - w) * (beta - w))
        return jnp.clip(w - h / dh, tiny, 0.5 * beta)

    # A loop, not unrolled: XLA then materialises u (and c) once and runs each step as one
    # vectorised pass. Unrolled, it fused whatever computed u (iRestNet's TV gradient, with its
    # shifted differences) into the Newton steps and ran them 8x slower on the CPU (benchmarks/bench_irestnet.py).
    return jax.lax.fori_loop(0, _NEWTON_STEPS, newton, w), upper


@jax.custom_jvp
def _barrier_prox(u, alpha, beta):
    w, upper = _distance_to_bound(u, alpha, beta)
    # beta - w rounds to beta when w is below half an ulp of beta: stay strictly inside.
    return jnp.clip(jnp.where(upper, beta - w, w), jnp.finfo(u.dtype).tiny, jnp.nextafter(beta, 0.0))


@_barrier_prox.defjvp
def _barrier_prox_jvp(primals, tangents):
    u, alpha, beta = primals
    du, dalpha, dbeta = tangents
    w, upper = _distance_to_bound(u, alpha, beta)
    v = jnp.clip(jnp.where(upper, beta - w, w), jnp.finfo(u.dtype).tiny, jnp.nextafter(beta, 0.0))
    # Implicit-function theorem on g(v) = v - u - alpha/v + alpha/(beta - v) = 0 (eqs. 8-9):
    # dv/du = 1/g', dv/dalpha = (1/v - 1/(beta - v))/g', dv/dbeta = alpha/(beta - v)^2/g'.
    # Multiplied through by v^2 (beta - v)^2 every term is a product of bounded positives, so
    # nothing overflows or cancels near the bounds; written with w (distance to the nearer bound)
    # it is symmetric and exact in both halves.
    far = beta - w
    den = jnp.maximum((w * far) ** 2 + alpha * (w * w + far * far), jnp.finfo(u.dtype).tiny)
    side = jnp.where(upper, -1.0, 1.0).astype(u.dtype)
    dv_du = (w * far) ** 2 / den
    dv_dalpha = side * w * far * (beta - 2.0 * w) / den
    dv_dbeta = alpha * jnp.where(upper, far * far, w * w) / den
    return v, dv_du * du + dv_dalpha * dalpha + dv_dbeta * dbeta


def barrier_prox(u, alpha, beta=1.0):
    """``prox_{alpha b}(u)`` for the barrier ``b(v) = -ln v - ln(beta - v)``, elementwise.

    The prox is the unique root in ``(0, beta)`` of the cubic of Proposition 1 (Corbineau et al.
    2019), ``v^3 - (beta + u) v^2 + (beta u - 2 alpha) v + beta alpha = 0``, equivalently of
    ``g(v) = v - u - alpha / v + alpha / (beta - v)``, which increases from ``-inf`` to ``+inf``
    on ``(0, beta)``.

    How the root is found, and why it is stable: by the symmetry ``prox(u) = beta -
    prox(beta - u)`` we solve for ``w``, the distance from ``v`` to its *nearer* bound, on
    ``(0, beta/2]``. There ``g`` is concave, and replacing ``alpha / (beta - w)`` by its upper bound
    ``2 alpha / beta`` gives a quadratic whose positive root (computed without cancellation) lies
    left of the true root. Newton's method started there climbs monotonically to the root with
    quadratic convergence and cannot leave the interval, so a fixed number of steps suffices and
    everything vectorises under ``jit``/``vmap``. Working with ``w`` keeps full relative precision
    even when ``v`` lies within ``1e-30`` of a bound, unlike Cardano's formula, whose cancellations
    force the original code to compare candidate roots. When the root is closer to ``beta`` than
    the float type can represent, the result is the largest float below ``beta`` (and never below
    the smallest normal float): the output is always strictly inside ``(0, beta)``.

    Derivatives (``jax.custom_jvp``) come from the implicit-function theorem, eqs. (8)-(9), in a
    form that stays finite everywhere (see the code). They are also given for ``beta``.

    Args:
      u: input array.
      alpha: barrier weight ``> 0``, broadcastable against ``u`` (e.g. ``(N, 1, 1, 1)`` per image).
        Under ``jit`` a weight that underflowed to 0 gives the limit, the projection onto the
        open interval (no NaN).
      beta: upper bound ``> 0``, broadcastable against ``u``.

    Returns:
      ``v`` with the broadcast shape of the arguments and their floating dtype.
    """
    dtype = jnp.result_type(u, alpha, beta, jnp.float32)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    for name, v in (("alpha", alpha), ("beta", beta)):
        if is_concrete(v) and not np.all(np.asarray(v) > 0):  # NaN fails ``> 0`` too
            raise ValueError(f"barrier_prox: {name} must be finite and > 0, got {v if np.ndim(v) == 0 else 'an array with NaN or <= 0 entries'}")
        if is_concrete(v) and not np.all(np.isfinite(np.asarray(v))):
            raise ValueError(f"barrier_prox: {name} must be finite and > 0, got {v if np.ndim(v) == 0 else 'an array with inf entries'}")
    u, alpha, beta = (jnp.asarray(a, dtype) for a in (u, alpha, beta))
    shape = jnp.broadcast_shapes(u.shape, alpha.shape, beta.shape)
    u, alpha, beta = (jnp.broadcast_to(a, shape) for a in (u, alpha, beta))
    return _barrier_prox(u, alpha, beta)


__all__ = ["barrier_prox"]
