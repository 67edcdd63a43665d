"""Throughput of the core pieces of jaxrestore, each against an alternative in the same run.

1. ``barrier_prox`` (jitted, float32) against a vectorised NumPy closed-form reference
   (Cardano / Viete roots of the cubic of Proposition 1, Corbineau et al. 2019), with the
   largest relative and absolute difference between them as a sanity check.
2. ``Blur`` forward + adjoint on a vmapped batch of 256x256x3 images (one kernel per image),
   against ``Blur.gram`` (the same ``A^T A x`` in one FFT round trip).
3. VAR (``projected_gradient`` on smoothed TV, 50 iterations) on a batch of images, each with its
   own random motion kernel: one ``jax.jit(jax.vmap(restore))`` call against a Python loop over a
   jitted single-image ``restore`` (which must trace once, not once per kernel), and against
   ``jax.jit`` of ``jax.lax.map(restore)`` (the images one after another in one compiled call) and
   of ``jaxrestore.batched(restore)`` (vmap over chunks of a few images, one after another).

Times are medians over ``--repeats`` runs after a warm-up call (compile excluded), measured after
``block_until_ready``. The ``time / first row`` column is each row's median time divided by the
first row of its task (our JAX implementation, or the vmapped restore).

    python benchmarks/bench_core.py --json results/bench_core.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fail, markdown_table, write_json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxrestore.batch import auto_batch_size, batched  # noqa: E402
from jaxrestore.kernels import random_motion  # noqa: E402
from jaxrestore.operators import Blur  # noqa: E402
from jaxrestore.prox import barrier_prox  # noqa: E402
from jaxrestore.solvers import projected_gradient, run  # noqa: E402

VAR_LAM = 2e-5
VAR_DELTA = 0.01
BOUND_EPS = 1e-10  # fallback candidates this far inside the bounds


# --------------------------------------------------------------------------------------------
# NumPy closed-form reference for the barrier prox
# --------------------------------------------------------------------------------------------


def real_cubic_roots(b, c, d) -> np.ndarray:
    """Real roots of ``v^3 + b v^2 + c v + d`` elementwise, as a ``(3, ...)`` array with NaN for
    the missing ones. Computed in the dtype of the arguments.

    With ``v = t - b/3`` the cubic becomes ``t^3 + p t + q``. If its discriminant
    ``(q/2)^2 + (p/3)^3`` is positive there is one real root, from Cardano's formula in the form
    ``A + B`` with ``B = -p / (3A)`` and ``A`` the cube root that adds ``|q|/2`` and the square
    root of the discriminant (no subtraction of two nearly equal cube roots); it goes in slot 0.
    Otherwise there are three, ``t_k = 2 sqrt(-p/3) cos(theta - 2 pi k / 3)`` (Viete's
    trigonometric form). Both branches are evaluated everywhere and combined with ``np.where``.
    """
    b, c, d = np.broadcast_arrays(b, c, d)
    dtype = np.result_type(b, c, d)
    shift = b / 3
    p = c - b * shift
    q = shift * (2 * shift * shift - c) + d
    half_q = q / 2
    third_p = p / 3
    disc = half_q * half_q + third_p * third_p * third_p
    one_real = disc > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # Cardano. A = 0 only when p = q = 0 (triple root t = 0).
        big = np.cbrt(np.abs(half_q) + np.sqrt(np.where(one_real, disc, 0)))
        a_term = np.where(half_q > 0, -big, big)
        safe_a = np.where(a_term != 0, a_term, 1)
        t_cardano = a_term + np.where(a_term != 0, -third_p / safe_a, 0)
        # Viete (p <= 0 wherever the discriminant is not positive).
        neg_third_p = np.where(one_real, 1, np.maximum(-third_p, 0))
        m = 2 * np.sqrt(neg_third_p)
        safe_r = np.where(neg_third_p > 0, neg_third_p * np.sqrt(neg_third_p), 1)
        theta = np.arccos(np.clip(-half_q / safe_r, -1, 1)) / 3
        two_pi_3 = dtype.type(2 * np.pi / 3)
        roots = [np.where(one_real, t_cardano, m * np.cos(theta)) - shift]
        roots += [np.where(one_real, np.nan, m * np.cos(theta - k * two_pi_3)) - shift for k in (1, 2)]
    return np.stack(roots)


def barrier_prox_cardano(u, alpha, beta=1.0, dtype=np.float64) -> np.ndarray:
    """``prox_{alpha b}(u)`` for ``b(v) = -ln v - ln(beta - v)`` from the closed-form roots
    (:func:`real_cubic_roots`) of

        ``v^3 - (beta + u) v^2 + (beta u - 2 alpha) v + beta alpha = 0``

    (Proposition 1 of Corbineau et al. 2019), computed elementwise in ``dtype`` with NumPy.

    Among the real roots inside ``(0, beta)``, and the two fallback points ``BOUND_EPS`` inside
    the bounds, the one with the lowest prox objective ``1/2 (v - u)^2 - alpha (ln v +
    ln(beta - v))`` is returned. (In exact arithmetic the cubic always has three real roots, one
    in each of ``(-inf, 0)``, ``(0, beta)`` and ``(beta, inf)``, since it is ``beta alpha > 0``
    at 0 and ``-beta alpha < 0`` at ``beta``; Cardano's branch can only be taken by rounding.)
    """
    u, alpha, beta = np.broadcast_arrays(*(np.asarray(a, dtype=dtype) for a in (u, alpha, beta)))
    roots = real_cubic_roots(-(beta + u), beta * u - 2 * alpha, beta * alpha)
    candidates = list(roots) + [np.full_like(u, BOUND_EPS), beta - dtype(BOUND_EPS)]

    def objective(v):
        inside = (v > 0) & (v < beta)  # False for NaN
        f = 0.5 * (v - u) ** 2 - alpha * (np.log(v) + np.log(beta - v))
        return np.where(inside, f, np.inf)

    with np.errstate(divide="ignore", invalid="ignore"):
        best_v = candidates[3]
        best_f = objective(best_v)
        for v in candidates[:3] + candidates[4:]:
            f = objective(v)
            better = f < best_f
            best_v = np.where(better, v, best_v)
            best_f = np.where(better, f, best_f)
    return best_v


def prox_inputs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``u ~ U[-3, 4]`` and ``alpha ~ logU[1e-6, 1]``, float32 (``beta = 1``)."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(-3.0, 4.0, n).astype(np.float32)
    alpha = (10.0 ** rng.uniform(-6.0, 0.0, n)).astype(np.float32)
    return u, alpha


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def _block(out):
    return jax.block_until_ready(out)


def time_call(fn, repeats: int) -> dict:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up call (whose time,
    compile included for a jitted function, is reported as ``first_s``)."""
    t0 = time.perf_counter()
    out = _block(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "times_s": times, "first_s": first, "out": out}


def _strip(timing: dict) -> dict:
    return {k: v for k, v in timing.items() if k != "out"}


def _max_diffs(ours, ref) -> tuple[float, float]:
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    diff = np.abs(ours - ref)
    rel = diff / np.maximum(np.abs(ref), np.finfo(np.float64).tiny)
    return float(diff.max()), float(rel.max())


# --------------------------------------------------------------------------------------------
# The three benchmarks
# --------------------------------------------------------------------------------------------


def bench_prox(n: int, repeats: int) -> dict:
    u, alpha = prox_inputs(n)
    u_dev, alpha_dev = jnp.asarray(u), jnp.asarray(alpha)
    prox_jit = jax.jit(lambda u, a: barrier_prox(u, a, 1.0))
    ours = time_call(lambda: prox_jit(u_dev, alpha_dev), repeats)
    u64, a64 = u.astype(np.float64), alpha.astype(np.float64)
    ref64 = time_call(lambda: barrier_prox_cardano(u64, a64, 1.0, np.float64), repeats)
    ref32 = time_call(lambda: barrier_prox_cardano(u, alpha, 1.0, np.float32), repeats)

    v64 = ref64["out"]
    abs32, rel32 = _max_diffs(ours["out"], v64)
    abs_ref32, rel_ref32 = _max_diffs(ref32["out"], v64)
    worst = int(np.argmax(np.abs(np.asarray(ours["out"], np.float64) - v64) / v64))
    worst_ref32 = int(np.argmax(np.abs(ref32["out"].astype(np.float64) - v64) / v64))
    return {
        "elements": n,
        "jax_float32": {**_strip(ours), "elements_per_s": n / ours["median_s"],
                        "max_abs_diff_vs_numpy_float64": abs32, "max_rel_diff_vs_numpy_float64": rel32,
                        "worst_rel_at": {"u": float(u[worst]), "alpha": float(alpha[worst]),
                                         "ours": float(ours["out"][worst]), "reference": float(v64[worst])}},
        "numpy_float64": {**_strip(ref64), "elements_per_s": n / ref64["median_s"]},
        "numpy_float32": {**_strip(ref32), "elements_per_s": n / ref32["median_s"],
                          "max_abs_diff_vs_numpy_float64": abs_ref32, "max_rel_diff_vs_numpy_float64": rel_ref32,
                          "worst_rel_at": {"u": float(u[worst_ref32]), "alpha": float(alpha[worst_ref32]),
                                           "numpy_float32": float(ref32["out"][worst_ref32]),
                                           "reference": float(v64[worst_ref32])}},
        "ratio_numpy_float64_over_jax": ref64["median_s"] / ours["median_s"],
        "ratio_numpy_float32_over_jax": ref32["median_s"] / ours["median_s"],
    }


@partial(jax.jit, static_argnames=("n", "shape", "kernel_size", "blur_twice"))
def _blur_problem(key, n: int, shape: tuple, kernel_size: int, blur_twice: bool = False):
    """``n`` operators, each with its own random motion kernel, and ``n`` images: uniform noise,
    or (``blur_twice``) noisy observations ``A (A x) + 0.01 n`` of blurred noise. One jitted
    function, so setting up costs one compile instead of one per eager op."""
    k_kernels, k_x, k_n = jax.random.split(key, 3)
    kernels = jax.vmap(lambda k: random_motion(k, kernel_size))(jax.random.split(k_kernels, n))
    ops = jax.vmap(lambda k: Blur.from_kernel(k, shape))(kernels)
    xs = jax.random.uniform(k_x, (n,) + shape, jnp.float32)
    if blur_twice:
        # Smooth-ish images so the problem is not pure noise (the timing does not depend on it).
        xs = jax.vmap(lambda op, x: op(op(x)))(ops, xs) + 0.01 * jax.random.normal(k_n, xs.shape)
    return ops, xs


def bench_blur(batch: int, size: int, kernel_size: int, repeats: int) -> dict:
    shape = (size, size, 3)
    ops, xs = _blur_problem(jax.random.key(1), batch, shape, kernel_size)
    fwd_adj = jax.jit(jax.vmap(lambda op, x: op.adjoint(op(x))))
    gram = jax.jit(jax.vmap(lambda op, x: op.gram(x)))
    t_fa = time_call(lambda: fwd_adj(ops, xs), repeats)
    t_gram = time_call(lambda: gram(ops, xs), repeats)
    abs_d, rel_d = _max_diffs(t_gram["out"], t_fa["out"])
    return {
        "batch": batch, "image_shape": list(shape), "kernel_size": kernel_size,
        "forward_adjoint": {**_strip(t_fa), "images_per_s": batch / t_fa["median_s"]},
        "gram": {**_strip(t_gram), "images_per_s": batch / t_gram["median_s"],
                 "max_abs_diff_vs_forward_adjoint": abs_d, "max_rel_diff_vs_forward_adjoint": rel_d},
        "ratio_gram_over_forward_adjoint": t_gram["median_s"] / t_fa["median_s"],
    }


def bench_restore(images: int, size: int, kernel_size: int, iters: int, repeats: int) -> dict:
    shape = (size, size, 3)
    ops, ys = jax.block_until_ready(_blur_problem(jax.random.key(3), images, shape, kernel_size, blur_twice=True))
    traces = {"vmap": 0, "loop": 0, "lax_map": 0, "batched": 0}

    def make_restore(name):
        def restore(op, y):
            traces[name] += 1  # Python side effect: runs once per trace, never per call
            return run(projected_gradient(op, lam=VAR_LAM, delta=VAR_DELTA), y, num_iters=iters).x
        return restore

    restore_vmap = jax.jit(jax.vmap(make_restore("vmap")))
    restore_one = jax.jit(make_restore("loop"))
    # A third way, for reference: the images one after another inside one compiled lax.map.
    restore_map_one = make_restore("lax_map")
    restore_map = jax.jit(lambda ops, ys: jax.lax.map(lambda a: restore_map_one(*a), (ops, ys)))
    restore_batched = jax.jit(batched(make_restore("batched")))
    # Slice the operator stack outside the timed region: the loop times the per-image restores
    # (and their dispatch), not the indexing.
    op_list = [jax.tree_util.tree_map(lambda a, i=i: a[i], ops) for i in range(images)]
    y_list = [ys[i] for i in range(images)]

    t_vmap = time_call(lambda: restore_vmap(ops, ys), repeats)
    t_loop = time_call(lambda: [restore_one(op, y) for op, y in zip(op_list, y_list)], repeats)
    t_map = time_call(lambda: restore_map(ops, ys), repeats)
    t_batched = time_call(lambda: restore_batched(ops, ys), repeats)
    loop_out = np.stack([np.asarray(x) for x in t_loop["out"]])
    abs_d, rel_d = _max_diffs(loop_out, t_vmap["out"])
    abs_map, rel_map = _max_diffs(t_map["out"], t_vmap["out"])
    abs_b, rel_b = _max_diffs(t_batched["out"], t_vmap["out"])
    calls = 1 + repeats
    return {
        "images": images, "image_shape": list(shape), "kernel_size": kernel_size, "iterations": iters,
        "lam": VAR_LAM, "delta": VAR_DELTA,
        "vmap": {**_strip(t_vmap), "images_per_s": images / t_vmap["median_s"], "traces": traces["vmap"],
                 "calls": calls},
        "loop": {**_strip(t_loop), "images_per_s": images / t_loop["median_s"], "traces": traces["loop"],
                 "calls": calls * images},
        "lax_map": {**_strip(t_map), "images_per_s": images / t_map["median_s"], "traces": traces["lax_map"],
                    "calls": calls},
        "batched": {**_strip(t_batched), "images_per_s": images / t_batched["median_s"],
                    "traces": traces["batched"], "calls": calls, "batch_size": auto_batch_size() or images},
        "ratio_batched_over_vmap": t_batched["median_s"] / t_vmap["median_s"],
        "max_abs_diff_batched_vs_vmap": abs_b,
        "max_rel_diff_batched_vs_vmap": rel_b,
        "ratio_loop_over_vmap": t_loop["median_s"] / t_vmap["median_s"],
        "ratio_lax_map_over_vmap": t_map["median_s"] / t_vmap["median_s"],
        "max_abs_diff_loop_vs_vmap": abs_d,
        "max_rel_diff_loop_vs_vmap": rel_d,
        "max_abs_diff_lax_map_vs_vmap": abs_map,
        "max_rel_diff_lax_map_vs_vmap": rel_map,
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def machine_info() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "load_average_at_start": load,
    }


def _ms(t: dict) -> str:
    return f"{1e3 * t['median_s']:.2f} ({1e3 * t['min_s']:.2f}-{1e3 * t['max_s']:.2f})"


def _sci(x) -> str:
    return f"{x:.2e}"


def table_rows(res: dict) -> list[list]:
    rows = []
    p = res["barrier_prox"]
    n = p["elements"]
    rows.append([f"barrier_prox, {n} elements", "jaxrestore.barrier_prox, jit, float32", _ms(p["jax_float32"]),
                 f"{_sci(p['jax_float32']['elements_per_s'])} elem/s", "1.00",
                 _sci(p["jax_float32"]["max_abs_diff_vs_numpy_float64"]),
                 _sci(p["jax_float32"]["max_rel_diff_vs_numpy_float64"])])
    rows.append(["", "NumPy Cardano/Viete, float64 (reference)", _ms(p["numpy_float64"]),
                 f"{_sci(p['numpy_float64']['elements_per_s'])} elem/s",
                 f"{p['ratio_numpy_float64_over_jax']:.2f}", "0 (ref)", "0 (ref)"])
    rows.append(["", "NumPy Cardano/Viete, float32", _ms(p["numpy_float32"]),
                 f"{_sci(p['numpy_float32']['elements_per_s'])} elem/s",
                 f"{p['ratio_numpy_float32_over_jax']:.2f}",
                 _sci(p["numpy_float32"]["max_abs_diff_vs_numpy_float64"]),
                 _sci(p["numpy_float32"]["max_rel_diff_vs_numpy_float64"])])
    b = res["blur"]
    h, w, c = b["image_shape"]
    rows.append([f"Blur, {b['batch']} x {h}x{w}x{c}, own {b['kernel_size']}x{b['kernel_size']} kernel each",
                 "vmap(op.adjoint(op(x))), jit", _ms(b["forward_adjoint"]),
                 f"{b['forward_adjoint']['images_per_s']:.1f} img/s", "1.00", "0 (ref)", "0 (ref)"])
    rows.append(["", "vmap(op.gram(x)), jit", _ms(b["gram"]), f"{b['gram']['images_per_s']:.1f} img/s",
                 f"{b['ratio_gram_over_forward_adjoint']:.2f}",
                 _sci(b["gram"]["max_abs_diff_vs_forward_adjoint"]),
                 _sci(b["gram"]["max_rel_diff_vs_forward_adjoint"])])
    r = res["restore"]
    h, w, c = r["image_shape"]
    rows.append([f"VAR {r['iterations']} it, {r['images']} x {h}x{w}x{c}, own {r['kernel_size']}x{r['kernel_size']} kernel each",
                 f"jit(vmap(restore)) [{r['vmap']['traces']} trace(s)]", _ms(r["vmap"]),
                 f"{r['vmap']['images_per_s']:.1f} img/s", "1.00", "0 (ref)", "0 (ref)"])
    rows.append(["", f"loop over jit(restore) [{r['loop']['traces']} trace(s) for {r['loop']['calls']} calls]",
                 _ms(r["loop"]), f"{r['loop']['images_per_s']:.1f} img/s", f"{r['ratio_loop_over_vmap']:.2f}",
                 _sci(r["max_abs_diff_loop_vs_vmap"]), _sci(r["max_rel_diff_loop_vs_vmap"])])
    rows.append(["", f"jit(lax.map(restore)) [{r['lax_map']['traces']} trace(s)]", _ms(r["lax_map"]),
                 f"{r['lax_map']['images_per_s']:.1f} img/s", f"{r['ratio_lax_map_over_vmap']:.2f}",
                 _sci(r["max_abs_diff_lax_map_vs_vmap"]), _sci(r["max_rel_diff_lax_map_vs_vmap"])])
    rows.append(["", f"jit(batched(restore)), chunks of {r['batched']['batch_size']} [{r['batched']['traces']} trace(s)]",
                 _ms(r["batched"]), f"{r['batched']['images_per_s']:.1f} img/s", f"{r['ratio_batched_over_vmap']:.2f}",
                 _sci(r["max_abs_diff_batched_vs_vmap"]), _sci(r["max_rel_diff_batched_vs_vmap"])])
    return rows


HEADER = ["task", "implementation", "median ms (min-max)", "throughput", "time / first row",
          "max abs diff vs ref", "max rel diff vs ref"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--elements", type=int, default=2**20, help="barrier_prox: number of elements")
    ap.add_argument("--batch", type=int, default=16, help="Blur: images in the vmapped batch")
    ap.add_argument("--blur-size", type=int, default=256, help="Blur: image height and width")
    ap.add_argument("--size", type=int, default=64, help="VAR restore: image height and width")
    ap.add_argument("--images", type=int, default=64, help="VAR restore: images (one kernel each)")
    ap.add_argument("--kernel-size", type=int, default=15, help="random motion kernel size")
    ap.add_argument("--iters", type=int, default=50, help="VAR restore: projected-gradient iterations")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    ap.add_argument("--json", help="write the numbers to this JSON file")
    args = ap.parse_args(argv)
    for name in ("elements", "batch", "blur_size", "size", "images", "kernel_size", "iters", "repeats"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.kernel_size > min(args.size, args.blur_size):
        fail(f"--kernel-size {args.kernel_size} is larger than the images (--size {args.size}, "
             f"--blur-size {args.blur_size})")

    machine = machine_info()
    print(f"devices: {machine['devices']} (backend {machine['backend']})")
    print(f"jax {machine['jax']}, numpy {machine['numpy']}, python {machine['python']}, {machine['platform']}")
    print(f"cpu_count {machine['cpu_count']} (usable {machine['usable_cpus']}), "
          f"load average at start {machine['load_average_at_start']}")

    t_start = time.perf_counter()
    print("barrier_prox ...", flush=True)
    prox = bench_prox(args.elements, args.repeats)
    print("Blur ...", flush=True)
    blur = bench_blur(args.batch, args.blur_size, args.kernel_size, args.repeats)
    print("VAR restore ...", flush=True)
    restore = bench_restore(args.images, args.size, args.kernel_size, args.iters, args.repeats)
    # batched traces once for its chunks and once more for a remainder (images % chunk != 0)
    retraced = {k: restore[k]["traces"] for k in ("vmap", "loop", "lax_map", "batched")
                if restore[k]["traces"] > (2 if k == "batched" else 1)}
    if retraced:
        print(f"warning: restore was traced {retraced} times; expected once each", file=sys.stderr)

    results = {
        "machine": machine,
        "config": {k: getattr(args, k) for k in ("elements", "batch", "blur_size", "size", "images",
                                                  "kernel_size", "iters", "repeats")},
        "barrier_prox": prox,
        "blur": blur,
        "restore": restore,
    }
    rows = table_rows(results)
    results["table"] = {"header": HEADER, "rows": rows}
    results["total_s"] = time.perf_counter() - t_start
    print()
    print(markdown_table(HEADER, rows))
    print(f"\nmedian of {args.repeats} runs after a warm-up call; total {results['total_s']:.1f} s")
    if args.json:
        write_json(args.json, results)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
