"""Smoothed TV (13): finite differences and their adjoints against explicit matrices, the exact
gradient against autodiff, the authors' variant against its formula in PROTOCOLS.md section 1."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrestore.regularizers import (
    diff_h,
    diff_h_adjoint,
    diff_v,
    diff_v_adjoint,
    gradient_spread,
    tv_lipschitz,
    tv_smooth,
    tv_smooth_grad,
)

SHAPE = (17, 23, 3)


def _diff_matrix(n):
    """Forward differences with a replicate boundary: row i is e_{i+1} - e_i, the last row zero."""
    d = np.zeros((n, n))
    idx = np.arange(n - 1)
    d[idx, idx], d[idx, idx + 1] = -1.0, 1.0
    return d


def _dv(x):
    return np.einsum("ij,jkc->ikc", _diff_matrix(x.shape[0]), x)


def _dh(x):
    return np.einsum("kj,ijc->ikc", _diff_matrix(x.shape[1]), x)


def _dvt(p):
    return np.einsum("ji,jkc->ikc", _diff_matrix(p.shape[0]), p)


def _dht(p):
    return np.einsum("jk,ijc->ikc", _diff_matrix(p.shape[1]), p)


def test_differences_match_explicit_matrices(x64, rng):
    x = rng.standard_normal(SHAPE)
    dv, dh = np.asarray(diff_v(jnp.asarray(x))), np.asarray(diff_h(jnp.asarray(x)))
    np.testing.assert_allclose(dv, _dv(x), atol=1e-14)
    np.testing.assert_allclose(dh, _dh(x), atol=1e-14)
    # Neumann boundary: no difference across the last row / column
    assert not dv[-1].any() and not dh[:, -1].any()
    assert np.all(dv[:-1] != 0) and np.all(dh[:, :-1] != 0)
    p = rng.standard_normal(SHAPE)
    np.testing.assert_allclose(diff_v_adjoint(jnp.asarray(p)), _dvt(p), atol=1e-14)
    np.testing.assert_allclose(diff_h_adjoint(jnp.asarray(p)), _dht(p), atol=1e-14)


@pytest.mark.parametrize("shape", [SHAPE, (2, 5, 1), (9, 4, 2)])
def test_difference_adjoints(x64, rng, shape):
    x, p = rng.standard_normal(shape), rng.standard_normal(shape)
    for d, dt in ((diff_v, diff_v_adjoint), (diff_h, diff_h_adjoint)):
        lhs = np.sum(np.asarray(d(jnp.asarray(x))) * p)
        rhs = np.sum(x * np.asarray(dt(jnp.asarray(p))))
        assert lhs == pytest.approx(rhs, rel=1e-12)


def _tv_reference(x, delta):
    return np.sum(np.sqrt((_dv(x) ** 2 + _dh(x) ** 2) / delta**2 + 1.0))


@pytest.mark.parametrize("delta", [0.01, 0.3])
def test_tv_value_and_exact_gradient(x64, rng, delta):
    x = rng.random(SHAPE)
    assert float(tv_smooth(jnp.asarray(x), delta)) == pytest.approx(_tv_reference(x, delta), rel=1e-13)
    g = tv_smooth_grad(jnp.asarray(x), delta, "exact")
    auto = jax.grad(tv_smooth)(jnp.asarray(x), delta)
    np.testing.assert_allclose(g, auto, rtol=1e-10, atol=1e-10 * float(jnp.max(jnp.abs(auto))))
    # the default variant is the exact one
    np.testing.assert_array_equal(tv_smooth_grad(jnp.asarray(x), delta), g)


def _replicate_transpose_filter(p, axis):
    """The iRestNet code's DvT/DhT: correlation with [1, -1] (``p[i-1] - p[i]``) after replicate
    padding, written as an explicit loop."""
    p = np.moveaxis(p, axis, 0)
    out = np.empty_like(p)
    for i in range(p.shape[0]):
        out[i] = p[max(i - 1, 0)] - p[i]
    return np.moveaxis(out, 0, axis)


def test_authors_variant_formula(x64, rng):
    """PROTOCOLS.md: (D_v' D_v x + D_h' D_h x) / delta^2 / sqrt(((D_v x)^2 + (D_h x)^2)/delta^2 + 1),
    with the authors' replicate-padded transpose filters D' (iRestNet code, IPIter)."""
    delta = 0.01
    x = rng.random(SHAPE)
    dv, dh = _dv(x), _dh(x)
    ref = (_replicate_transpose_filter(dv, 0) + _replicate_transpose_filter(dh, 1)) / delta**2 / np.sqrt((dv**2 + dh**2) / delta**2 + 1.0)
    # the replicate padding differs from the true adjoint on the first row / column only
    assert np.abs(_replicate_transpose_filter(dv, 0) - _dvt(dv))[1:].max() == 0
    assert np.abs(_replicate_transpose_filter(dv, 0) - _dvt(dv))[0].max() > 0
    got = np.asarray(tv_smooth_grad(jnp.asarray(x), delta, "authors"))
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    exact = np.asarray(tv_smooth_grad(jnp.asarray(x), delta, "exact"))
    assert np.abs(got - exact).max() > 0.1 * np.abs(exact).max()


def test_unknown_variant_raises():
    with pytest.raises(ValueError, match="variant"):
        tv_smooth_grad(jnp.zeros((4, 4, 1)), 0.01, "approx")


def test_gradient_spread(x64, rng):
    x = rng.random(SHAPE)
    ref = np.std(np.concatenate([_dv(x).ravel(), _dh(x).ravel()]))
    assert float(gradient_spread(jnp.asarray(x))) == pytest.approx(ref, rel=1e-13)


def test_tv_lipschitz_bounds_the_gradient(x64, rng):
    """||D||^2 <= 8 (power iteration on D^T D), and the gradient's difference quotients stay
    below 8 / delta^2."""
    assert tv_lipschitz(0.01) == pytest.approx(8e4)
    p = rng.standard_normal(SHAPE)
    for _ in range(200):
        p = _dvt(_dv(p)) + _dht(_dh(p))
        p /= np.linalg.norm(p)
    norm2 = np.linalg.norm(_dvt(_dv(p)) + _dht(_dh(p)))
    assert 7.5 < norm2 <= 8.0
    delta = 0.05
    grad = jax.jit(lambda x: tv_smooth_grad(x, delta))
    for _ in range(5):
        a, b = rng.random(SHAPE), rng.random(SHAPE)
        q = np.linalg.norm(np.asarray(grad(a) - grad(b))) / np.linalg.norm(a - b)
        assert q <= tv_lipschitz(delta)
