"""Scaled PnP-ADMM: convergence to independently computed minimisers when the denoiser is an
exact prox, the data step's prox optimality, one step against a numpy reference, the bicubic
initialisation, jit/vmap over operators, the DPIR schedule, gradients with respect to the
denoiser's parameters against finite differences, and input validation."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import lsq_linear

from jaxrestore import kernels
from jaxrestore.operators import Blur, Downsample, Identity, Inpaint
from jaxrestore.solvers import ADMMParams, ADMMState, admm, admm_map, initial_estimate, pnp_admm, pnp_schedule, run
from jaxrestore.solvers.admm import SIGMA_FLOOR


def _kernel(rng, kh, kw):
    """A random non-negative kernel with no symmetry, summing to one."""
    k = rng.random((kh, kw)) ** 2
    return k / k.sum()


def _blur_np(x, k):
    """Circular convolution by its definition, ``sum_a k[a] x[i - (a - c)]`` (numpy only)."""
    kh, kw = k.shape
    out = np.zeros_like(x)
    for a, b in itertools.product(range(kh), range(kw)):
        out += k[a, b] * np.roll(x, (a - kh // 2, b - kw // 2), axis=(0, 1))
    return out


def _dense_np(k, h, w, s):
    """Matrix of ``x -> blur(x)[::s, ::s]`` on one ``(h, w)`` channel, from basis images."""
    cols = [_blur_np(e.reshape(h, w, 1), k)[::s, ::s].ravel() for e in np.eye(h * w)]
    return np.stack(cols, axis=1)


def _otf_np(k, h, w):
    pad = np.zeros((h, w))
    pad[: k.shape[0], : k.shape[1]] = k
    return np.fft.fft2(np.roll(pad, (-(k.shape[0] // 2), -(k.shape[1] // 2)), axis=(0, 1)))


def _make_op(k, shape, factor):
    return Blur.from_kernel(k, shape) if factor == 1 else Downsample.from_kernel(k, shape, factor)


def _shrink(net, v, sigma):
    """The exact prox of ``(mu sigma^2 / 2) ||.||^2``: a "denoiser" with a known objective."""
    return v / (1.0 + net["mu"] * sigma**2)


def _affine(net, v, sigma):
    """A tiny parametric denoiser with a nonlinearity and a sigma dependence."""
    return net["a"] * jnp.tanh(v) + net["b"] * sigma


def _run(op, denoiser, y, params, k):
    return jax.jit(lambda op, y, p: run(admm(op, denoiser), y, p, num_iters=k))(op, y, params)


# --------------------------------------------------------------- convergence to a minimiser


@pytest.mark.parametrize("factor,shape", [(1, (17, 23)), (2, (10, 14)), (3, (9, 15))], ids=["blur", "sr-x2", "sr-x3"])
def test_converges_to_quadratic_minimiser(x64, rng, factor, shape):
    """z = prox of g/rho with g = (rho mu sigma^2 / 2)||.||^2, so ADMM must reach
    argmin 1/2||A x - y||^2 + (c/2)||x||^2 with c = rho mu sigma^2, computed here by a numpy FFT
    (blur) or a dense float64 solve (blur + decimation) on odd sizes where allowed."""
    h, w = shape
    c_img = 2
    k = _kernel(rng, 5, 3)
    op = _make_op(k, shape, factor)
    y = rng.random((h // factor, w // factor, c_img))
    net, sigma, rho = {"mu": 0.4}, 0.5, 1.0
    c = rho * net["mu"] * sigma**2
    if factor == 1:
        fk = _otf_np(k, h, w)[..., None]
        ref = np.real(np.fft.ifft2(np.conj(fk) * np.fft.fft2(y, axes=(0, 1)) / (np.abs(fk) ** 2 + c), axes=(0, 1)))
    else:
        a = _dense_np(k, h, w, factor)
        ref = np.linalg.solve(a.T @ a + c * np.eye(h * w), a.T @ y.reshape(-1, c_img)).reshape(h, w, c_img)
    state = _run(op, _shrink, y, ADMMParams(net, sigma, rho), 400)
    err = np.abs(np.asarray(state.x) - ref).max() / np.abs(ref).max()
    assert err < 1e-9
    # at the fixed point the denoised iterate agrees with the primal one
    np.testing.assert_allclose(_shrink(net, state.x + state.u, sigma), state.x, atol=1e-9)


def test_converges_to_box_constrained_least_squares(x64, rng):
    """With the projection onto [0, 1] as denoiser, ADMM solves min 1/2||A x - y||^2 over the
    box; scipy's bounded least squares on the dense matrix is the reference. The observation
    comes from an image outside the box so that constraints are active."""
    h, w = 9, 11
    k = _kernel(rng, 3, 5)
    op = Blur.from_kernel(k, (h, w))
    x_true = 1.6 * rng.random((h, w, 1)) - 0.3
    y = _blur_np(x_true, k) + 0.01 * rng.standard_normal((h, w, 1))
    ref = lsq_linear(_dense_np(k, h, w, 1), y.ravel(), bounds=(0.0, 1.0), method="bvls", tol=1e-14).x
    assert np.mean((ref == 0) | (ref == 1)) > 0.1  # the constraint matters
    clip = lambda net, v, s: jnp.clip(v, 0.0, 1.0)  # noqa: E731
    state = _run(op, clip, y, ADMMParams(None, 0.1, 0.3), 3000)
    np.testing.assert_allclose(np.asarray(state.x).ravel(), ref, atol=1e-7)


# ---------------------------------------------------------------------------- one step


def _random_state(rng, op, c=3):
    h, w = op.shape
    obs = op.low_shape if isinstance(op, Downsample) else op.shape
    return ADMMState(jnp.asarray(rng.random((h, w, c))), jnp.asarray(0.1 * rng.standard_normal((h, w, c))),
                     jnp.asarray(rng.random(obs + (c,))))


_OPS = {
    "identity": lambda rng: Identity.create((11, 13)),
    "inpaint": lambda rng: Inpaint.create((rng.random((11, 13)) > 0.3).astype(float)),
    "blur": lambda rng: Blur.from_kernel(_kernel(rng, 5, 3), (11, 13)),
    "sr-x2": lambda rng: Downsample.from_kernel(kernels.bicubic(2), (12, 14), 2),
    "sr-x3": lambda rng: Downsample.from_kernel(_kernel(rng, 5, 5), (9, 15), 3),
}


@pytest.mark.parametrize("name", list(_OPS))
def test_data_step_is_prox_optimal(x64, rng, name):
    """After one step, x' minimises 1/2||A x - y||^2 + rho/2||x - (z - u)||^2 with
    z = D(x + u): the gradient vanishes (u != 0, so the signs of u are tested)."""
    op = _OPS[name](rng)
    state = _random_state(rng, op)
    net, sigma, rho = {"a": 0.9, "b": 0.3}, 0.2, 0.37
    new = jax.jit(admm(op, _affine).step)(state, ADMMParams(net, sigma, rho))
    v = _affine(net, state.x + state.u, sigma) - state.u

    def objective(x):
        r = op(x) - state.y
        return 0.5 * jnp.sum(r * r) + 0.5 * rho * jnp.sum((x - v) ** 2)

    grad = jax.jit(jax.grad(objective))
    assert float(jnp.linalg.norm(grad(new.x))) < 1e-10 * float(jnp.linalg.norm(v))
    # the gradient is not small elsewhere (guards against a vacuous check)
    assert float(jnp.linalg.norm(grad(state.x))) > 1e-2


@pytest.mark.parametrize("factor,shape", [(1, (11, 13)), (3, (9, 15))], ids=["blur", "sr-x3"])
def test_step_matches_numpy_reference(x64, rng, factor, shape):
    """z = D(x + u); x' = (A^T A + rho I)^-1 (A^T y + rho (z - u)); u' = u + x' - z, in numpy."""
    h, w = shape
    k = _kernel(rng, 5, 3)
    op = _make_op(k, shape, factor)
    state = _random_state(rng, op, c=2)
    net, sigma, rho = {"a": 1.1, "b": -0.4}, 0.15, 0.8
    new = jax.jit(admm(op, _affine).step)(state, ADMMParams(net, sigma, rho))

    x, u, y = (np.asarray(a) for a in state[:3])
    z = net["a"] * np.tanh(x + u) + net["b"] * sigma
    v = z - u
    if factor == 1:
        fk = _otf_np(k, h, w)[..., None]
        num = np.conj(fk) * np.fft.fft2(y, axes=(0, 1)) + rho * np.fft.fft2(v, axes=(0, 1))
        x_ref = np.real(np.fft.ifft2(num / (np.abs(fk) ** 2 + rho), axes=(0, 1)))
    else:
        a = _dense_np(k, h, w, factor)
        rhs = a.T @ y.reshape(-1, 2) + rho * v.reshape(-1, 2)
        x_ref = np.linalg.solve(a.T @ a + rho * np.eye(h * w), rhs).reshape(h, w, 2)
    u_ref = u + x_ref - z
    np.testing.assert_allclose(new.x, x_ref, atol=1e-12)
    np.testing.assert_allclose(new.u, u_ref, atol=1e-12)
    np.testing.assert_allclose(new.x - (new.u - state.u), z, atol=1e-12)  # the implied z
    np.testing.assert_array_equal(new.y, state.y)


def test_admm_map_is_the_step_without_y(x64, rng):
    op = _OPS["sr-x2"](rng)
    state = _random_state(rng, op)
    params = ADMMParams({"a": 0.8, "b": 0.1}, 0.1, 0.5)
    f = admm_map(op, _affine, state.y)
    out = f(params, ADMMState(state.x, state.u))
    ref = admm(op, _affine).step(state, params)
    assert out.y is None
    np.testing.assert_allclose(out.x, ref.x, atol=1e-14)
    np.testing.assert_allclose(out.u, ref.u, atol=1e-14)
    with pytest.raises(ValueError, match="y=None"):
        f(params, state)


# -------------------------------------------------------------------------------- init


def _keys_upsample_1d(n_in, s, a=-0.5):
    """Interpolation matrix of bicubic upsampling by ``s`` with half-pixel centres (Keys 1981):
    output ``j`` at input coordinate ``(j + 1/2) / s - 1/2``; rows valid when all 4 taps exist."""
    out = np.zeros((n_in * s, n_in))
    valid = np.zeros(n_in * s, bool)
    for j in range(n_in * s):
        u = (j + 0.5) / s - 0.5
        taps = np.arange(int(np.floor(u)) - 1, int(np.floor(u)) + 3)
        t = np.abs(taps - u)
        wt = np.where(t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a)
        valid[j] = taps.min() >= 0 and taps.max() < n_in
        for i, v in zip(taps, wt):
            if 0 <= i < n_in:
                out[j, i] = v
    return out, valid


def test_init_blur_is_y(rng):
    op = _OPS["blur"](rng)
    y = jnp.asarray(rng.random((11, 13, 3)), jnp.float32)
    state = admm(op, _affine).init(y)
    np.testing.assert_array_equal(state.x, y)
    np.testing.assert_array_equal(state.u, 0.0)
    np.testing.assert_array_equal(state.y, y)
    assert state.x.dtype == jnp.float32


@pytest.mark.parametrize("factor", [2, 4])
def test_init_sr_is_bicubic_upsampling(x64, rng, factor):
    h, w = 10, 7
    op = Downsample.from_kernel(kernels.bicubic(factor), (h * factor, w * factor), factor)
    y = rng.random((h, w, 3))
    state = admm(op, _affine).init(y)
    assert state.x.shape == (h * factor, w * factor, 3)
    mr, vr = _keys_upsample_1d(h, factor)
    mc, vc = _keys_upsample_1d(w, factor)
    ref = np.einsum("ij,jkc,lk->ilc", mr, y, mc)
    assert vr.sum() >= 10 and vc.sum() >= 8
    np.testing.assert_allclose(np.asarray(state.x)[vr][:, vc], ref[vr][:, vc], atol=1e-12)
    np.testing.assert_array_equal(state.u, 0.0)


def test_init_sr_x3_is_consistent_with_bicubic_degradation(x64, rng):
    """Without antialiasing the x3 bicubic kernel is a shifted delta (pure decimation at offset 1)
    and the bicubic upsampling interpolates: A x0 = y exactly, borders included."""
    op = Downsample.from_kernel(kernels.bicubic(3), (21, 15), 3)
    y = rng.random((7, 5, 3))
    x0 = initial_estimate(op, y)
    np.testing.assert_allclose(op(x0), y, atol=1e-13)
    assert float(jnp.abs(x0[0::3, 0::3] - y).max()) > 1e-2  # the other phases are interpolated


def test_init_custom_x0(rng):
    op = _OPS["sr-x2"](rng)
    y = jnp.asarray(rng.random((6, 7, 3)), jnp.float32)
    state = admm(op, _affine, x0=op.adjoint).init(y)
    np.testing.assert_allclose(state.x, op.adjoint(y), atol=1e-6)
    with pytest.raises(ValueError, match="x0"):
        admm(op, _affine, x0=lambda y: y).init(y)


# ----------------------------------------------------------------------- jit / vmap


@pytest.mark.parametrize("factor", [1, 2])
def test_vmap_over_operators_and_observations(rng, factor):
    shape = (12, 14)
    ks = np.stack([_kernel(rng, 5, 5) for _ in range(3)]).astype(np.float32)
    obs = (shape[0] // factor, shape[1] // factor)
    ys = jnp.asarray(rng.random((3,) + obs + (3,)), jnp.float32)
    params = ADMMParams({"a": jnp.float32(0.9), "b": jnp.float32(0.05)}, 0.1, 0.5)

    @jax.jit
    def restore(k, y):
        op = _make_op(k, shape, factor)
        return run(admm(op, _affine), y, params, num_iters=5).x

    xs = jax.vmap(restore)(jnp.asarray(ks), ys)
    for i in range(3):
        np.testing.assert_allclose(xs[i], restore(ks[i], ys[i]), atol=1e-5)
    # per-image kernels: the same y with two kernels must restore differently
    same = jax.vmap(restore)(jnp.asarray(ks[:2]), jnp.stack([ys[0], ys[0]]))
    assert float(jnp.abs(same[0] - same[1]).max()) > 1e-3


# -------------------------------------------------------------------------- schedule


def test_pnp_schedule_matches_dpir(x64):
    """DPIR's get_rho_sigma: logspace on the 0-255 scale from 49 to the noise level,
    rho = lam noise^2 / sigma^2."""
    k, noise, lam = 8, 0.01, 0.23
    sched = pnp_schedule(k, noise, lam=lam)
    ref_sigma = np.logspace(np.log10(49.0), np.log10(noise * 255), k) / 255
    np.testing.assert_allclose(sched.sigma, ref_sigma, rtol=1e-12)
    np.testing.assert_allclose(sched.rho, lam * noise**2 / ref_sigma**2, rtol=1e-12)
    assert sched.sigma.shape == sched.rho.shape == (k,) and sched.net is None
    assert np.all(np.diff(np.asarray(sched.sigma)) < 0) and np.all(np.diff(np.asarray(sched.rho)) > 0)
    assert float(sched.sigma[0]) == pytest.approx(49 / 255, rel=1e-14)
    assert float(sched.sigma[-1]) == pytest.approx(noise, rel=1e-12)
    ratios = np.asarray(sched.sigma[1:] / sched.sigma[:-1])
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-12)  # geometric


def test_pnp_schedule_floor_and_sigma_min(x64):
    sched = pnp_schedule(5, 0.0)
    assert float(sched.sigma[-1]) == pytest.approx(SIGMA_FLOOR, rel=1e-12)
    assert np.all(np.isfinite(sched.rho)) and np.all(np.asarray(sched.rho) > 0)
    sr = pnp_schedule(24, 0.0, sigma_min=3 / 255)  # DPIR's super-resolution end point
    assert float(sr.sigma[-1]) == pytest.approx(3 / 255, rel=1e-12)
    np.testing.assert_allclose(sr.rho, 0.23 * SIGMA_FLOOR**2 / np.asarray(sr.sigma) ** 2, rtol=1e-12)
    one = pnp_schedule(1, 0.05)
    assert float(one.sigma[0]) == pytest.approx(49 / 255, rel=1e-12)


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((8, -0.01), {}, "noise_sigma"),
        ((8, float("nan")), {}, "noise_sigma"),
        ((8, 0.01), {"sigma_max": 0.0}, "sigma_max"),
        ((8, 0.01), {"sigma_max": float("inf")}, "sigma_max"),
        ((8, 0.01), {"lam": -1.0}, "lam"),
        ((8, 0.01), {"sigma_min": -0.1}, "sigma_min"),
        ((8, 0.5), {}, "sigma_max"),  # noise above sigma_max: not a decreasing schedule
        ((0, 0.01), {}, "num_iters"),
        ((8.0, 0.01), {}, "num_iters"),
        ((8, np.array([0.01, 0.02])), {}, "scalar"),
    ],
)
def test_pnp_schedule_rejects_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pnp_schedule(*args, **kwargs)


def test_pnp_admm_follows_the_schedule(x64, rng):
    op = _OPS["blur"](rng)
    y = jnp.asarray(rng.random((11, 13, 3)))
    net = {"a": 0.95, "b": 0.02}
    x, hist = pnp_admm(op, _affine, net, y, noise_sigma=0.02, num_iters=6, trace=lambda s: s.x)
    sched = pnp_schedule(6, 0.02)
    solver = admm(op, _affine)
    state, step = solver.init(y), jax.jit(solver.step)
    for i in range(6):
        state = step(state, ADMMParams(net, sched.sigma[i], sched.rho[i]))
        np.testing.assert_allclose(hist[i], state.x, atol=1e-12)
    np.testing.assert_allclose(x, state.x, atol=1e-12)
    # a different schedule gives a different result
    other = pnp_admm(op, _affine, net, y, noise_sigma=0.02, num_iters=6, lam=2.0)
    assert float(jnp.abs(other - x).max()) > 1e-3


def test_pnp_admm_keeps_float32(x64, rng):
    """A float64 schedule (x64 on) must not promote a float32 image's scan carry."""
    op = Blur.from_kernel(_kernel(rng, 5, 5).astype(np.float32), (11, 13))
    y = jnp.asarray(rng.random((11, 13, 3)), jnp.float32)
    x = pnp_admm(op, _affine, {"a": jnp.float32(0.9), "b": jnp.float32(0.0)}, y, noise_sigma=0.01)
    assert x.dtype == jnp.float32


# ------------------------------------------------------------------------- gradients


def _fd_check(loss, net, eps=1e-6):
    grad = jax.grad(loss)(net)
    for name in net:
        plus, minus = dict(net), dict(net)
        plus[name] = net[name] + eps
        minus[name] = net[name] - eps
        fd = (loss(plus) - loss(minus)) / (2 * eps)
        assert np.isfinite(float(grad[name]))
        assert float(grad[name]) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)
        assert abs(float(fd)) > 1e-4  # the parameter really matters


@pytest.mark.parametrize("factor", [1, 2])
def test_gradient_wrt_denoiser_params_matches_finite_differences(x64, rng, factor):
    shape = (10, 12)
    op = _make_op(_kernel(rng, 3, 5), shape, factor)
    obs = (shape[0] // factor, shape[1] // factor)
    y = jnp.asarray(rng.random(obs + (2,)))
    target = jnp.asarray(rng.random(shape + (2,)))
    net = {"a": jnp.asarray(0.9), "b": jnp.asarray(0.3)}

    @jax.jit
    def unrolled(net):
        x = run(admm(op, _affine), y, ADMMParams(net, 0.1, 0.4), num_iters=4).x
        return jnp.sum((x - target) ** 2)

    @jax.jit
    def scheduled(net):
        return jnp.sum((pnp_admm(op, _affine, net, y, noise_sigma=0.05, num_iters=4) - target) ** 2)

    @jax.jit
    def mapped(net):  # the fixed-point map must route gradients through params, not a closure
        f = admm_map(op, _affine, y)
        s = admm(op, _affine).init(y)._replace(y=None)
        for _ in range(4):
            s = f(ADMMParams(net, 0.1, 0.4), s)
        return jnp.sum((s.x - target) ** 2)

    for loss in (unrolled, scheduled, mapped):
        _fd_check(loss, net)
    np.testing.assert_allclose(jax.grad(mapped)(net)["a"], jax.grad(unrolled)(net)["a"], rtol=1e-12)


# ------------------------------------------------------------------------ validation


def test_bad_inputs_raise(rng):
    op = _OPS["blur"](rng)
    sr = _OPS["sr-x2"](rng)
    solver = admm(op, _affine)
    good = np.asarray(rng.random((11, 13, 3)), np.float32)
    bad = good.copy()
    bad[2, 3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        solver.init(bad)
    with pytest.raises(ValueError, match="shape"):
        solver.init(good[:, :12])
    with pytest.raises(ValueError, match="shape"):
        solver.init(good[..., 0])
    with pytest.raises(ValueError, match="floating"):
        solver.init(good.astype(np.int32))
    with pytest.raises(ValueError, match=r"\(6, 7, C\)"):
        admm(sr, _affine).init(np.zeros((12, 14, 3), np.float32))  # high-res y for SR
    with pytest.raises(ValueError, match="NaN"):
        admm_map(op, _affine, bad)
    state = solver.init(good)
    net = {"a": 1.0, "b": 0.0}
    with pytest.raises(ValueError, match="sigma"):
        solver.step(state, ADMMParams(net, -0.1, 1.0))
    with pytest.raises(ValueError, match="rho"):
        solver.step(state, ADMMParams(net, 0.1, 0.0))
    with pytest.raises(ValueError, match="rho"):
        solver.step(state, ADMMParams(net, 0.1, float("nan")))
    with pytest.raises(ValueError, match="denoiser"):
        admm(op, lambda n, v, s: v[..., :1]).step(state, ADMMParams(net, 0.1, 1.0))
    with pytest.raises(ValueError, match="observation"):
        solver.step(state._replace(y=None), ADMMParams(net, 0.1, 1.0))
    with pytest.raises(ValueError, match="noise_sigma"):
        pnp_admm(op, _affine, net, good, noise_sigma=-0.01)
    with pytest.raises(ValueError, match="NaN"):
        pnp_admm(op, _affine, net, bad, noise_sigma=0.01)


def test_a_gray_image_given_to_the_rgb_denoiser_is_a_clear_error():
    import jax.numpy as jnp
    import pytest

    from jaxrestore import kernels
    from jaxrestore.models.drunet import DRUNetConfig, as_denoiser, create
    from jaxrestore.operators import Blur
    from jaxrestore.solvers import pnp_admm

    denoiser, params = as_denoiser(create(DRUNetConfig((4, 8), 1)))
    op = Blur.from_kernel(kernels.gaussian(5, 1.0), (16, 16))
    with pytest.raises(ValueError, match="does not take an image of shape \\(16, 16, 1\\).*repeat a gray image"):
        pnp_admm(op, denoiser, params, jnp.full((16, 16, 1), 0.5), noise_sigma=0.01, num_iters=2)
    x = pnp_admm(op, denoiser, params, jnp.full((16, 16, 3), 0.5), noise_sigma=0.01, num_iters=2)
    assert x.shape == (16, 16, 3)
