"""PnP gradient descent (jaxrestore.solvers.pnp_gd): one step against a float64 hand computation,
Adam on x against Adam written out by hand, the dihedral ensembles, the fixed point of an exact
quadratic regulariser, tolerance runs, vmap over operators, and bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrestore import kernels
from jaxrestore.operators import Blur, Downsample, Inpaint
from jaxrestore.solvers import pnp_gd, run, run_to_tolerance
from jaxrestore.solvers.pnp_gd import cycle_transforms, dihedral, dihedral_inverse, reg_initial_estimate


def _shift(params, x):
    """A non-equivariant linear 'gradient': params * (x shifted down one row) + 0.1 x."""
    return params * jnp.roll(x, 1, axis=0) + 0.1 * x


def _np_blur(x, k):
    """Circular convolution with the kernel centred, by numpy FFTs (the reference)."""
    h, w = x.shape[:2]
    img = np.zeros((h, w))
    kh, kw = k.shape
    img[:kh, :kw] = k
    img = np.roll(img, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    otf = np.fft.fft2(img)
    return np.real(np.fft.ifft2(np.fft.fft2(x, axes=(0, 1)) * otf[..., None], axes=(0, 1))), otf


def _np_adjoint(x, otf):
    return np.real(np.fft.ifft2(np.fft.fft2(x, axes=(0, 1)) * np.conj(otf)[..., None], axes=(0, 1)))


@pytest.fixture
def problem(rng):
    k = kernels.gaussian(7, 1.2)
    x = rng.uniform(0, 1, (12, 10, 3))
    y = _np_blur(x, k)[0] + 0.01 * rng.standard_normal(x.shape)
    return k, x, y


def test_one_gd_step_is_the_formula_in_float64(x64, problem):
    k, _, y = problem
    op = Blur.from_kernel(jnp.asarray(k, jnp.float64), y.shape)
    sigma, mu, a = 0.05, 0.7, 0.3
    solver = pnp_gd(op, _shift, sigma=sigma, mu=mu, optimizer="gd", ensemble=None)
    s1 = solver.step(solver.init(jnp.asarray(y, jnp.float64)), a)
    Ax, otf = _np_blur(y, k)
    grad = _np_adjoint(Ax - y, otf) + sigma**2 * (a * np.roll(y, 1, axis=0) + 0.1 * y)
    np.testing.assert_allclose(np.asarray(s1.x), y - mu * grad, rtol=1e-12, atol=1e-13)
    assert int(s1.k) == 1


def test_adam_on_x_is_adam_by_hand(x64, problem):
    k, _, y = problem
    op = Blur.from_kernel(jnp.asarray(k, jnp.float64), y.shape)
    sigma, mu, a = 0.05, 0.01, 0.3
    state = pnp_gd(op, _shift, sigma=sigma, mu=mu, optimizer="adam", ensemble=None)
    solver = state
    st = solver.init(jnp.asarray(y, jnp.float64))
    x, m, v = y.copy(), np.zeros_like(y), np.zeros_like(y)
    b1, b2, eps = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults
    for t in range(1, 5):
        st = solver.step(st, a)
        Ax, otf = _np_blur(x, k)
        g = _np_adjoint(Ax - y, otf) + sigma**2 * (a * np.roll(x, 1, axis=0) + 0.1 * x)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        x = x - mu * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        np.testing.assert_allclose(np.asarray(st.x), x, rtol=1e-10, atol=1e-12)


def test_dihedral_transforms_invert_on_non_square_images(rng):
    x = jnp.asarray(rng.uniform(size=(6, 4, 2)))
    outs = []
    for k in range(8):
        t = dihedral(x, k)
        np.testing.assert_array_equal(np.asarray(dihedral_inverse(t, k)), np.asarray(x))
        outs.append(np.asarray(t).tobytes())
    assert len(set(outs)) == 8  # eight distinct transforms
    assert cycle_transforms((6, 4)) == (0, 2, 4, 6) and cycle_transforms((5, 5)) == tuple(range(8))
    for j in cycle_transforms((6, 4)):
        assert dihedral(x, j).shape == x.shape


def test_cycle_on_a_non_square_image_keeps_the_shape(x64, rng):
    y = jnp.asarray(rng.uniform(size=(6, 4, 3)), jnp.float64)
    op = Inpaint.create(jnp.ones((6, 4), jnp.float64))
    solver = pnp_gd(op, _shift, sigma=1.0, mu=0.5, optimizer="gd", ensemble="cycle", x0=y)
    st, x = solver.init(y), np.asarray(y)
    for k in range(5):
        st = solver.step(st, 0.3)
        j = (0, 2, 4, 6)[k % 4]
        g = np.asarray(dihedral_inverse(_shift(0.3, dihedral(jnp.asarray(x), j)), j))
        x = x - 0.5 * ((x - np.asarray(y)) + g)
        np.testing.assert_allclose(np.asarray(st.x), x, rtol=1e-12, atol=1e-13)


def test_cycle_and_x8_ensembles(x64, rng):
    y = jnp.asarray(rng.uniform(size=(8, 8, 3)), jnp.float64)
    op = Inpaint.create(jnp.ones((8, 8), jnp.float64))  # A = I: the step isolates G's term
    mu, sigma, a = 0.5, 1.0, 0.3
    xs = [np.asarray(y)]
    solver = pnp_gd(op, _shift, sigma=sigma, mu=mu, optimizer="gd", ensemble="cycle", x0=y)
    st = solver.init(y)
    for k in range(10):  # more than 8: the cycle wraps around
        st = solver.step(st, a)
        x = xs[-1]
        j = k % 8
        t = np.rot90(x, j % 4, axes=(0, 1))
        t = np.flip(t, 1) if j >= 4 else t
        g = a * np.roll(t, 1, axis=0) + 0.1 * t
        g = np.flip(g, 1) if j >= 4 else g
        g = np.rot90(g, -(j % 4), axes=(0, 1))
        xs.append(x - mu * ((x - np.asarray(y)) + sigma**2 * g))
        np.testing.assert_allclose(np.asarray(st.x), xs[-1], rtol=1e-12, atol=1e-13)
    # x8: the average of the eight; for an equivariant G every ensemble is G itself
    s8 = pnp_gd(op, _shift, sigma=sigma, mu=mu, optimizer="gd", ensemble="x8", x0=y)
    one = s8.step(s8.init(y), a)
    ref = np.mean([np.asarray(dihedral_inverse(_shift(a, dihedral(y, j)), j)) for j in range(8)], axis=0)
    np.testing.assert_allclose(np.asarray(one.x), np.asarray(y) - mu * ref, rtol=1e-12)
    pointwise = lambda p, x: p * x  # noqa: E731
    outs = [np.asarray(pnp_gd(op, pointwise, sigma=sigma, mu=mu, optimizer="gd", ensemble=e, x0=y).step(
        pnp_gd(op, pointwise, sigma=sigma, mu=mu, ensemble=e, x0=y).init(y), a).x) for e in (None, "cycle", "x8")]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-13)
    np.testing.assert_allclose(outs[2], outs[0], rtol=1e-13)


def test_exact_quadratic_regulariser_converges_to_the_closed_form(x64, problem):
    """G(x) = x - c is the gradient of phi(x) = ||x - c||^2 / 2: gradient descent reaches
    (A^T A + sigma^2 I)^-1 (A^T y + sigma^2 c), computed in the Fourier domain."""
    k, _, y = problem
    c = 0.5
    op = Blur.from_kernel(jnp.asarray(k, jnp.float64), y.shape)
    sigma = 0.3
    solver = pnp_gd(op, lambda p, x: x - p, sigma=sigma, mu=1.0 / (1.0 + sigma**2), optimizer="gd", ensemble=None)
    state, info = run_to_tolerance(solver, jnp.asarray(y, jnp.float64), c, tol=1e-12, max_iters=5000)
    assert bool(info.converged)
    _, otf = _np_blur(y, k)
    rhs = np.fft.fft2(y, axes=(0, 1)) * np.conj(otf)[..., None] + sigma**2 * np.fft.fft2(np.full(y.shape, c), axes=(0, 1))
    exact = np.real(np.fft.ifft2(rhs / (np.abs(otf) ** 2 + sigma**2)[..., None], axes=(0, 1)))
    np.testing.assert_allclose(np.asarray(state.x), exact, atol=1e-9)
    # a cap too low is reported, not hidden
    _, short = run_to_tolerance(solver, jnp.asarray(y, jnp.float64), c, tol=1e-12, max_iters=3)
    assert not bool(short.converged) and int(short.iterations) == 3


def test_vmaps_over_operators_with_one_kernel_each(rng):
    ks = jnp.stack([jnp.asarray(kernels.gaussian(7, s), jnp.float32) for s in (0.8, 1.6)])
    ys = jnp.asarray(rng.uniform(size=(2, 16, 16, 3)), jnp.float32)

    def restore(k, y):
        op = Blur.from_kernel(k, y.shape)
        return run(pnp_gd(op, _shift, sigma=0.05, mu=0.01), y, 0.3, num_iters=5).x

    both = jax.jit(jax.vmap(restore))(ks, ys)
    for i in range(2):
        np.testing.assert_allclose(np.asarray(both[i]), np.asarray(restore(ks[i], ys[i])), rtol=1e-5, atol=1e-6)


def test_initial_estimates(rng):
    y = jnp.asarray(rng.uniform(size=(8, 8, 3)), jnp.float32)
    mask = (rng.uniform(size=(8, 8)) < 0.3).astype(np.float32)
    x0 = reg_initial_estimate(Inpaint.create(mask), y * mask[..., None])
    np.testing.assert_allclose(np.asarray(x0), np.where(mask[..., None] > 0, np.asarray(y), 0.5), rtol=1e-6)
    op = Downsample.from_kernel(kernels.bicubic(2, antialias=False), (16, 16), 2)
    assert reg_initial_estimate(op, y).shape == (16, 16, 3)
    blur = Blur.from_kernel(kernels.gaussian(5, 1.0), (8, 8))
    np.testing.assert_array_equal(np.asarray(reg_initial_estimate(blur, y)), np.asarray(y))


def test_bad_input_is_a_value_error(rng):
    op = Blur.from_kernel(kernels.gaussian(5, 1.0), (8, 8))
    y = jnp.asarray(rng.uniform(size=(8, 8, 3)), jnp.float32)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        pnp_gd(op, _shift, sigma=0.1, mu=0.1, optimizer="sgd")
    with pytest.raises(ValueError, match="ensemble must be"):
        pnp_gd(op, _shift, sigma=0.1, mu=0.1, ensemble="x4")
    with pytest.raises(ValueError, match="mu must be finite and > 0"):
        pnp_gd(op, _shift, sigma=0.1, mu=0.0)
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        pnp_gd(op, _shift, sigma=float("nan"), mu=0.1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        run(pnp_gd(op, _shift, sigma=0.1, mu=0.1), y.at[0, 0, 0].set(jnp.nan), 0.3, num_iters=2)
    with pytest.raises(ValueError, match="must return the image's shape"):
        run(pnp_gd(op, lambda p, x: x[..., :1], sigma=0.1, mu=0.1), y, 0.3, num_iters=2)
    with pytest.raises(ValueError, match=r"mask values must be finite and in \[0, 1\]"):
        Inpaint.create(np.full((8, 8), 1.5))
    with pytest.raises(ValueError, match=r"keep must be in \(0, 1\]"):
        Inpaint.random(jax.random.key(0), (8, 8), 0.0)
