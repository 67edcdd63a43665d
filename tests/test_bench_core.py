"""benchmarks/bench_core.py: its NumPy closed-form barrier prox against ``barrier_prox`` and a
bracketing root finder, and a tiny end-to-end run of ``main`` that checks the JSON it writes."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import brentq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_core import barrier_prox_cardano, main, real_cubic_roots  # noqa: E402

from jaxrestore.prox import barrier_prox  # noqa: E402


def _inputs(rng, n):
    u = rng.uniform(-3.0, 4.0, n)
    alpha = 10.0 ** rng.uniform(-6.0, 0.0, n)
    beta = rng.uniform(0.5, 2.0, n)
    return u, alpha, beta


def test_real_cubic_roots_against_numpy_roots(rng):
    coeffs = rng.normal(size=(3, 2000)) * 10.0 ** rng.uniform(-2, 2, (3, 2000))
    roots = real_cubic_roots(*coeffs)
    n_real = np.sum(~np.isnan(roots), axis=0)
    assert set(n_real) == {1, 3}  # both Cardano's and Viete's branch are exercised
    for i in range(coeffs.shape[1]):
        expected = np.roots(np.r_[1.0, coeffs[:, i]])
        got = np.sort(roots[~np.isnan(roots[:, i]), i])
        if n_real[i] == 1:
            expected = expected[np.argmin(np.abs(expected.imag))].real[None]
        scale = np.max(np.abs(expected)) + 1.0
        np.testing.assert_allclose(got, np.sort(expected.real), rtol=0, atol=1e-6 * scale)


def test_prox_cubic_has_three_real_roots(rng):
    # Cardano's branch is never the right one for the prox cubic: it is beta*alpha > 0 at v = 0 and
    # -beta*alpha < 0 at v = beta, so it has a root in each of (-inf, 0), (0, beta), (beta, inf).
    u, alpha, beta = _inputs(rng, 2000)
    roots = real_cubic_roots(-(beta + u), beta * u - 2 * alpha, beta * alpha)
    assert not np.any(np.isnan(roots))
    inside = (roots > 0) & (roots < beta)
    assert np.all(inside.sum(axis=0) == 1)


def test_cardano_reference_matches_brentq(rng):
    u, alpha, beta = _inputs(rng, 300)
    v = barrier_prox_cardano(u, alpha, beta)
    for ui, ai, bi, vi in zip(u, alpha, beta, v):
        # g(v) = v - u - a/v + a/(b - v) increases from -inf to +inf on (0, b); in terms of the
        # distance to the nearer bound the bracket keeps full relative precision.
        g = lambda x: x - ui - ai / x + ai / (bi - x)  # noqa: E731
        if g(bi / 2) >= 0:
            root = brentq(g, 1e-300, bi / 2, xtol=1e-300, rtol=4 * np.finfo(float).eps)
        else:
            h = lambda w: (bi - w) - ui - ai / (bi - w) + ai / w  # noqa: E731  (h(w) = g(b - w))
            w = brentq(h, 1e-300, bi / 2, xtol=1e-300, rtol=4 * np.finfo(float).eps)
            root = bi - w
        assert math.isclose(vi, root, rel_tol=1e-8), (ui, ai, bi, vi, root)


def test_cardano_reference_matches_barrier_prox_float64(rng, x64):
    u, alpha, beta = _inputs(rng, 20000)
    ref = barrier_prox_cardano(u, alpha, beta)
    ours = np.asarray(barrier_prox(jnp.asarray(u, jnp.float64), jnp.asarray(alpha, jnp.float64),
                                   jnp.asarray(beta, jnp.float64)))
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=0)


def test_cardano_reference_matches_barrier_prox_float32(rng):
    u, alpha, beta = (a.astype(np.float32) for a in _inputs(rng, 20000))
    ref = barrier_prox_cardano(u.astype(np.float64), alpha.astype(np.float64), beta.astype(np.float64))
    ours = np.asarray(jax.jit(barrier_prox)(u, alpha, beta))
    np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=0)


def test_cardano_reference_can_fail():
    # A wrong input must give a different answer: the reference is not trivially equal to u.
    v = barrier_prox_cardano(np.array([0.3, 0.3]), np.array([1e-3, 1e-1]))
    assert 0 < v[0] < 1 and 0 < v[1] < 1 and abs(v[0] - v[1]) > 1e-3


def test_main_tiny_run_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    res = main(["--elements", "4096", "--batch", "2", "--blur-size", "32", "--size", "24", "--images", "3",
                "--kernel-size", "7", "--iters", "4", "--repeats", "2", "--json", str(out)])
    data = json.loads(out.read_text())
    assert set(data) >= {"machine", "config", "barrier_prox", "blur", "restore", "table", "total_s"}
    assert data["machine"]["cpu_count"] >= 1 and data["machine"]["devices"]

    p = data["barrier_prox"]
    assert p["elements"] == 4096
    for impl in ("jax_float32", "numpy_float64", "numpy_float32"):
        assert p[impl]["elements_per_s"] > 0 and len(p[impl]["times_s"]) == 2
    assert p["ratio_numpy_float64_over_jax"] > 0
    assert p["jax_float32"]["max_rel_diff_vs_numpy_float64"] < 2e-6
    assert p["jax_float32"]["max_abs_diff_vs_numpy_float64"] < 1e-6

    b = data["blur"]
    assert b["forward_adjoint"]["images_per_s"] > 0 and b["gram"]["images_per_s"] > 0
    assert b["gram"]["max_abs_diff_vs_forward_adjoint"] < 1e-5

    r = data["restore"]
    assert r["vmap"]["traces"] == 1 and r["loop"]["traces"] == 1 and r["lax_map"]["traces"] == 1  # no retrace per kernel
    assert r["loop"]["calls"] == 3 * 3
    assert r["ratio_loop_over_vmap"] > 0
    assert r["max_abs_diff_loop_vs_vmap"] < 1e-4 and r["max_abs_diff_lax_map_vs_vmap"] < 1e-4
    assert r["max_abs_diff_batched_vs_vmap"] < 1e-4 and r["batched"]["traces"] == 2  # chunks, remainder

    assert len(data["table"]["rows"]) == 9
    assert res["restore"]["ratio_loop_over_vmap"] == r["ratio_loop_over_vmap"]
