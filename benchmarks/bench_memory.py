"""Peak memory and time of one PnP-ADMM training step (:func:`jaxrestore.train.suppa.train_step`)
per training mode, as the number of iterations ``K`` grows.

For each mode and each ``K`` in ``--K`` the step is compiled on the same batch (``--batch``
random ``--size`` x ``--size`` x 3 images, the deblurring operator of
:func:`jaxrestore.protocols.suppa.task_operator`, noise 0.01) and the same denoiser (the shipped
``drunet_small.npz`` if present, else a freshly initialised DRUNet of that architecture: memory
and time do not depend on the weights' values). ``K`` means:

* ``explicit``: ``iterations = K`` unrolled ADMM iterations, reverse mode through all of them;
* ``deq``, ``jfb``, ``suppa``: ``max_iters = K`` forward iterations. ``tol`` is set to 1e-30 so
  that the forward loop never stops early and every mode runs ``K`` forward iterations (the
  ``iterations`` column shows what ran; a non-finite iterate would still stop a loop). ``deq``'s
  backward solve keeps its defaults (Anderson, ``backward_tol`` 1e-4, at most
  ``backward_max_iters`` = 50 iterations, independent of ``K``); its "did not converge" warning
  is silenced here, since an inexact derivative costs the same memory and time.

Peak bytes come from XLA's analysis of the compiled step (``Compiled.memory_analysis()``):
``peak = argument + output + temp - alias`` bytes, i.e. the inputs (parameters, Adam state,
batch), the outputs (new parameters and state), and XLA's temporary buffer, whose size is the
buffer assignment's packed maximum of simultaneously live intermediates (for reverse mode:
the residuals kept for the backward pass); ``alias`` (outputs written into donated inputs) is
counted once. XLA's own ``peak_memory_in_bytes`` is stored in the JSON too, but not used: on
XLA:CPU it is smaller than the temporary buffer alone. On a GPU, the allocator's
``peak_bytes_in_use`` is reported as well: it cannot be reset, so each ``(mode, K)`` then runs in
a fresh child process (``XLA_PYTHON_CLIENT_PREALLOCATE=false`` unless set, so parent and child
share the GPU), and the figure covers everything that child allocated (inputs, warm-up and timed
steps). On a CPU ``memory_stats()`` is unavailable and that column is left out.

Step time: median of ``--repeats`` calls of the compiled step after one warm-up call, each
measured after ``block_until_ready``; the parameters are not updated between calls, so every
call does the same work. ``--unroll`` measures the CPU variant (``UnrolledConfig.unroll``):
explicit's iterations and deq's backward solve inlined instead of looped.

DEQ, JFB and SUPPA must stay flat in ``K`` (peak at the largest ``K`` at most 1.2 x the peak at
the smallest); explicit unrolling must grow. The exit status is 1 if a check fails.

    python benchmarks/bench_memory.py --K 5,20,50 --json results/bench_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

# Only matters on a GPU: the parent and the per-configuration children share the device.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fail, markdown_table, write_json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from tqdm import tqdm  # noqa: E402

from jaxrestore.models import unrolled  # noqa: E402
from jaxrestore.models.drunet import SMALL, DRUNetConfig, create, load_weights  # noqa: E402
from jaxrestore.models.pretrained import drunet_path  # noqa: E402
from jaxrestore.protocols.suppa import DEBLUR_NOISE, task_operator  # noqa: E402
from jaxrestore.solvers.admm import pnp_schedule  # noqa: E402
from jaxrestore.train.data import batched  # noqa: E402
from jaxrestore.train.suppa import train_step  # noqa: E402

FLAT_MODES = ("deq", "jfb", "suppa")
FLAT_RATIO = 1.2
NO_EARLY_STOP = 1e-30  # forward tolerance: the loops run their max_iters
INIT_SIGMA, INIT_LAM, SIGMA_MAX = 0.03, 0.23, 49 / 255  # SuppaTrainConfig's defaults
MIB = 2.0**20


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--K", default="5,20,50", help="iteration counts, comma-separated (default 5,20,50)")
    p.add_argument("--modes", default=",".join(unrolled.MODES), help="modes, comma-separated (default all four)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=64, help="image height and width")
    p.add_argument("--channels", default=None,
                   help="DRUNet widths, e.g. 16,32,64,128 (default: the shipped small denoiser's, else SMALL's)")
    p.add_argument("--blocks", type=int, default=None, help="DRUNet residual blocks per scale")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per configuration (median)")
    p.add_argument("--unroll", action="store_true", help="UnrolledConfig.unroll=True (the CPU-style inlined loops)")
    p.add_argument("--isolate", choices=("auto", "yes", "no"), default="auto",
                   help="one child process per configuration (auto: on a GPU, for its peak_bytes_in_use)")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--only", default=None, help=argparse.SUPPRESS)  # MODE:K, used by the child processes
    a = p.parse_args(argv)
    try:
        a.K = sorted({int(k) for k in a.K.split(",")})
        a.channels = None if a.channels is None else tuple(int(c) for c in a.channels.split(","))
    except ValueError:
        fail("--K and --channels take comma-separated integers")
    a.modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if bad := [m for m in a.modes if m not in unrolled.MODES]:
        fail(f"unknown mode(s) {bad}; choose from {', '.join(unrolled.MODES)}")
    if not a.K or min(a.K) < 1:
        fail("--K must list iteration counts >= 1")
    if a.batch < 1 or a.size < 1 or a.repeats < 1:
        fail("--batch, --size and --repeats must be >= 1")
    return a


# --------------------------------------------------------------------------------------------
# Measuring one configuration


def denoiser(args):
    """``(model, description)``: the shipped small DRUNet if present and the architecture is not
    overridden, else a fresh one (SMALL's widths unless ``--channels``/``--blocks``)."""
    path = drunet_path("small")
    if args.channels is None and args.blocks is None and path.is_file():
        return load_weights(path), path.name
    cfg = DRUNetConfig(channels=args.channels or SMALL.channels, blocks=SMALL.blocks if args.blocks is None else args.blocks)
    if args.size % cfg.multiple:
        fail(f"--size must be a multiple of {cfg.multiple} for {len(cfg.channels)} scales")
    return create(cfg), "random init"


def problem(args):
    """The pieces every configuration shares: the denoiser, the batch, the operators, Adam."""
    model, weights = denoiser(args)
    graphdef, net = nnx.split(model)
    x = jax.random.uniform(jax.random.key(1), (args.batch, args.size, args.size, 3), jnp.float32)
    ops = batched(task_operator("deblur", (args.size, args.size)), args.batch)
    # Adam's state is two copies of the parameters whatever the mode (make_optimizer's per-group
    # learning rates do not change its size).
    return {"graphdef": graphdef, "net": net, "drunet": model.config,
            "weights": weights, "x": x, "ops": ops, "key": jax.random.key(0), "tx": optax.adam(1e-4)}


def model_config(mode: str, k: int, drunet: DRUNetConfig, unroll: bool) -> unrolled.UnrolledConfig:
    if mode == "explicit":
        return unrolled.UnrolledConfig(mode=mode, iterations=k, tol=NO_EARLY_STOP, unroll=unroll, drunet=drunet)
    return unrolled.UnrolledConfig(mode=mode, max_iters=k, tol=NO_EARLY_STOP, unroll=unroll, drunet=drunet)


def initial_params(config: unrolled.UnrolledConfig, net):
    """As :func:`jaxrestore.train.suppa.initial_params` for deblurring: DPIR's schedule for
    explicit, one ``(sigma, rho)`` otherwise."""
    if config.mode == "explicit":
        s = pnp_schedule(config.iterations, DEBLUR_NOISE, sigma_max=SIGMA_MAX, lam=INIT_LAM)
        sigma, rho = np.asarray(s.sigma), np.asarray(s.rho)
    else:
        sigma, rho = INIT_SIGMA, INIT_LAM * DEBLUR_NOISE**2 / INIT_SIGMA**2
    return unrolled.init_params(config, net, sigma, rho)


def memory_row(stats) -> dict:
    keys = ("argument", "output", "temp", "alias", "generated_code")
    got = {k: int(getattr(stats, f"{k}_size_in_bytes")) for k in keys}
    row = {"peak_bytes": got["argument"] + got["output"] + got["temp"] - got["alias"],
           **{f"{k}_bytes": got[k] for k in keys}}
    xla_peak = getattr(stats, "peak_memory_in_bytes", None)
    row["xla_peak_memory_bytes"] = None if xla_peak is None else int(xla_peak)
    return row


def measure(setup, mode: str, k: int, args) -> dict:
    config = model_config(mode, k, setup["drunet"], args.unroll)
    params = initial_params(config, setup["net"])
    opt_state = setup["tx"].init(params)
    dynamic = (params, opt_state, setup["x"], setup["ops"], setup["key"], np.uint32(0))
    static = dict(model=config, graphdef=setup["graphdef"], tx=setup["tx"], noise=DEBLUR_NOISE)
    t0 = time.perf_counter()
    compiled = train_step.lower(*dynamic, **static).compile()
    compile_s = time.perf_counter() - t0
    stats = compiled.memory_analysis()
    if stats is None:
        fail(f"XLA reports no memory analysis on backend {jax.default_backend()!r}")

    out = jax.block_until_ready(compiled(*dynamic))  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*dynamic))
        times.append(time.perf_counter() - t0)
    loss, aux = out[2], out[3]
    row = {"mode": mode, "K": k, **memory_row(stats), "step_seconds": statistics.median(times),
           "step_seconds_all": times, "compile_seconds": compile_s,
           "iterations": int(aux["iterations"]), "loss_finite": bool(jnp.isfinite(loss))}
    device_stats = jax.devices()[0].memory_stats()
    if device_stats and "peak_bytes_in_use" in device_stats:
        row["device_peak_bytes"] = int(device_stats["peak_bytes_in_use"])
    return row


def measure_in_child(args, argv, mode: str, k: int) -> dict:
    """``measure`` in a fresh process, so that the allocator's peak is this configuration's."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--only", f"{mode}:{k}", "--isolate", "no",
               "--json", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode not in (0, 1) or not out.is_file():
            fail(f"child for {mode} K={k} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())["rows"][0]


# --------------------------------------------------------------------------------------------
# Summary


def checks(rows, ks) -> list[dict]:
    """Per mode: peak(K_max) / peak(K_min) and its check (flat for deq/jfb/suppa, growing --
    strictly increasing over ``ks`` and above the flat bound -- for explicit)."""
    out = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        peaks = [next(r["peak_bytes"] for r in rows if r["mode"] == mode and r["K"] == k) for k in ks]
        ratio = peaks[-1] / peaks[0]
        if mode == "explicit":
            want, ok = "grows", len(ks) > 1 and all(b > a for a, b in zip(peaks, peaks[1:])) and ratio > FLAT_RATIO
        else:
            want, ok = f"flat (<= {FLAT_RATIO})", ratio <= FLAT_RATIO
        out.append({"mode": mode, "K_min": ks[0], "K_max": ks[-1], "ratio": ratio, "check": want, "pass": bool(ok)})
    return out


def tables(rows, summary) -> str:
    device = any("device_peak_bytes" in r for r in rows)
    header = ["mode", "K", "iterations", "peak MiB", "temp MiB"] + (["device peak MiB"] if device else []) + \
             ["step s", "compile s"]
    body = []
    for r in rows:
        line = [r["mode"], r["K"], r["iterations"], f"{r['peak_bytes'] / MIB:.2f}", f"{r['temp_bytes'] / MIB:.2f}"]
        if device:
            line.append(f"{r['device_peak_bytes'] / MIB:.2f}" if "device_peak_bytes" in r else None)
        body.append(line + [f"{r['step_seconds']:.3f}", f"{r['compile_seconds']:.1f}"])
    second = [[s["mode"], f"{s['K_max']} / {s['K_min']}", f"{s['ratio']:.2f}", s["check"], "PASS" if s["pass"] else "FAIL"]
              for s in summary]
    return (markdown_table(header, body) + "\n\n"
            + markdown_table(["mode", "K", "peak ratio", "check", "result"], second))


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    backend = jax.default_backend()
    isolate = args.only is None and (args.isolate == "yes" or (args.isolate == "auto" and backend == "gpu"))
    if args.only is not None:
        mode, k = args.only.split(":")
        configs = [(mode, int(k))]
    else:
        configs = [(m, k) for m in args.modes for k in args.K]

    t_start = time.perf_counter()
    rows = []
    bar = tqdm(configs, file=sys.stderr, unit="config", dynamic_ncols=True, disable=args.only is not None or None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="fixed_point: the implicit backward solve", category=RuntimeWarning)
        setup = None if isolate else problem(args)
        for mode, k in bar:
            bar.set_description(f"{mode} K={k}")
            rows.append(measure_in_child(args, argv, mode, k) if isolate else measure(setup, mode, k, args))
    bar.close()

    if args.only is None:
        model, weights = denoiser(args) if isolate else (None, setup["weights"])
        drunet = model.config if isolate else setup["drunet"]
        summary = checks(rows, args.K)
        for r in rows:
            r["ratio"] = next(s["ratio"] for s in summary if s["mode"] == r["mode"])
    else:
        drunet, weights, summary = None, None, []
    result = {
        "rows": rows,
        "summary": summary,
        "device": str(jax.devices()[0]),
        "backend": backend,
        "batch": args.batch,
        "size": args.size,
        "task": "deblur",
        "noise": DEBLUR_NOISE,
        "drunet": None if drunet is None else {"channels": list(drunet.channels), "blocks": drunet.blocks},
        "weights": weights,
        "unroll": args.unroll,
        "repeats": args.repeats,
        "isolated": isolate,
        "peak_formula": "argument + output + temp - alias bytes of Compiled.memory_analysis()",
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "total_seconds": time.perf_counter() - t_start,
    }
    if args.only is None:
        print(f"One train_step, deblur, batch {args.batch} x {args.size}x{args.size}x3, DRUNet "
              f"{result['drunet']['channels']} x {result['drunet']['blocks']} blocks ({weights}), "
              f"{'unroll=True' if args.unroll else 'unroll=False'}, {result['device']}; "
              f"peak = argument + output + temp - alias (XLA memory analysis); step s: median of {args.repeats}\n")
        print(tables(rows, summary))
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    res = main()
    raise SystemExit(0 if all(s["pass"] for s in res["summary"]) else 1)
