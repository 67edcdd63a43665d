"""Throughput of batched restoration with one kernel per image: ``jax.jit(jax.vmap(restore))``
against ``jax.jit(jaxrestore.batched(restore))`` (vmap over chunks of a few images, one chunk
after another: the form the README recommends), ``jax.jit(jax.lax.map(restore))`` and a Python
loop over one jitted single-image call, for the strategies of :func:`jaxrestore.restore_batch`.

1. VAR (projected gradient on smoothed TV, 50 iterations), 32 images 128x128x3, each blurred by
   its own 15x15 ``random_motion`` kernel, noise std 0.01; lam and delta from
   ``var_params_for_sigma(0.01)``.
2. PnP-ADMM with our shipped DRUNet (``drunet_small``, 8 iterations of DPIR's schedule, lam 0.5),
   8 images 256x256x3, same kernels and noise.

The vmap, chunked and lax.map rows time the very compiled chunk function ``restore_batch`` runs
(one chunk holding all images, operators and images already on the device); the
``batched(batch_size=b)`` rows are ``jit(batched(restore one, batch_size=b))`` for the other
chunk sizes of ``--batch-sizes``; the loop calls a jitted
single-image restore per image; the last row times ``restore_batch(strategy="auto")`` end to end
(validation, transfer functions, transfers and read-back included). Each implementation is called
once to compile, then the implementations are timed in turn, alternating, ``--repeats`` times;
the median is reported, after ``block_until_ready``. Outputs are checked against the loop's.

    python benchmarks/bench_batch.py --json results/bench_batch.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fail, markdown_table, write_json  # noqa: E402
from bench_core import machine_info  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxrestore import batch  # noqa: E402
from jaxrestore.data import sample_image  # noqa: E402
from jaxrestore.kernels import random_motion  # noqa: E402
from jaxrestore.operators import Blur  # noqa: E402
from jaxrestore.presets import var_params_for_sigma  # noqa: E402
from jaxrestore.protocols.suppa import PNP_PARAMS  # noqa: E402

SIGMA = 0.01
MAX_ABS_DIFF = 1e-4  # outputs in [0, 1]; float32 reassociation stays far below this


def make_problem(n: int, size: int, kernel_size: int, seed: int = 0):
    """``n`` kernels ``(n, k, k)``, clean images and noisy blurred observations ``(n, size, size, 3)``."""
    ks = np.asarray(jax.vmap(lambda k: random_motion(k, kernel_size))(jax.random.split(jax.random.key(seed), n)))
    base = sample_image(min(size, 256))
    if size > 256:
        base = np.tile(base, (-(-size // 256), -(-size // 256), 1))[:size, :size]
    rng = np.random.default_rng(seed)
    xs = np.stack([np.roll(base[:, ::-1] if i % 2 else base, 11 * i, axis=(0, 1)) for i in range(n)]).astype(np.float32)
    ys = np.stack([np.asarray(Blur.from_kernel(k, (size, size))(jnp.asarray(x))) for k, x in zip(ks, xs)])
    ys = (ys + SIGMA * rng.standard_normal(ys.shape)).astype(np.float32)
    return ks, xs, ys


def bench(method: str, n: int, size: int, kernel_size: int, iterations: int | None, repeats: int,
          batch_sizes: tuple[int, ...] = ()) -> dict:
    ks, _, ys = make_problem(n, size, kernel_size)
    shape = (size, size)
    if method == "var":
        lam, delta, _ = var_params_for_sigma(SIGMA)
        params = {"lam": np.full(n, lam), "delta": np.full(n, delta)}
        api = {"lam": lam, "delta": delta, "iterations": iterations}
        fn, net, schedule = None, None, None
    else:
        settings = PNP_PARAMS["deblur"]
        iterations = iterations or settings["num_iters"]
        params = {"lam": np.full(n, settings["lam"]), "sigma": np.full(n, SIGMA)}
        api = {"sigma": SIGMA, "iterations": iterations}
        fn, net = batch._shipped_denoiser()
        schedule = (float(settings["sigma_max"]), settings["sigma_min"])
    ops = Blur(jnp.stack([Blur.from_kernel(k, shape).otf for k in ks]), shape)
    ys_dev = jnp.asarray(ys)
    params_dev = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    static = dict(method=method, iterations=iterations, denoiser=fn, schedule=schedule, mesh=None)

    one = jax.jit(lambda op, y, p, net: batch._restore_one(method, op, y, p, net, iterations, fn, schedule))
    op_list = [jax.tree.map(lambda a, i=i: a[i], ops) for i in range(n)]
    y_list = [ys_dev[i] for i in range(n)]
    p_list = [{k: v[i] for k, v in params_dev.items()} for i in range(n)]

    auto = batch.auto_batch_size()
    impls = {
        "jit(vmap)": lambda: batch._restore_chunk(ops, ys_dev, params_dev, net, strategy="vmap", **static),
        f"jit(batched), chunks of {auto or n} (README)":
            lambda: batch._restore_chunk(ops, ys_dev, params_dev, net, strategy="chunked", **static),
    }
    for b in batch_sizes:
        if b in (1, auto) or b >= n:
            continue
        f = jax.jit(batch.batched(lambda op, y, p, net: batch._restore_one(method, op, y, p, net, iterations, fn,
                                                                             schedule),
                                  in_axes=(0, 0, 0, None), batch_size=b))
        impls[f"jit(batched, batch_size={b})"] = lambda f=f: f(ops, ys_dev, params_dev, net)
    impls.update({
        "jit(lax.map)": lambda: batch._restore_chunk(ops, ys_dev, params_dev, net, strategy="map", **static),
        "loop of jit(restore one)": lambda: [one(op, y, p, net) for op, y, p in zip(op_list, y_list, p_list)],
        f"restore_batch(auto = {batch._resolve_strategy('auto')}), end to end":
            lambda: batch.restore_batch(method, ys, ks, chunk_size=n, **api),
    })
    outputs, first = {}, {}
    for name, f in impls.items():  # warm-up: compile (timed separately)
        t0 = time.perf_counter()
        outputs[name] = np.asarray(jax.block_until_ready(f()))
        first[name] = time.perf_counter() - t0
    times = {name: [] for name in impls}
    for _ in range(repeats):
        for name, f in impls.items():  # alternating, so load changes hit every implementation alike
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            times[name].append(time.perf_counter() - t0)
    ref = outputs["loop of jit(restore one)"]
    rows = {}
    for name in impls:
        med = statistics.median(times[name])
        rows[name] = {"median_s": med, "min_s": min(times[name]), "max_s": max(times[name]), "times_s": times[name],
                      "first_call_s": first[name], "images_per_s": n / med,
                      "max_abs_diff_vs_loop": float(np.max(np.abs(outputs[name].astype(np.float64) - ref)))}
    vmap_rate = rows["jit(vmap)"]["images_per_s"]
    for r in rows.values():
        r["speed_vs_vmap"] = r["images_per_s"] / vmap_rate
    return {"method": method, "images": n, "image_shape": [size, size, 3], "kernel_size": kernel_size,
            "iterations": iterations, "sigma": SIGMA, "params": {k: float(v[0]) for k, v in params.items()},
            "results": rows}


def table_rows(res: dict) -> list[list]:
    rows = []
    h, w, c = res["image_shape"]
    task = f"{'VAR' if res['method'] == 'var' else 'PnP-ADMM'} {res['iterations']} it, {res['images']} x {h}x{w}x{c}, " \
           f"own {res['kernel_size']}x{res['kernel_size']} kernel each"
    for i, (name, r) in enumerate(res["results"].items()):
        rows.append([task if i == 0 else "", name, f"{r['median_s']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f})",
                     f"{r['images_per_s']:.2f}", f"{r['speed_vs_vmap']:.2f}", f"{r['max_abs_diff_vs_loop']:.1e}"])
    return rows


HEADER = ["task", "implementation", "median s (min-max)", "img/s", "speed / jit(vmap)", "max abs diff vs loop"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--var-images", type=int, default=32)
    ap.add_argument("--var-size", type=int, default=128)
    ap.add_argument("--var-iters", type=int, default=50)
    ap.add_argument("--pnp-images", type=int, default=8)
    ap.add_argument("--pnp-size", type=int, default=256)
    ap.add_argument("--pnp-iters", type=int, default=PNP_PARAMS["deblur"]["num_iters"])
    ap.add_argument("--kernel-size", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (median reported)")
    ap.add_argument("--batch-sizes", default="4,8",
                    help="comma-separated chunk sizes timed as jit(batched(..., batch_size=b)) besides the default")
    ap.add_argument("--skip-pnp", action="store_true", help="VAR only")
    ap.add_argument("--json", help="write the numbers to this JSON file")
    args = ap.parse_args(argv)
    for name in ("var_images", "var_size", "var_iters", "pnp_images", "pnp_size", "pnp_iters", "kernel_size", "repeats"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    try:
        batch_sizes = tuple(int(b) for b in args.batch_sizes.split(",") if b.strip())
    except ValueError:
        fail(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    if any(b < 1 for b in batch_sizes):
        fail(f"--batch-sizes must be >= 1, got {args.batch_sizes!r}")
    if args.kernel_size > min(args.var_size, args.pnp_size):
        fail(f"--kernel-size {args.kernel_size} is larger than the images")

    machine = machine_info()
    print(f"devices: {machine['devices']} (backend {machine['backend']}); jax {machine['jax']}; "
          f"cpu_count {machine['cpu_count']} (usable {machine['usable_cpus']}), load average {machine['load_average_at_start']}")
    t_start = time.perf_counter()
    results = {"machine": machine, "config": vars(args).copy()}
    print("VAR ...", flush=True)
    results["var"] = bench("var", args.var_images, args.var_size, args.kernel_size, args.var_iters, args.repeats,
                           batch_sizes)
    rows = table_rows(results["var"])
    if not args.skip_pnp:
        print("PnP-ADMM ...", flush=True)
        results["pnp_admm"] = bench("pnp-admm", args.pnp_images, args.pnp_size, args.kernel_size, args.pnp_iters,
                                    args.repeats, batch_sizes)
        rows += table_rows(results["pnp_admm"])
    results["table"] = {"header": HEADER, "rows": rows}
    results["total_s"] = time.perf_counter() - t_start
    print()
    print(markdown_table(HEADER, rows))
    print(f"\nmedian of {args.repeats} alternating runs after a warm-up call; total {results['total_s']:.1f} s")
    bad = [(task, name, r["max_abs_diff_vs_loop"]) for task in ("var", "pnp_admm") if task in results
           for name, r in results[task]["results"].items() if not r["max_abs_diff_vs_loop"] <= MAX_ABS_DIFF]
    if args.json:
        write_json(args.json, results)
        print(f"wrote {args.json}")
    if bad:
        fail(f"outputs differ from the loop's by more than {MAX_ABS_DIFF:g}: {bad}")
    return results


if __name__ == "__main__":
    main()
