"""barrier_prox against a high-precision root finder, at ordinary and extreme inputs, and its
custom derivatives against finite differences and the implicit-function formulas of
PROTOCOLS.md section 1 (Corbineau et al. 2019, Proposition 1)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest

from jaxrestore.prox import barrier_prox

U_GRID = np.linspace(-10.0, 10.0, 41)
ALPHA_GRID = np.logspace(-8.0, 3.0, 23)

EXTREME_U = (1e30, -1e30, 1e6, -1e6, 10.0, -10.0, 0.5, 0.0, 1.0, 1.0 - 1e-7)
EXTREME_ALPHA = (1e-8, 1e3)


def _mp_root(u, alpha, beta=1.0, dps=40, iters=150):
    """The root in (0, beta) of g(v) = v - u - alpha/v + alpha/(beta - v) (increasing from -inf
    to +inf), by bisection in ``dps``-digit arithmetic. Returns an mpmath number."""
    with mpmath.workdps(dps):
        u, a, b = mpmath.mpf(u), mpmath.mpf(alpha), mpmath.mpf(beta)
        lo, hi = mpmath.mpf(0), b
        for _ in range(iters):
            m = (lo + hi) / 2
            if m - u - a / m + a / (b - m) > 0:
                hi = m
            else:
                lo = m
        return (lo + hi) / 2


@functools.lru_cache(maxsize=None)
def _reference_grid(beta=1.0, n_u=41, n_alpha=23):
    """float64 reference on the (u, alpha) grid, computed once per session (~3 s)."""
    us = np.linspace(-10.0, 10.0, n_u) * beta
    alphas = np.logspace(-8.0, 3.0, n_alpha)
    ref = np.array([[float(_mp_root(u, a, beta)) for a in alphas] for u in us])
    return us, alphas, ref


@functools.lru_cache(maxsize=None)
def _reference_extreme(beta=1.0):
    """Extreme points need more digits: the root can lie 1e-38 from a bound while u is 1e30."""
    pts = [(u, a) for u in EXTREME_U for a in EXTREME_ALPHA]
    ref = np.array([float(_mp_root(u, a, beta, dps=120, iters=450)) for u, a in pts])
    return np.array(pts), ref


def _rel_err(v, ref):
    return np.max(np.abs(np.asarray(v, np.float64) - ref) / np.abs(ref))


# -------------------------------------------------------------------------------- values


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-6), ("float64", 1e-12)])
def test_matches_mpmath(dtype, tol, request):
    # the rounding of u and alpha to float32 moves the root by less than 1e-7 relative here
    if dtype == "float64":
        request.getfixturevalue("x64")
        dtype = jnp.float64
    us, alphas, ref = _reference_grid()
    u, a = np.meshgrid(us, alphas, indexing="ij")
    v = barrier_prox(jnp.asarray(u, dtype), jnp.asarray(a, dtype))
    assert v.dtype == dtype
    assert _rel_err(v, ref) < tol


def test_beta_not_one_matches_mpmath(x64):
    beta = 2.5
    us, alphas, ref = _reference_grid(beta, 21, 12)
    u, a = np.meshgrid(us, alphas, indexing="ij")
    v64 = barrier_prox(jnp.asarray(u, jnp.float64), jnp.asarray(a, jnp.float64), jnp.float64(beta))
    assert _rel_err(v64, ref) < 1e-12
    # beta matters: the beta = 1 prox of the same points is different
    v1 = barrier_prox(jnp.asarray(u, jnp.float64), jnp.asarray(a, jnp.float64))
    assert np.max(np.abs(np.asarray(v1) - ref)) > 0.1


def test_beta_not_one_float32():
    beta = 2.5
    us, alphas, ref = _reference_grid(beta, 21, 12)
    u, a = np.meshgrid(us, alphas, indexing="ij")
    v = barrier_prox(jnp.asarray(u, jnp.float32), jnp.asarray(a, jnp.float32), beta)
    assert _rel_err(v, ref) < 1e-6


def test_symmetry(x64, rng):
    """prox(u) = beta - prox(beta - u), checked away from the bounds where both sides are exact."""
    u = rng.uniform(-3, 4, 200)
    a = 10 ** rng.uniform(-3, 1, 200)
    v = np.asarray(barrier_prox(jnp.asarray(u), jnp.asarray(a)))
    w = np.asarray(barrier_prox(jnp.asarray(1.0 - u), jnp.asarray(a)))
    np.testing.assert_allclose(v, 1.0 - w, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_extreme_inputs_strictly_inside(dtype):
    with jax.enable_x64(dtype == "float64"):
        dt = jnp.dtype(dtype)
        pts, ref = _reference_extreme()
        v = np.asarray(barrier_prox(jnp.asarray(pts[:, 0], dt), jnp.asarray(pts[:, 1], dt)))
        assert v.dtype == dt
        assert np.all(np.isfinite(v))
        assert np.all(v > 0) and np.all(v < 1), v
        tiny, eps = np.finfo(dt).tiny, np.finfo(dt).eps
        ok = (ref >= tiny) & (ref <= 1 - eps)  # representable roots: full relative precision
        tol = 1e-12 if dtype == "float64" else 1e-6
        assert _rel_err(v[ok], ref[ok]) < tol
        # roots closer to 1 than the float type can resolve give the largest float below 1;
        # roots below the smallest normal float give the smallest normal float
        near_one = ref > 1 - eps / 2
        assert np.all(v[near_one] == np.nextafter(dt.type(1), dt.type(0)))
        assert np.all(v[ref < tiny] == tiny)
        if dtype == "float32":
            assert near_one.any() and (ref < tiny).any()  # the cases are really exercised


def test_scalar_and_integer_inputs():
    v = barrier_prox(0.3, 0.1)
    assert v.shape == () and v.dtype == jnp.float32
    assert float(v) == pytest.approx(float(_mp_root(0.3, 0.1)), rel=1e-6)
    v = barrier_prox(jnp.arange(-2, 3), 1)
    assert v.dtype == jnp.float32
    np.testing.assert_allclose(v, [float(_mp_root(u, 1.0)) for u in range(-2, 3)], rtol=1e-6)


def test_per_image_alpha_broadcast(rng):
    u = rng.uniform(-1, 2, (3, 5, 7, 3)).astype(np.float32)
    alpha = np.array([1e-4, 0.1, 3.0], np.float32)
    batched = barrier_prox(jnp.asarray(u), jnp.asarray(alpha)[:, None, None, None])
    for i in range(3):
        np.testing.assert_array_equal(batched[i], barrier_prox(jnp.asarray(u[i]), alpha[i]))
    assert float(jnp.max(jnp.abs(batched[0] - batched[2]))) > 0.01


def test_alpha_and_beta_must_be_positive():
    for bad in (0.0, -1.0, np.array([0.1, 0.0])):
        with pytest.raises(ValueError, match="alpha"):
            barrier_prox(jnp.zeros(2), bad)
    with pytest.raises(ValueError, match="beta"):
        barrier_prox(jnp.zeros(2), 0.1, beta=0.0)


# --------------------------------------------------------------------------- derivatives


def _implicit(v, u, alpha, beta):
    """PROTOCOLS.md: dv/du = v (v - beta)/D, dv/dalpha = (2v - beta)/D,
    D = 3 v^2 - 2 (beta + u) v + beta u - 2 alpha; and, from the same cubic,
    dv/dbeta = (v^2 - u v - alpha)/D."""
    d = 3 * v * v - 2 * (beta + u) * v + beta * u - 2 * alpha
    return v * (v - beta) / d, (2 * v - beta) / d, (v * v - u * v - alpha) / d


def _moderate_points(rng, n):
    u = rng.uniform(-2.0, 3.0, n)
    alpha = 10 ** rng.uniform(-2, 0.5, n)
    beta = rng.uniform(0.5, 3.0, n)
    return u, alpha, beta


def test_derivatives_match_implicit_formulas(x64, rng):
    u, alpha, beta = (jnp.asarray(a) for a in _moderate_points(rng, 64))
    v = barrier_prox(u, alpha, beta)
    du, dalpha, dbeta = _implicit(v, u, alpha, beta)
    f = lambda u, a, b: jnp.sum(barrier_prox(u, a, b))  # noqa: E731 (elementwise: grad = diag)
    gu, ga, gb = jax.grad(f, argnums=(0, 1, 2))(u, alpha, beta)
    np.testing.assert_allclose(gu, du, rtol=1e-12)
    np.testing.assert_allclose(ga, dalpha, rtol=1e-12)
    np.testing.assert_allclose(gb, dbeta, rtol=1e-12)
    # forward mode gives the same, for a combined tangent
    tu, ta, tb = (jnp.asarray(rng.standard_normal(64)) for _ in range(3))
    _, tangent = jax.jvp(barrier_prox, (u, alpha, beta), (tu, ta, tb))
    np.testing.assert_allclose(tangent, du * tu + dalpha * ta + dbeta * tb, rtol=1e-11, atol=1e-14)


def test_derivatives_match_central_differences(x64, rng):
    u, alpha, beta = _moderate_points(rng, 32)
    args = [jnp.asarray(a) for a in (u, alpha, beta)]
    for i in range(3):
        h = 1e-6 * np.maximum(np.abs(np.asarray(args[i])), 1.0)
        plus, minus = list(args), list(args)
        plus[i], minus[i] = args[i] + h, args[i] - h
        fd = (np.asarray(barrier_prox(*plus)) - np.asarray(barrier_prox(*minus))) / (2 * h)
        tangents = [jnp.zeros(32)] * 3
        tangents[i] = jnp.ones(32)
        _, jvp = jax.jvp(barrier_prox, tuple(args), tuple(tangents))
        np.testing.assert_allclose(jvp, fd, rtol=1e-6, atol=1e-12)


def test_gradient_through_clipped_output_is_the_true_derivative():
    """In float32, u = 1e6, alpha = 1e-8 puts the root 1e-14 below 1: the output is clipped to
    the largest float below 1, but dv/du is the exact derivative of the exact prox, about
    1e-20, not the zero a differentiated clip would give. Evidence that the implicit rule, not
    autodiff through the iteration, defines the derivative."""
    u, alpha = 1e6, 1e-8
    v_true = _mp_root(u, alpha, dps=80, iters=300)
    with mpmath.workdps(80):
        w = 1 - v_true
        exact = float(w**2 * v_true**2 / ((w * v_true) ** 2 + alpha * (w**2 + v_true**2)))
    g = jax.grad(barrier_prox)(jnp.float32(u), jnp.float32(alpha))
    assert float(barrier_prox(jnp.float32(u), jnp.float32(alpha))) == np.nextafter(np.float32(1), np.float32(0))
    assert exact > 1e-25
    assert float(g) == pytest.approx(exact, rel=1e-4)


def test_primal_is_a_custom_jvp():
    jaxpr = str(jax.make_jaxpr(barrier_prox)(jnp.ones(3), 0.1))
    assert "custom_jvp_call" in jaxpr


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_derivatives_finite_at_extremes(dtype):
    with jax.enable_x64(dtype == "float64"):
        dt = jnp.dtype(dtype)
        pts, _ = _reference_extreme()
        u, a = jnp.asarray(pts[:, 0], dt), jnp.asarray(pts[:, 1], dt)
        f = lambda u, a: jnp.sum(barrier_prox(u, a))  # noqa: E731
        gu, ga = jax.grad(f, argnums=(0, 1))(u, a)
        assert np.all(np.isfinite(gu)) and np.all(np.isfinite(ga))
        # 0 <= dv/du <= 1 (the prox is firmly non-expansive and increasing)
        assert np.all(np.asarray(gu) >= 0) and np.all(np.asarray(gu) <= 1)
        gb = jax.grad(lambda b: jnp.sum(barrier_prox(u, a, b)))(jnp.asarray(1.0, dt))
        assert np.isfinite(gb)


def test_jit_vmap_grad_jvp_compose(rng):
    u = jnp.asarray(rng.uniform(-1, 2, (4, 6, 5, 3)), jnp.float32)
    alpha = jnp.asarray([1e-3, 1e-2, 0.1, 1.0], jnp.float32)
    eager = jnp.stack([barrier_prox(u[i], alpha[i]) for i in range(4)])
    jv = jax.jit(jax.vmap(barrier_prox))(u, alpha)
    np.testing.assert_allclose(jv, eager, rtol=1e-6)

    # gradient w.r.t. per-image alpha through jit(vmap(grad)) equals the implicit formula
    loss = lambda u, a: jnp.sum(barrier_prox(u, a) ** 2)  # noqa: E731
    ga = jax.jit(jax.vmap(jax.grad(loss, argnums=1)))(u, alpha)
    _, dalpha, _ = _implicit(eager, u, alpha[:, None, None, None], 1.0)
    np.testing.assert_allclose(ga, jnp.sum(2 * eager * dalpha, axis=(1, 2, 3)), rtol=2e-4)
    # second-order: jvp of grad runs and is finite
    _, hvp = jax.jvp(jax.grad(lambda x: loss(x, 0.1)), (u,), (jnp.ones_like(u),))
    assert np.all(np.isfinite(hvp))


def test_zero_alpha_under_jit_gives_the_projection_not_nan():
    """A learned barrier weight can underflow to exactly 0 inside jit (where the alpha > 0 check
    cannot run): the result must be the limit, the projection onto the open interval, not NaN."""
    u = jnp.asarray([-3e4, -1.0, 0.0, 0.3, 0.5, 0.7, 1.0, 3e4], jnp.float32)
    v = np.asarray(jax.jit(lambda u: barrier_prox(u, jnp.zeros_like(u)))(u))
    assert np.all(np.isfinite(v)) and v.min() > 0 and v.max() < 1
    np.testing.assert_allclose(v[3:6], [0.3, 0.5, 0.7], rtol=1e-6)
    g = jax.jit(jax.grad(lambda u: barrier_prox(u, jnp.zeros_like(u)).sum()))(u)
    assert np.all(np.isfinite(np.asarray(g)))


def test_barrier_prox_rejects_nan_and_infinite_weights():
    import jax.numpy as jnp
    import numpy as np
    import pytest

    from jaxrestore.prox import barrier_prox

    u = jnp.full((3,), 0.5)
    for name, kw in (("alpha", dict(alpha=np.nan, beta=1.0)), ("alpha", dict(alpha=np.inf, beta=1.0)),
                     ("beta", dict(alpha=0.1, beta=np.nan)), ("alpha", dict(alpha=np.array([0.1, np.nan, 0.2]), beta=1.0))):
        with pytest.raises(ValueError, match=f"{name} must be finite and > 0"):
            barrier_prox(u, kw["alpha"], kw["beta"])
