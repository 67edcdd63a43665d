"""Degradation operators: adjoints, the two kernel conventions against an explicit reference,
closed-form data proxes against their optimality condition and a dense solve, Lipschitz
constants against dense eigenvalues, vmap over operators, and input validation."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from jaxrestore.operators import Blur, Downsample, Identity, Inpaint

CONVENTIONS = ("convolution", "correlation")

# Jitted entry points: one compilation per operator type and shape instead of op-by-op dispatch
# (several times faster on CPU). Input validation is tested separately, outside jit.
_fwd = jax.jit(lambda op, x: op(x))
_adj = jax.jit(lambda op, y: op.adjoint(y))
_prox = jax.jit(lambda op, z, y, rho: op.prox_data(z, y, rho))


def _kernel(rng, kh, kw):
    """A random non-negative kernel with no symmetry, summing to one."""
    k = rng.random((kh, kw)) ** 2
    return k / k.sum()


def _vdot(a, b):
    return float(np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64)))


def _reference_blur(x, k, convention):
    """Circular blur by its definition in the operators docstring (explicit sum over taps):
    convolution ``sum_a k[a] x[i - (a - c)]``, correlation ``sum_a k[a] x[i + (a - c)]``."""
    kh, kw = k.shape
    ch, cw = kh // 2, kw // 2
    sign = 1 if convention == "convolution" else -1
    out = np.zeros_like(x)
    for a, b in itertools.product(range(kh), range(kw)):
        # np.roll(x, d)[i] = x[i - d]
        out += k[a, b] * np.roll(x, (sign * (a - ch), sign * (b - cw)), axis=(0, 1))
    return out


def _scipy_blur(x, k, convention):
    """The same blur from scipy.ndimage (centre at ``len // 2`` for odd kernels, mode='wrap')."""
    f = ndi.convolve if convention == "convolution" else ndi.correlate
    return np.stack([f(x[..., c], k, mode="wrap") for c in range(x.shape[-1])], axis=-1)


def _make_ops(rng, h, w, kernel_shape=(5, 7), convention="convolution"):
    """Operators whose range is the image space (Downsample is tested on its own)."""
    return {
        "identity": Identity.create((h, w, 3)),
        "inpaint": Inpaint.create(np.where(rng.random((h, w)) < 0.3, 0.0, rng.random((h, w)))),
        "blur": Blur.from_kernel(_kernel(rng, *kernel_shape), (h, w), convention),
    }


def _dense(op, in_shape, out_shape):
    """The matrix of a linear operator, column by column from basis images."""
    n = int(np.prod(in_shape))
    cols = jax.jit(jax.vmap(lambda e: op(e.reshape(in_shape)).ravel()))(jnp.eye(n, dtype=jnp.float64))
    return np.asarray(cols).T.reshape(int(np.prod(out_shape)), n)


# ------------------------------------------------------------------------------- adjoints


@pytest.mark.parametrize(
    "name,kernel_shape,convention",
    [("identity", (5, 7), "convolution"), ("inpaint", (5, 7), "convolution")]
    + [("blur", ks, c) for ks in [(5, 7), (9, 9), (4, 6)] for c in CONVENTIONS],
)
def test_adjoint_identity(x64, rng, name, kernel_shape, convention):
    h, w, c = 17, 23, 3
    op = _make_ops(rng, h, w, kernel_shape, convention=convention)[name]
    x = rng.standard_normal((h, w, c))
    y = rng.standard_normal((h, w, c))
    lhs, rhs = _vdot(_fwd(op, x), y), _vdot(x, _adj(op, y))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("kernel_shape", [(5, 7), (9, 9)])
def test_downsample_adjoint_identity(x64, rng, factor, kernel_shape, convention):
    h, w = 24, 36
    op = Downsample.from_kernel(_kernel(rng, *kernel_shape), (h, w, 3), factor, convention)
    x = rng.standard_normal((h, w, 3))
    y = rng.standard_normal((h // factor, w // factor, 3))
    lhs, rhs = _vdot(_fwd(op, x), y), _vdot(x, _adj(op, y))
    assert lhs == pytest.approx(rhs, rel=1e-12)


@pytest.mark.parametrize("name", ["identity", "inpaint", "blur", "downsample"])
def test_gram_is_adjoint_of_forward(x64, rng, name):
    if name == "downsample":
        op = Downsample.from_kernel(_kernel(rng, 5, 7), (24, 36), 3, "correlation")
    else:
        op = _make_ops(rng, 24, 36, (5, 7), "correlation")[name]
    x = jnp.asarray(rng.standard_normal((24, 36, 3)))
    gram = jax.jit(lambda op, x: op.gram(x))(op, x)
    np.testing.assert_allclose(gram, _adj(op, _fwd(op, x)), rtol=0, atol=1e-13)


# ------------------------------------------------------------------------ blur conventions


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("kernel_shape", [(5, 7), (9, 9), (4, 6), (1, 3)])
def test_blur_forward_matches_definition(x64, rng, kernel_shape, convention):
    k = _kernel(rng, *kernel_shape)
    x = rng.standard_normal((17, 23, 3))
    out = np.asarray(_fwd(Blur.from_kernel(k, x.shape, convention), x))
    np.testing.assert_allclose(out, _reference_blur(x, k, convention), rtol=0, atol=1e-13)
    if all(s % 2 for s in kernel_shape):  # scipy.ndimage's centre is len // 2 only for odd sizes
        np.testing.assert_allclose(out, _scipy_blur(x, k, convention), rtol=0, atol=1e-13)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_blur_delta_kernel_shifts_by_its_offset(x64, rng, convention):
    """A delta at (c + 1, c + 2) shifts by (+1, +2) in convolution, (-1, -2) in correlation."""
    k = np.zeros((5, 5))
    k[3, 4] = 1.0
    x = rng.standard_normal((17, 23, 3))
    out = np.asarray(_fwd(Blur.from_kernel(k, x.shape, convention), x))
    shift = (1, 2) if convention == "convolution" else (-1, -2)
    np.testing.assert_allclose(out, np.roll(x, shift, axis=(0, 1)), atol=1e-13)


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("factor", [2, 3])
def test_downsample_forward_matches_definition(x64, rng, factor, convention):
    k = _kernel(rng, 5, 7)
    x = rng.standard_normal((24, 36, 3))
    out = _fwd(Downsample.from_kernel(k, x.shape, factor, convention), x)
    ref = _reference_blur(x, k, convention)[::factor, ::factor]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-13)


def test_conventions_agree_for_symmetric_kernel_only(x64, rng):
    x = jnp.asarray(rng.standard_normal((17, 23, 3)))
    sym = rng.random((5, 7))
    sym = sym + sym[::-1, ::-1]  # point-symmetric about its centre (2, 3)
    sym /= sym.sum()
    conv = _fwd(Blur.from_kernel(sym, (17, 23), "convolution"), x)
    corr = _fwd(Blur.from_kernel(sym, (17, 23), "correlation"), x)
    np.testing.assert_allclose(conv, corr, atol=1e-13)

    asym = _kernel(rng, 5, 7)
    conv = _fwd(Blur.from_kernel(asym, (17, 23), "convolution"), x)
    corr = _fwd(Blur.from_kernel(asym, (17, 23), "correlation"), x)
    assert float(jnp.max(jnp.abs(conv - corr))) > 1e-2
    # correlation with k is convolution with the 180-degree rotated kernel
    rot = _fwd(Blur.from_kernel(asym[::-1, ::-1], (17, 23), "convolution"), x)
    np.testing.assert_allclose(corr, rot, atol=1e-13)


# ------------------------------------------------------------------------------ data prox


def _prox_residual(op, x, y, z, rho):
    x, y, z = (np.asarray(a) for a in (x, y, z))
    g = np.asarray(_adj(op, _fwd(op, x) - y)) + rho * (x - z)
    scale = np.linalg.norm(np.asarray(_adj(op, y))) + rho * np.linalg.norm(z)
    return float(np.linalg.norm(g) / scale)


@pytest.mark.parametrize("rho", [1e-3, 0.37, 20.0])
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("name", ["identity", "inpaint", "blur"])
def test_prox_data_optimality(x64, rng, name, convention, rho):
    h, w = 17, 23
    op = _make_ops(rng, h, w, (5, 7), convention=convention)[name]
    y = jnp.asarray(rng.standard_normal((h, w, 3)))
    z = jnp.asarray(rng.standard_normal((h, w, 3)))
    x = _prox(op, z, y, rho)
    assert _prox_residual(op, x, y, z, rho) < 1e-10


def test_inpaint_bool_mask_keeps_float64_precision(x64, rng):
    """A boolean mask is the natural way to give a pixel mask; in float64 mode the prox must
    then be as accurate as with a float mask. (Fails while Inpaint.create casts boolean masks
    to float32: m * m + rho is then rounded to float32, residual ~1e-8.)"""
    op = Inpaint.create(rng.random((17, 23)) > 0.4)
    y = jnp.asarray(rng.standard_normal((17, 23, 3)))
    z = jnp.asarray(rng.standard_normal((17, 23, 3)))
    x = _prox(op, z, y, 0.37)
    assert x.dtype == jnp.float64
    assert _prox_residual(op, x, y, z, 0.37) < 1e-10


@pytest.mark.parametrize("rho", [1e-3, 0.37, 20.0])
@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_downsample_prox_data_optimality(x64, rng, factor, convention, rho):
    h, w = 24, 36
    op = Downsample.from_kernel(_kernel(rng, 7, 5), (h, w), factor, convention)
    y = jnp.asarray(rng.standard_normal((h // factor, w // factor, 3)))
    z = jnp.asarray(rng.standard_normal((h, w, 3)))
    x = _prox(op, z, y, rho)
    assert _prox_residual(op, x, y, z, rho) < 1e-10


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("factor,h,w", [(2, 6, 8), (3, 6, 9)])
def test_downsample_prox_data_equals_dense_solve(x64, rng, factor, h, w, convention):
    op = Downsample.from_kernel(_kernel(rng, 3, 5), (h, w), factor, convention)
    in_shape, out_shape = (h, w, 1), (h // factor, w // factor, 1)
    a = _dense(op, in_shape, out_shape)
    # the dense matrix of the adjoint is the transpose of the forward one
    np.testing.assert_allclose(_dense(op.adjoint, out_shape, in_shape), a.T, atol=1e-14)
    rho = 0.05
    y, z = rng.standard_normal(out_shape), rng.standard_normal(in_shape)
    ref = np.linalg.solve(a.T @ a + rho * np.eye(a.shape[1]), a.T @ y.ravel() + rho * z.ravel())
    got = np.asarray(_prox(op, z, y, rho)).ravel()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-11 * np.abs(ref).max())


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_blur_prox_data_equals_dense_solve(x64, rng, convention):
    op = Blur.from_kernel(_kernel(rng, 3, 5), (5, 7), convention)
    a = _dense(op, (5, 7, 1), (5, 7, 1))
    rho = 0.05
    y, z = rng.standard_normal((5, 7, 1)), rng.standard_normal((5, 7, 1))
    ref = np.linalg.solve(a.T @ a + rho * np.eye(35), a.T @ y.ravel() + rho * z.ravel())
    got = np.asarray(_prox(op, z, y, rho)).ravel()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-11 * np.abs(ref).max())


# ------------------------------------------------------------------------------- lipschitz


@pytest.mark.parametrize(
    "make",
    [
        lambda k: Blur.from_kernel(k, (6, 7)),
        lambda k: Blur.from_kernel(k, (6, 7), "correlation"),
        lambda k: Downsample.from_kernel(k, (6, 8), 2),
        lambda k: Downsample.from_kernel(k, (6, 9), 3, "correlation"),
    ],
    ids=["blur-conv", "blur-corr", "down2", "down3-corr"],
)
def test_lipschitz_is_largest_eigenvalue(x64, rng, make):
    op = make(_kernel(rng, 3, 5))
    h, w = op.shape
    out_shape = (h // op.factor, w // op.factor, 1) if isinstance(op, Downsample) else (h, w, 1)
    a = _dense(op, (h, w, 1), out_shape)
    lam_max = np.linalg.eigvalsh(a.T @ a).max()
    assert float(op.lipschitz()) == pytest.approx(lam_max, rel=1e-12)


def test_inpaint_and_identity_lipschitz(x64, rng):
    mask = rng.random((5, 6)) * 0.8
    assert float(Inpaint.create(mask).lipschitz()) == pytest.approx((mask**2).max(), rel=1e-12)
    assert float(Identity.create((5, 6)).lipschitz()) == 1.0


# -------------------------------------------------------------------------- vmap over ops


def test_vmap_over_blur_operators_equals_loop(x64, rng):
    shape = (17, 23)
    kernels = np.stack([_kernel(rng, 5, 7) for _ in range(4)])
    ops = jax.vmap(lambda k: Blur.from_kernel(k, shape, "correlation"))(jnp.asarray(kernels))
    xs = jnp.asarray(rng.standard_normal((4, 17, 23, 3)))
    zs = jnp.asarray(rng.standard_normal((4, 17, 23, 3)))
    rho = jnp.asarray([0.1, 0.5, 1.0, 3.0])
    fwd = jax.jit(jax.vmap(_fwd))(ops, xs)
    adj = jax.vmap(lambda op, x: op.adjoint(x))(ops, xs)  # eager vmap too
    prox = jax.jit(jax.vmap(_prox))(ops, zs, xs, rho)
    lip = jax.vmap(lambda op: op.lipschitz())(ops)
    for i, k in enumerate(kernels):
        op = Blur.from_kernel(k, shape, "correlation")
        np.testing.assert_allclose(fwd[i], _fwd(op, xs[i]), atol=1e-14)
        np.testing.assert_allclose(adj[i], _adj(op, xs[i]), atol=1e-14)
        np.testing.assert_allclose(prox[i], _prox(op, zs[i], xs[i], float(rho[i])), atol=1e-13)
        np.testing.assert_allclose(lip[i], op.lipschitz(), rtol=1e-14)
    # the kernels differ, so the outputs must too (guards against a broadcast of kernel 0)
    assert float(jnp.max(jnp.abs(fwd[1] - fwd[0]))) > 1e-3


def test_vmap_over_downsample_operators_equals_loop(x64, rng):
    kernels = np.stack([_kernel(rng, 5, 5) for _ in range(3)])
    ops = jax.vmap(lambda k: Downsample.from_kernel(k, (24, 36), 3))(jnp.asarray(kernels))
    xs = jnp.asarray(rng.standard_normal((3, 24, 36, 3)))
    ys = jnp.asarray(rng.standard_normal((3, 8, 12, 3)))
    fwd = jax.jit(jax.vmap(_fwd))(ops, xs)
    adj = jax.jit(jax.vmap(_adj))(ops, ys)
    prox = jax.jit(jax.vmap(lambda op, z, y: op.prox_data(z, y, 0.2)))(ops, xs, ys)
    for i, k in enumerate(kernels):
        op = Downsample.from_kernel(k, (24, 36), 3)
        np.testing.assert_allclose(fwd[i], _fwd(op, xs[i]), atol=1e-14)
        np.testing.assert_allclose(adj[i], _adj(op, ys[i]), atol=1e-14)
        np.testing.assert_allclose(prox[i], _prox(op, xs[i], ys[i], 0.2), atol=1e-13)


def test_jit_does_not_retrace_per_operator(rng):
    traces = []

    @jax.jit
    def apply(op, x):
        traces.append(1)  # runs only while tracing
        return op.adjoint(op(x))

    x = jnp.asarray(rng.standard_normal((17, 23, 3)), jnp.float32)
    outs = [apply(Blur.from_kernel(_kernel(rng, 5, 7).astype(np.float32), (17, 23)), x) for _ in range(3)]
    assert len(traces) == 1
    assert float(jnp.max(jnp.abs(outs[0] - outs[1]))) > 0  # really different kernels


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "kernel",
    [
        np.array([[0.2, -0.1, 0.2], [0.2, 0.3, 0.2]]),
        np.array([[0.2, np.nan, 0.2], [0.2, 0.3, 0.2]]),
        np.array([[0.2, np.inf, 0.2], [0.2, 0.3, 0.2]]),
        np.zeros((3, 3)),
        np.ones((18, 3)) / 54,  # taller than the 17-row image
        np.ones((3, 24)) / 72,  # wider than the 23-column image
        np.ones(5) / 5,  # not 2-D
        np.ones((0, 3)),
    ],
    ids=["negative", "nan", "inf", "zeros", "too-tall", "too-wide", "1d", "empty"],
)
def test_from_kernel_rejects_bad_kernels(kernel):
    with pytest.raises(ValueError):
        Blur.from_kernel(kernel, (17, 23))
    if np.ndim(kernel) == 2 and np.size(kernel) and np.all(np.isfinite(kernel)) and kernel.min() < 0:
        # resampling kernels (bicubic) have negative lobes: Downsample accepts them
        Downsample.from_kernel(kernel, (16, 22), 2)
        return
    with pytest.raises(ValueError):
        Downsample.from_kernel(kernel, (16, 22), 2)


def test_downsample_rejects_zero_sum_kernel():
    with pytest.raises(ValueError, match="sums to zero"):
        Downsample.from_kernel(np.array([[0.5, -0.5], [0.25, -0.25]]), (16, 22), 2)


def test_unknown_convention_raises():
    k = np.ones((3, 3)) / 9
    with pytest.raises(ValueError, match="convention"):
        Blur.from_kernel(k, (17, 23), "convolve")
    with pytest.raises(ValueError, match="convention"):
        Downsample.from_kernel(k, (18, 24), 2, "corr")


@pytest.mark.parametrize("bad_shape", [(17, 22, 3), (16, 23, 3), (17, 23), (1, 17, 23, 3)])
@pytest.mark.parametrize("name", ["identity", "inpaint", "blur"])
def test_wrong_input_shape_raises(rng, name, bad_shape):
    op = _make_ops(rng, 17, 23)[name]
    x = jnp.zeros(bad_shape)
    with pytest.raises(ValueError, match="shape"):
        op(x)
    with pytest.raises(ValueError, match="shape"):
        op.adjoint(x)
    good = jnp.zeros((17, 23, 3))
    with pytest.raises(ValueError, match="z must have shape"):
        op.prox_data(x, good, 1.0)
    with pytest.raises(ValueError, match="y must have shape"):
        op.prox_data(good, x, 1.0)


@pytest.mark.parametrize("bad_shape", [(18, 22, 3), (16, 24, 3), (18, 24), (1, 18, 24, 3)])
def test_downsample_wrong_high_res_shape_raises(bad_shape):
    op = Downsample.from_kernel(np.ones((3, 3)) / 9, (18, 24), 2)
    with pytest.raises(ValueError, match="shape"):
        op(jnp.zeros(bad_shape))
    with pytest.raises(ValueError, match="shape"):
        op.prox_data(jnp.zeros(bad_shape), jnp.zeros((9, 12, 3)), 1.0)


@pytest.mark.parametrize("bad_shape", [(18, 24, 3), (9, 11, 3), (9, 12), (1, 9, 12, 3)])
def test_downsample_wrong_low_res_shape_raises(bad_shape):
    op = Downsample.from_kernel(np.ones((3, 3)) / 9, (18, 24), 2)
    with pytest.raises(ValueError, match="shape"):
        op.adjoint(jnp.zeros(bad_shape))
    with pytest.raises(ValueError, match="shape"):
        op.prox_data(jnp.zeros((18, 24, 3)), jnp.zeros(bad_shape), 1.0)


@pytest.mark.parametrize("shape,factor", [((17, 24), 2), ((18, 23), 2), ((18, 24), 5), ((18, 24), 0), ((18, 24), 1.5)])
def test_downsample_bad_factor_raises(shape, factor):
    with pytest.raises(ValueError):
        Downsample.from_kernel(np.ones((3, 3)) / 9, shape, factor)


def test_bad_image_shape_raises():
    with pytest.raises(ValueError):
        Identity.create((17,))
    with pytest.raises(ValueError):
        Blur.from_kernel(np.ones((3, 3)), (0, 5))
    with pytest.raises(ValueError):
        Inpaint.create(np.ones((4, 5, 3)))


def test_a_stack_of_operators_applied_without_vmap_is_an_error():
    import jax
    import jax.numpy as jnp
    import numpy as np
    import pytest

    from jaxrestore import kernels
    from jaxrestore.operators import Blur, Downsample, Inpaint

    ks = jnp.stack([jnp.asarray(kernels.gaussian(5, s), jnp.float32) for s in (0.8, 1.2, 1.6)])
    x = jnp.asarray(np.random.default_rng(0).random((32, 32, 3)), jnp.float32)
    blurs = jax.vmap(lambda k: Blur.from_kernel(k, (32, 32)))(ks)
    downs = jax.vmap(lambda k: Downsample.from_kernel(k, (32, 32), 2))(ks)
    masks = jax.vmap(lambda k: Inpaint.create(jnp.ones((32, 32)) * k[2, 2]))(ks)
    for ops in (blurs, downs, masks):
        for method in ("__call__", "adjoint", "gram"):
            arg = x if not (ops is downs and method == "adjoint") else x[::2, ::2]
            with pytest.raises(ValueError, match="batch of 3 operators.*jax.vmap"):
                getattr(ops, method)(arg)
    # the vmapped form is the right one, and equals one operator at a time
    ys = jax.vmap(lambda op, v: op(v))(blurs, jnp.stack([x] * 3))
    one = Blur.from_kernel(ks[1], (32, 32))(x)
    np.testing.assert_allclose(np.asarray(ys[1]), np.asarray(one), atol=1e-6)
