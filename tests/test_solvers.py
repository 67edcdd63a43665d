"""Solvers: optimality conditions at the computed points, monotonicity, the interior-point
iterates' feasibility, schedules under jit/vmap, honest tolerance reports, and the Wiener filter's
normal equations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrestore import kernels
from jaxrestore.operators import Blur, Downsample, Identity, Inpaint
from jaxrestore.regularizers import tv_smooth_grad
from jaxrestore.solvers import (
    IPParams,
    constant_schedule,
    projected_gradient,
    proximal_interior_point,
    relative_change,
    run,
    run_to_tolerance,
    tv_objective,
    wiener,
)

H, W = 12, 14
LAM, DELTA = 0.02, 0.1


def _problem(rng, dtype=np.float64, kernel=None):
    """A blurred piecewise-constant image with a contrast stretch and noise, so that the box
    constraint [0, 1] is active at the solution (the unconstrained one leaves it)."""
    xt = (rng.random((H // 2, W // 2, 3)) > 0.5).repeat(2, 0).repeat(2, 1).astype(np.float64)
    k = kernels.gaussian(5, 1.0) if kernel is None else kernel
    op = Blur.from_kernel(np.asarray(k, dtype), (H, W))
    y = 1.5 * np.asarray(jax.jit(lambda op, x: op(x))(op, jnp.asarray(xt, dtype))) - 0.25
    y = y + 0.05 * rng.standard_normal((H, W, 3))
    return op, jnp.asarray(y, dtype)


def _smooth_grad(op, y, x, lam=LAM, delta=DELTA):
    return op.adjoint(op(x) - y) + lam * tv_smooth_grad(x, delta)


@jax.jit
def _pg_fixed_point_residual(op, y, x):
    """||x - P(x - tau grad f(x))|| / ||x||: zero exactly at the constrained minimiser."""
    tau = 1.0 / (op.lipschitz() + LAM * 8.0 / DELTA**2)
    return jnp.linalg.norm(x - jnp.clip(x - tau * _smooth_grad(op, y, x), 0.0, 1.0)) / jnp.linalg.norm(x)


@jax.jit(static_argnames=("accelerate", "n"))
def _pg_run(op, y, accelerate, n):
    trace = lambda s: tv_objective(op, y, s.x, LAM, DELTA)  # noqa: E731
    return run(projected_gradient(op, LAM, DELTA, accelerate=accelerate), y, num_iters=n, trace=trace)


# ------------------------------------------------------------------------ projected gradient


def test_projected_gradient_converges_to_the_constrained_minimiser(x64, rng):
    op, y = _problem(rng)
    state, obj = _pg_run(op, y, True, 500)
    obj = np.asarray(obj)
    x = state.x
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    active = float(jnp.mean((x == 0) | (x == 1)))
    assert active > 0.01  # the constraint matters in this problem
    # objective: far below the start, and the last value is the lowest seen (FISTA is not monotone)
    start = float(tv_objective(op, y, jnp.clip(y, 0, 1), LAM, DELTA))
    assert obj[-1] < 0.9 * start
    assert obj[-1] <= obj.min() + 1e-9 * abs(obj.min())
    # first-order optimality of the box-constrained problem
    assert float(_pg_fixed_point_residual(op, y, x)) < 1e-6
    # and the unconstrained gradient does not vanish (the projection does real work)
    assert float(jnp.linalg.norm(_smooth_grad(op, y, x))) > 1e-2


def test_plain_projected_gradient_is_monotone_and_agrees(x64, rng):
    op, y = _problem(rng)
    plain, obj = _pg_run(op, y, False, 1000)
    obj = np.asarray(obj)
    assert np.all(np.diff(obj) <= 1e-12 * np.abs(obj[1:]))
    assert obj[-1] < obj[0]
    assert float(_pg_fixed_point_residual(op, y, plain.x)) < 1e-9
    # the problem is strictly convex: FISTA and the plain iteration reach the same point
    fista, fobj = _pg_run(op, y, True, 1000)
    np.testing.assert_allclose(fista.x, plain.x, atol=1e-5)
    # acceleration pays: after 60 iterations FISTA's objective gap is far below the plain one's
    # (about 170x on this problem; a wrong extrapolation such as x + m (x - z) gives about 16x)
    best = min(obj.min(), np.asarray(fobj).min())
    assert np.asarray(fobj)[59] - best < (obj[59] - best) / 50


def test_projected_gradient_vmap_over_operators(x64, rng):
    ks = np.stack([kernels.gaussian(5, s) for s in (0.6, 1.0, 1.5)])
    ks[1] = np.roll(ks[1], 1, axis=1)  # one asymmetric kernel
    ops = jax.vmap(lambda k: Blur.from_kernel(k, (H, W)))(jnp.asarray(ks))
    ys = jnp.asarray(rng.random((3, H, W, 3)))
    lams = jnp.asarray([0.005, 0.02, 0.05])
    solve = jax.jit(jax.vmap(lambda op, y, lam: run(projected_gradient(op, lam, DELTA), y, num_iters=30).x))
    batch = solve(ops, ys, lams)
    for i in range(3):
        op = Blur.from_kernel(ks[i], (H, W))
        one = jax.jit(lambda op, y, lam: run(projected_gradient(op, lam, DELTA), y, num_iters=30).x)(op, ys[i], lams[i])
        np.testing.assert_allclose(batch[i], one, atol=1e-12)
    assert float(jnp.max(jnp.abs(batch[0] - batch[2]))) > 1e-3


def test_projected_gradient_under_jit_with_python_floats(rng):
    op, y = _problem(rng, np.float32)
    f = jax.jit(lambda y: run(projected_gradient(op, 0.01, 0.1), y, num_iters=5).x)
    g = jax.jit(lambda y, lam: run(projected_gradient(op, lam, 0.1), y, num_iters=5).x)
    np.testing.assert_allclose(f(y), g(y, 0.01), rtol=1e-6)


def test_projected_gradient_super_resolution(x64, rng):
    """With a Downsample operator the iterate lives on the high-resolution grid (x_0 = clip(A^T y))."""
    op = Downsample.from_kernel(kernels.gaussian(5, 1.0), (H, W), 2)
    y = jnp.asarray(rng.random((H // 2, W // 2, 3)))
    state = jax.jit(lambda op, y: run(projected_gradient(op, LAM, DELTA), y, num_iters=400))(op, y)
    assert state.x.shape == (H, W, 3)
    assert float(_pg_fixed_point_residual(op, y, state.x)) < 1e-5


def test_projected_gradient_rejects_bad_parameters(rng):
    op, _ = _problem(rng, np.float32)
    for lam, delta in ((-1.0, 0.1), (float("nan"), 0.1), (0.1, 0.0), (0.1, -0.1)):
        with pytest.raises(ValueError):
            projected_gradient(op, lam, delta)


# ---------------------------------------------------------------------- interior point


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_interior_point_iterates_strictly_inside(rng, dtype):
    with jax.enable_x64(dtype == np.float64):
        op, _ = _problem(rng, dtype)
        y = jnp.asarray(5.0 * rng.standard_normal((H, W, 3)), dtype)  # far outside [0, 1]
        params = IPParams(jnp.asarray(1e-3, dtype), jnp.asarray(0.1, dtype), jnp.asarray(LAM, dtype))
        solve = jax.jit(lambda op, y: run(proximal_interior_point(op, DELTA), y, params, num_iters=40,
                                          trace=lambda s: (s.x.min(), s.x.max())))
        state, (lo, hi) = solve(op, y)
        lo, hi = np.asarray(lo), np.asarray(hi)
        assert np.all(lo > 0) and np.all(hi < 1), (lo.min(), hi.max())
        assert np.all(np.isfinite(np.asarray(state.x)))
        # the observation really pushes iterates against the bounds
        assert lo.min() < 1e-2 and hi.max() > 0.99


def test_interior_point_converges_to_the_barrier_problem_minimiser(x64, rng):
    """With fixed (mu, gamma, lam) the iteration is a proximal gradient method on
    f(x) + mu B(x): at its limit grad f(x) + mu (-1/x + 1/(1 - x)) = 0."""
    op, y = _problem(rng)
    mu = 1e-3
    gamma = 1.0 / (1.0 + LAM * 8.0 / DELTA**2)
    solve = jax.jit(lambda op, y: run_to_tolerance(proximal_interior_point(op, DELTA), y,
                                                   IPParams(mu, gamma, LAM), tol=1e-13, max_iters=1000))
    state, info = solve(op, y)
    x = state.x
    g = _smooth_grad(op, y, x)
    kkt = g + mu * (-1.0 / x + 1.0 / (1.0 - x))
    assert float(jnp.linalg.norm(kkt) / jnp.linalg.norm(g)) < 1e-7
    assert float(x.min()) < 0.05  # the barrier is active somewhere: the test can tell
    # close to the box-constrained minimiser (mu small)
    pg, _ = _pg_run(op, y, True, 500)
    assert float(jnp.max(jnp.abs(x - pg.x))) < 0.05


def test_interior_point_schedule_under_jit_and_vmap(rng):
    ks = np.stack([kernels.gaussian(5, 0.8), kernels.box(5, 3), kernels.gaussian(5, 1.5)]).astype(np.float32)
    ys = jnp.asarray(rng.random((3, H, W, 3)), jnp.float32)
    sched = constant_schedule(12, 1e-3, 0.1, LAM)
    assert sched.mu.shape == (12,)

    def solve(k, y):
        op = Blur.from_kernel(k, (H, W))
        return run(proximal_interior_point(op, DELTA), y, sched).x

    batch = jax.jit(jax.vmap(solve))(jnp.asarray(ks), ys)
    # the schedule equals stepping by hand with the same parameters
    for i in range(3):
        op = Blur.from_kernel(ks[i], (H, W))
        solver = proximal_interior_point(op, DELTA)
        step = jax.jit(solver.step)
        state = solver.init(ys[i])
        for _ in range(12):
            state = step(state, IPParams(1e-3, 0.1, LAM))
        np.testing.assert_allclose(batch[i], state.x, rtol=2e-5, atol=1e-6)


def test_varying_schedule_is_applied_per_iteration(rng):
    op, y = _problem(rng, np.float32)
    gammas = jnp.linspace(0.02, 0.1, 6, dtype=jnp.float32)
    sched = IPParams(jnp.full(6, 1e-3, jnp.float32), gammas, jnp.full(6, LAM, jnp.float32))
    solver = proximal_interior_point(op, DELTA)
    got = jax.jit(lambda y: run(solver, y, sched).x)(y)
    state = solver.init(y)
    step = jax.jit(solver.step)
    for g in gammas:
        state = step(state, IPParams(1e-3, g, LAM))
    np.testing.assert_allclose(got, state.x, rtol=2e-5, atol=1e-6)
    reversed_ = jax.jit(lambda y: run(solver, y, sched._replace(gamma=gammas[::-1])).x)(y)
    assert float(jnp.max(jnp.abs(reversed_ - got))) > 1e-4


# ------------------------------------------------------------------------ loops


def test_run_to_tolerance_reports_non_convergence(x64, rng):
    op, y = _problem(rng)
    solver = projected_gradient(op, LAM, DELTA)
    state, info = run_to_tolerance(solver, y, tol=1e-30, max_iters=7)
    assert int(info.iterations) == 7
    assert not bool(info.converged)
    x6, x7 = run(solver, y, num_iters=6).x, run(solver, y, num_iters=7).x
    np.testing.assert_allclose(state.x, x7, atol=1e-12)
    assert float(info.residual) == pytest.approx(float(relative_change(x7, x6)), rel=1e-6)


def test_run_to_tolerance_stops_at_the_first_small_change(x64, rng):
    op, y = _problem(rng)
    solver = projected_gradient(op, LAM, DELTA, accelerate=False)
    tol = 1e-4
    state, info = jax.jit(lambda y: run_to_tolerance(solver, y, tol=tol, max_iters=500))(y)
    k = int(info.iterations)
    assert bool(info.converged) and 2 < k < 500
    assert float(info.residual) < tol
    xs = [run(solver, y, num_iters=n).x for n in (k - 2, k - 1, k)]
    np.testing.assert_allclose(state.x, xs[2], atol=1e-12)
    assert float(relative_change(xs[2], xs[1])) < tol <= float(relative_change(xs[1], xs[0]))


def test_run_argument_errors(rng):
    op, y = _problem(rng, np.float32)
    solver = projected_gradient(op, LAM, DELTA)
    with pytest.raises(ValueError):
        run(solver, y)  # neither num_iters nor a schedule
    with pytest.raises(ValueError):
        run(solver, y, num_iters=-1)
    with pytest.raises(ValueError):
        run_to_tolerance(solver, y, max_iters=0)
    with pytest.raises(ValueError):
        run(solver, y[0], num_iters=1)  # not (H, W, C)


def test_run_trace_records_every_step(x64, rng):
    op, y = _problem(rng)
    state, hist = run(projected_gradient(op, LAM, DELTA), y, num_iters=4, trace=lambda s: s.x)
    assert hist.shape == (4, H, W, 3)
    for n in range(1, 5):
        np.testing.assert_allclose(hist[n - 1], run(projected_gradient(op, LAM, DELTA), y, num_iters=n).x, atol=1e-13)


# ------------------------------------------------------------------------------- wiener


def test_wiener_identity_is_the_data_prox_at_zero(x64, rng):
    op, y = _problem(rng, kernel=np.roll(kernels.gaussian(5, 1.0), 1, axis=0))
    lam = 0.03
    np.testing.assert_allclose(wiener(op, y, lam, "identity"), op.prox_data(jnp.zeros_like(y), y, lam), atol=1e-14)
    # and it solves (A^T A + lam I) x = A^T y
    x = wiener(op, y, lam, "identity")
    res = op.adjoint(op(x)) + lam * x - op.adjoint(y)
    assert float(jnp.linalg.norm(res) / jnp.linalg.norm(op.adjoint(y))) < 1e-12


@pytest.mark.parametrize("make", [
    lambda rng: Inpaint.create(np.where(rng.random((H, W)) > 0.5, 1.0, 0.3)),
    lambda rng: Identity.create((H, W)),
    lambda rng: Downsample.from_kernel(kernels.gaussian(5, 1.0), (H, W), 2),
], ids=["inpaint", "identity", "downsample"])
def test_wiener_identity_other_operators(x64, rng, make):
    op = make(rng)
    y_shape = (H // 2, W // 2, 3) if isinstance(op, Downsample) else (H, W, 3)
    y = jnp.asarray(rng.standard_normal(y_shape))
    x = wiener(op, y, 0.1, "identity")
    res = op.adjoint(op(x)) + 0.1 * x - op.adjoint(y)
    assert float(jnp.linalg.norm(res) / jnp.linalg.norm(op.adjoint(y))) < 1e-12


def _circular_laplacian(x):
    """L^T L x for circular forward differences in both directions."""
    return sum(2 * x - np.roll(x, 1, axis=a) - np.roll(x, -1, axis=a) for a in (0, 1))


@pytest.mark.parametrize("shape", [(H, W), (17, 23)])
def test_wiener_gradient_normal_equations(x64, rng, shape):
    k = rng.random((5, 7))
    op = Blur.from_kernel(k / k.sum(), shape, "correlation")
    y = jnp.asarray(rng.standard_normal(shape + (3,)))
    lam = 0.05
    x = np.asarray(wiener(op, y, lam, "gradient"))
    lhs = np.asarray(op.adjoint(op(jnp.asarray(x)))) + lam * _circular_laplacian(x)
    rhs = np.asarray(op.adjoint(y))
    assert np.linalg.norm(lhs - rhs) / np.linalg.norm(rhs) < 1e-10
    # differs from the identity-regularised one
    assert np.abs(x - np.asarray(wiener(op, y, lam, "identity"))).max() > 1e-2


def test_wiener_errors(rng):
    y = jnp.zeros((H, W, 3))
    with pytest.raises(ValueError, match="Blur"):
        wiener(Inpaint.create(np.ones((H, W))), y, 0.1, "gradient")
    with pytest.raises(ValueError, match="Blur"):
        wiener(Downsample.from_kernel(np.ones((3, 3)) / 9, (H, W), 2), jnp.zeros((H // 2, W // 2, 3)), 0.1)
    op = Blur.from_kernel(np.ones((3, 3)) / 9, (H, W))
    with pytest.raises(ValueError, match="regularizer"):
        wiener(op, y, 0.1, "tv")
    with pytest.raises(ValueError):
        wiener(op, y, 0.0)

