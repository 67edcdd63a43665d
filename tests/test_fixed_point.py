"""fixed_point: implicit derivatives against a long explicit unroll and the closed form of an
affine fixed point, JFB against one step at the fixed point, forward mode against finite
differences (float64), pytree states, jit/vmap, honest reports of non-convergence, NaN iterates
and failed backward solves, Anderson against Picard, and the SUPPA iterate history."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxrestore.fixed_point import (
    Anderson,
    Explicit,
    FixedPointInfo,
    Implicit,
    JacobianFree,
    Picard,
    fixed_point,
    fixed_point_iterates,
)

N = 6  # state size of the nonlinear test map


def tanh_params(rng, contraction=0.8):
    """``f(p, x) = tanh(W x + U z + b)`` with ``||W||_2 = contraction``: a contraction, since tanh
    is 1-Lipschitz."""
    W = rng.normal(size=(N, N))
    W *= contraction / np.linalg.norm(W, 2)
    p = {"W": W, "U": rng.normal(size=(N, 3)), "b": rng.normal(size=N) * 0.3, "z": rng.normal(size=3)}
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), p)


def tanh_map(p, x):
    return jnp.tanh(p["W"] @ x + p["U"] @ p["z"] + p["b"])


def affine_map(p, x):
    """``x -> a M x + c``; with ``||M||_2 = 1`` and ``|a| < 1`` the fixed point is
    ``x* = (I - a M)^{-1} c``."""
    return p["a"] * (p["M"] @ x) + p["c"]


def tree_rel_err(a, b):
    fa, fb = ravel_pytree(a)[0], ravel_pytree(b)[0]
    return float(jnp.linalg.norm(fa - fb) / jnp.linalg.norm(fb))


def unrolled_grad(f, p, x0, weights, steps=500):
    """Gradient of ``<weights, x_K>`` through a plain unroll of ``steps`` steps (no library code)."""
    def loss(p):
        x = jax.lax.fori_loop(0, steps, lambda _, x: f(p, x), x0)
        return jnp.vdot(weights, x)
    return jax.jit(jax.grad(loss))(p)


def fp_grad(f, p, x0, weights, **kw):
    """``(x, info, grad_p <weights, x>)`` in one compiled call."""
    def loss(p):
        x, info = fixed_point(f, p, x0, **kw)
        return jnp.vdot(weights, x), (x, info)
    (_, (x, info)), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(p)
    return x, info, g


BACKWARD = ["anderson", "neumann", "gmres"]


@pytest.mark.parametrize("solver, forward", [("anderson", Picard()), ("neumann", Picard()), ("gmres", Anderson())],
                         ids=["anderson", "neumann", "gmres-anderson_forward"])
def test_implicit_gradient_matches_long_explicit_unroll(x64, rng, solver, forward, recwarn):
    p = tanh_params(rng)
    x0 = jnp.zeros(N, jnp.float64)
    w = jnp.asarray(rng.normal(size=N))
    want = unrolled_grad(tanh_map, p, x0, w)
    _, info, got = fp_grad(tanh_map, p, x0, w, adjoint=Implicit(solver, tol=1e-10, max_iters=200),
                           forward=forward, tol=1e-13, max_iters=500)
    assert bool(info.converged)
    assert tree_rel_err(got, want) < 1e-6
    jax.effects_barrier()
    assert not [r for r in recwarn if "did not converge" in str(r.message)]


def test_gradient_of_affine_fixed_point_matches_closed_form(x64, rng):
    n = 5
    M = rng.normal(size=(n, n))
    p = {"a": jnp.asarray(0.7, jnp.float64), "M": jnp.asarray(M / np.linalg.norm(M, 2)),
         "c": jnp.asarray(rng.normal(size=n))}
    w = rng.normal(size=n)
    A = float(p["a"]) * np.asarray(p["M"])
    x_star = np.linalg.solve(np.eye(n) - A, np.asarray(p["c"]))
    lam = np.linalg.solve((np.eye(n) - A).T, w)  # adjoint of L = <w, x*>
    want = {"a": lam @ np.asarray(p["M"]) @ x_star, "M": float(p["a"]) * np.outer(lam, x_star), "c": lam}
    x0 = jnp.zeros(n, jnp.float64)
    for adjoint in (Implicit("gmres", tol=1e-12), Implicit("anderson", tol=1e-12), Explicit()):
        x, info, got = fp_grad(affine_map, p, x0, jnp.asarray(w), adjoint=adjoint, tol=1e-14, max_iters=400)
        assert bool(info.converged)
        np.testing.assert_allclose(x, x_star, rtol=1e-12)
        assert tree_rel_err(got, want) < 1e-8, adjoint


def test_jacobian_free_gradient_is_one_step_at_the_fixed_point(x64, rng):
    p = tanh_params(rng)
    x0 = jnp.zeros(N, jnp.float64)
    w = jnp.asarray(rng.normal(size=N))
    x_star, _, implicit = fp_grad(tanh_map, p, x0, w, adjoint=Implicit(tol=1e-10), tol=1e-14, max_iters=500)
    want = jax.grad(lambda p: jnp.vdot(w, tanh_map(p, x_star)))(p)
    x, info, got = fp_grad(tanh_map, p, x0, w, adjoint=JacobianFree(), tol=1e-14, max_iters=500)
    np.testing.assert_allclose(x, x_star, rtol=1e-13)
    assert bool(info.converged)
    assert tree_rel_err(got, want) < 1e-10
    assert tree_rel_err(got, implicit) > 1e-2  # JFB drops (I - J_x)^{-1}: a different direction


@pytest.mark.parametrize("adjoint", [Explicit(), Implicit("anderson", tol=1e-11), Implicit("gmres", tol=1e-11),
                                     Implicit("neumann", tol=1e-11), JacobianFree()],
                         ids=["explicit", "implicit-anderson", "implicit-gmres", "implicit-neumann", "jfb"])
def test_forward_mode_matches_finite_differences(x64, rng, adjoint):
    p = tanh_params(rng)
    x0 = jnp.zeros(N, jnp.float64)
    dp = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(size=a.shape)), p)
    kw = dict(adjoint=adjoint, tol=1e-14, max_iters=500)
    solve = lambda p: fixed_point(tanh_map, p, x0, **kw)[0]
    _, tangent = jax.jit(lambda p, dp: jax.jvp(solve, (p,), (dp,)))(p, dp)
    if isinstance(adjoint, JacobianFree):
        # JFB's derivative is that of one step from the (held) fixed point.
        x_star = solve(p)
        value = lambda p: tanh_map(p, x_star)
    else:
        value = solve
    eps = 1e-6
    shift = lambda s: jax.tree_util.tree_map(lambda a, d: a + s * d, p, dp)
    fd = (value(shift(eps)) - value(shift(-eps))) / (2 * eps)
    np.testing.assert_allclose(tangent, fd, rtol=1e-6, atol=1e-9)


def test_implicit_jacfwd_equals_jacrev(x64, rng):
    p = tanh_params(rng)
    x0 = jnp.zeros(N, jnp.float64)
    solve = lambda z: fixed_point(tanh_map, {**p, "z": z}, x0, adjoint=Implicit(tol=1e-11), tol=1e-14,
                                  max_iters=500)[0]
    jf, jr = jax.jit(lambda z: (jax.jacfwd(solve)(z), jax.jacrev(solve)(z)))(p["z"])
    assert jf.shape == (N, 3)
    np.testing.assert_allclose(jf, jr, rtol=1e-9, atol=1e-12)


def test_explicit_checkpoint_equals_plain_and_differentiates_x0(x64, rng):
    p = tanh_params(rng)
    x0 = jnp.asarray(rng.normal(size=N))
    w = jnp.asarray(rng.normal(size=N))

    def loss(p, x0, checkpoint):
        x, _ = fixed_point(tanh_map, p, x0, adjoint=Explicit(checkpoint), tol=1e-6, max_iters=30)
        return jnp.vdot(w, x)

    grads = jax.jit(lambda p, x0: [jax.grad(loss, argnums=(0, 1))(p, x0, c) for c in (False, True)])
    plain, ckpt = grads(p, x0)
    assert tree_rel_err(ckpt, plain) < 1e-13
    # A short unroll depends on x0, and its gradient with respect to x0 is right.
    short = jax.jit(lambda x0: jnp.vdot(w, fixed_point(tanh_map, p, x0, adjoint=Explicit(), max_iters=3)[0]))
    d = jnp.asarray(rng.normal(size=N))
    fd = (short(x0 + 1e-6 * d) - short(x0 - 1e-6 * d)) / 2e-6
    np.testing.assert_allclose(jnp.vdot(jax.grad(short)(x0), d), fd, rtol=1e-6)
    assert abs(float(fd)) > 1e-3
    # Implicit and JFB treat the fixed point as independent of x0.
    for adjoint in (Implicit(), JacobianFree()):
        gx0 = jax.jit(jax.grad(lambda x0: jnp.vdot(w, fixed_point(tanh_map, p, x0, adjoint=adjoint)[0])))(x0)
        assert not np.any(np.asarray(gx0))


def test_explicit_scan_equals_tolerance_loop(x64, rng):
    p = tanh_params(rng)
    x0 = jnp.zeros(N, jnp.float64)
    for forward in (Picard(), Anderson(m=3)):
        xe, ie = fixed_point(tanh_map, p, x0, adjoint=Explicit(), forward=forward, tol=1e-6, max_iters=60)
        xi, ii = fixed_point(tanh_map, p, x0, adjoint=Implicit(), forward=forward, tol=1e-6, max_iters=60)
        assert bool(ie.converged) and 1 < int(ie.iterations) < 60
        assert int(ie.iterations) == int(ii.iterations)
        np.testing.assert_array_equal(xe, xi)
        assert float(ie.residual) == float(ii.residual)


class State(NamedTuple):
    u: jax.Array
    v: jax.Array


def test_pytree_state(x64, rng):
    p = tanh_params(rng)
    x0 = State(jnp.zeros((2, 2), jnp.float64), jnp.zeros(2, jnp.float64))
    unravel = ravel_pytree(x0)[1]

    def f(p, s):  # the tanh map on the concatenated state
        return unravel(tanh_map(p, ravel_pytree(s)[0]))

    w = State(jnp.asarray(rng.normal(size=(2, 2))), jnp.asarray(rng.normal(size=2)))
    loss_w = lambda s: jnp.vdot(w.u, s.u) + jnp.vdot(w.v, s.v)
    want = unrolled_grad(tanh_map, p, jnp.zeros(N, jnp.float64), ravel_pytree(w)[0])
    for adjoint, forward in ((Implicit("anderson", tol=1e-11), Anderson()), (Explicit(), Picard())):
        def loss(p):
            x, info = fixed_point(f, p, x0, adjoint=adjoint, forward=forward, tol=1e-14, max_iters=500)
            return loss_w(x), (x, info)
        (_, (x, info)), got = jax.jit(jax.value_and_grad(loss, has_aux=True))(p)
        assert isinstance(x, State) and x.u.shape == (2, 2) and bool(info.converged)
        assert tree_rel_err(got, want) < 1e-6, (adjoint, forward)


def test_jit_and_vmap_over_a_batch_of_params(x64, rng):
    n = 4
    M = rng.normal(size=(n, n))
    M = jnp.asarray(M / np.linalg.norm(M, 2))
    a = jnp.asarray([0.3, 0.6, 0.9])  # different contractions: different iteration counts
    c = jnp.asarray(rng.normal(size=(3, n)))
    x0 = jnp.zeros(n, jnp.float64)

    def solve_and_grad(a, c, adjoint):
        p = {"a": a, "M": M, "c": c}
        (x, info), g = jax.value_and_grad(
            lambda p: (lambda r: (jnp.sum(r[0]), r))(fixed_point(affine_map, p, x0, adjoint=adjoint,
                                                                tol=1e-12, max_iters=400)),
            has_aux=True)(p)
        return g["a"], g["c"], info[1].iterations

    for adjoint in (Implicit(tol=1e-12), Explicit()):
        batched = jax.jit(jax.vmap(lambda a, c: solve_and_grad(a, c, adjoint)))(a, c)
        iterations = []
        for i in range(3):
            A = a[i] * M
            lam = np.linalg.solve((np.eye(n) - A).T, np.ones(n))
            xs = np.linalg.solve(np.eye(n) - A, c[i])
            np.testing.assert_allclose(batched[0][i], lam @ M @ xs, rtol=1e-9)
            np.testing.assert_allclose(batched[1][i], lam, rtol=1e-9)
            iterations.append(int(fixed_point(affine_map, {"a": a[i], "M": M, "c": c[i]}, x0,
                                              tol=1e-12, max_iters=400)[1].iterations))
        # vmap keeps each example's own stopping point.
        np.testing.assert_array_equal(batched[2], iterations)
        assert len(set(iterations)) == 3


@pytest.mark.parametrize("adjoint", [Explicit(), Implicit(), JacobianFree()], ids=["explicit", "implicit", "jfb"])
def test_non_convergence_is_reported(rng, adjoint):
    with jax.enable_x64(True):
        p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), tanh_params(rng, contraction=0.95))
    x0 = jnp.zeros(N, jnp.float32)
    x, info = fixed_point(tanh_map, p, x0, adjoint=adjoint, tol=1e-6, max_iters=3)
    assert isinstance(info, FixedPointInfo)
    assert not bool(info.converged) and bool(info.finite)
    assert int(info.iterations) == 3
    assert float(info.residual) > 1e-6
    # The residual is the relative change of the last step.
    x2, _ = fixed_point(tanh_map, p, x0, adjoint=Explicit(), tol=1e-6, max_iters=2)
    np.testing.assert_allclose(info.residual, jnp.linalg.norm(x - x2) / jnp.linalg.norm(x2), rtol=1e-5)


def doubling_until_nan(p, x):
    """``x -> p x`` that turns NaN once ``x`` exceeds 3: with ``p = 2`` from 1, iterate 2 is 4 and
    iterate 3 NaN."""
    return jnp.where(x > 3, jnp.nan, p * x)


@pytest.mark.parametrize("adjoint", [Explicit(), Implicit(), JacobianFree()], ids=["explicit", "implicit", "jfb"])
def test_nan_iterate_stops_with_a_clear_error(adjoint):
    x0 = jnp.ones(3)
    with pytest.raises(ValueError, match="iterate 3 is not finite"):
        fixed_point(doubling_until_nan, jnp.asarray(2.0), x0, adjoint=adjoint, max_iters=20)
    with pytest.raises(ValueError, match="iterate 3 is not finite"):
        fixed_point_iterates(doubling_until_nan, jnp.asarray(2.0), x0, max_iters=20)
    # Under jit nothing can raise: the report says it.
    _, info = jax.jit(lambda p: fixed_point(doubling_until_nan, p, x0, adjoint=adjoint, max_iters=20))(2.0)
    assert not bool(info.finite) and not bool(info.converged) and int(info.iterations) == 3
    with pytest.raises(ValueError, match="x0 contains NaN"):
        fixed_point(doubling_until_nan, jnp.asarray(2.0), x0.at[1].set(jnp.nan), adjoint=adjoint)


def barely_contractive(rng, n=8, rho=0.99):
    """A rotation scaled by ``rho``: Neumann/GMRES need many steps to solve ``(I - A^T) g = v``."""
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return {"a": jnp.asarray(rho, jnp.float64), "M": jnp.asarray(Q), "c": jnp.asarray(rng.normal(size=n))}


def barely_contractive_grad(p, **implicit):
    # Anderson with a full history solves the 8-dimensional affine fixed point exactly.
    loss = lambda p: jnp.sum(fixed_point(affine_map, p, jnp.zeros(8, jnp.float64), adjoint=Implicit(**implicit),
                                         forward=Anderson(m=8), tol=1e-12, max_iters=50)[0])
    g = jax.jit(jax.grad(loss))(p)
    jax.effects_barrier()
    return g


@pytest.mark.parametrize("solver", BACKWARD)
def test_failed_backward_solve_warns(x64, rng, solver):
    p = barely_contractive(rng)
    with pytest.warns(RuntimeWarning, match=rf"backward solve \({solver}\) did not converge: relative residual"):
        g = barely_contractive_grad(p, solver=solver, max_iters=2)
    assert np.all(np.isfinite(np.asarray(g["c"]))) and np.any(np.asarray(g["c"]) != 0)


def test_failed_backward_solve_nan_or_ignore_and_success(x64, rng):
    p = barely_contractive(rng)
    g = barely_contractive_grad(p, solver="neumann", max_iters=2, on_failure="nan")
    assert np.all(np.isnan(np.asarray(g["c"]))) and np.isnan(float(g["a"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = barely_contractive_grad(p, solver="neumann", max_iters=2, on_failure="ignore")
        assert np.all(np.isfinite(np.asarray(g["c"])))
        # With enough iterations (rho = 0.99: ~2300 for 1e-10) the same solve succeeds and
        # matches the closed form.
        g = barely_contractive_grad(p, solver="neumann", tol=1e-10, max_iters=5000, on_failure="nan")
    lam = np.linalg.solve((np.eye(8) - 0.99 * np.asarray(p["M"])).T, np.ones(8))
    np.testing.assert_allclose(g["c"], lam, rtol=1e-7)


def spectral_095_problem(rng, n=20, dtype=jnp.float64):
    """``x -> A x + c`` with symmetric ``A`` of spectral radius 0.95."""
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    eig = np.linspace(-0.95, 0.95, n)
    A = (Q * eig) @ Q.T
    c = rng.normal(size=n)
    return {"a": jnp.asarray(1.0, dtype), "M": jnp.asarray(A, dtype), "c": jnp.asarray(c, dtype)}, \
        np.linalg.solve(np.eye(n) - A, c)


@pytest.mark.parametrize("dtype, tol", [(jnp.float64, 1e-10), (jnp.float32, 1e-5)], ids=["f64", "f32"])
def test_anderson_needs_fewer_iterations_than_picard(rng, dtype, tol):
    with jax.enable_x64(dtype == jnp.float64):
        p, x_star = spectral_095_problem(rng, dtype=dtype)
        x0 = jnp.zeros(20, dtype)
        xp, ip = fixed_point(affine_map, p, x0, forward=Picard(), tol=tol, max_iters=2000)
        xa, ia = fixed_point(affine_map, p, x0, forward=Anderson(m=5), tol=tol, max_iters=2000)
        assert bool(ip.converged) and bool(ia.converged)
        assert int(ia.iterations) * 3 < int(ip.iterations), (int(ia.iterations), int(ip.iterations))
        err = 1e-8 if dtype == jnp.float64 else 1e-3
        np.testing.assert_allclose(xa, x_star, rtol=err, atol=err)
        np.testing.assert_allclose(xp, x_star, rtol=err, atol=err)


def test_fixed_point_iterates_history(x64, rng):
    p = tanh_params(rng)
    x0 = State(jnp.asarray(rng.normal(size=(2, 2))), jnp.asarray(rng.normal(size=2)))
    unravel = ravel_pytree(x0)[1]
    f = lambda p, s: unravel(tanh_map(p, ravel_pytree(s)[0]))
    max_iters = 40
    history, count = jax.jit(lambda p: fixed_point_iterates(f, p, x0, max_iters=max_iters, tol=1e-5))(p)
    assert history.u.shape == (max_iters + 1, 2, 2) and history.v.shape == (max_iters + 1, 2)
    x, info = fixed_point(f, p, x0, tol=1e-5, max_iters=max_iters)
    k = int(count)
    assert k == int(info.iterations) and 1 < k < max_iters
    at = lambda i: jax.tree_util.tree_map(lambda h: h[i], history)
    np.testing.assert_array_equal(ravel_pytree(at(0))[0], ravel_pytree(x0)[0])
    for i in range(k):
        np.testing.assert_allclose(ravel_pytree(at(i + 1))[0], ravel_pytree(f(p, at(i)))[0], rtol=1e-14)
    for i in range(k, max_iters + 1):
        np.testing.assert_array_equal(ravel_pytree(at(i))[0], ravel_pytree(x)[0])
    # The history carries no gradient (SUPPA differentiates one step from a drawn iterate).
    g = jax.jit(jax.grad(lambda p: jnp.sum(fixed_point_iterates(f, p, x0, max_iters=5)[0].u)))(p)
    assert not any(np.any(np.asarray(leaf)) for leaf in jax.tree_util.tree_leaves(g))


def test_closed_over_differentiated_value_still_gets_its_implicit_gradient(x64, rng):
    # Parameters belong in `params`; if one is closed over anyway, the derivative must still be
    # right rather than silently zero.
    p = tanh_params(rng)
    x0 = jnp.zeros(N, jnp.float64)
    w = jnp.asarray(rng.normal(size=N))

    def loss(b, adjoint):
        f = lambda q, x: tanh_map({**q, "b": b}, x)
        return jnp.vdot(w, fixed_point(f, p, x0, adjoint=adjoint, tol=1e-14, max_iters=500)[0])

    want = unrolled_grad(lambda b, x: tanh_map({**p, "b": b}, x), p["b"], x0, w)
    got = jax.jit(jax.grad(lambda b: loss(b, Implicit(tol=1e-11))))(p["b"])
    assert tree_rel_err(got, want) < 1e-6


def test_bad_arguments_raise():
    x0 = jnp.zeros(3)
    f = lambda p, x: 0.5 * x + p
    with pytest.raises(ValueError, match="tol"):
        fixed_point(f, 1.0, x0, tol=0.0)
    with pytest.raises(ValueError, match="max_iters"):
        fixed_point(f, 1.0, x0, max_iters=0)
    with pytest.raises(ValueError, match="adjoint must be Explicit"):
        fixed_point(f, 1.0, x0, adjoint="implicit")
    with pytest.raises(ValueError, match="forward must be Picard"):
        fixed_point(f, 1.0, x0, forward="anderson")
    with pytest.raises(ValueError, match="solver must be one of"):
        Implicit(solver="cg")
    with pytest.raises(ValueError, match="on_failure"):
        Implicit(on_failure="raise")
    with pytest.raises(ValueError, match="m"):
        Anderson(m=0)
    with pytest.raises(ValueError, match="shapes"):
        fixed_point(lambda p, x: x[:2], 1.0, x0)
    with pytest.raises(ValueError, match="float arrays"):
        fixed_point(lambda p, x: x, 1.0, jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="max_iters"):
        fixed_point_iterates(f, 1.0, x0, max_iters=0)


def test_a_diverging_iteration_is_reported_not_finite():
    import jax.numpy as jnp
    import pytest

    from jaxrestore.fixed_point import Explicit, fixed_point

    # values stay finite for a while but their norm overflows: the residual is NaN, never "finite"
    with pytest.raises(ValueError, match="not finite"):
        fixed_point(lambda p, x: x * 1e10, None, jnp.ones(4), adjoint=Explicit(), max_iters=20)


def test_run_rejects_a_fractional_iteration_count():
    import jax.numpy as jnp
    import pytest

    from jaxrestore import kernels
    from jaxrestore.operators import Blur
    from jaxrestore.solvers import projected_gradient, run

    op = Blur.from_kernel(kernels.gaussian(5, 1.0), (16, 16))
    for bad in (2.5, True, -1):
        with pytest.raises(ValueError, match="num_iters must be a whole number"):
            run(projected_gradient(op, 0.01, 0.01), jnp.full((16, 16, 3), 0.5), num_iters=bad)
