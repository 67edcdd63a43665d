"""Speed of the iRestNet model (:mod:`jaxrestore.models.irestnet`) on this machine.

1. Inference throughput (images/s) of ``K`` layers on a batch of ``--size`` x ``--size`` x 3
   images, without and with the post-processing CNN ``Lpp``, jitted through ``as_function``.
   Every image gets the GaussA kernel (``gaussian(25, 1.6)``, circular correlation), but the
   operators are built with ``jax.vmap(Blur.from_kernel)``, so the per-image-kernel code path
   is the one timed. The noise level is estimated from ``y`` inside the call (``sigma=None``).
2. Compile time of the forward pass, for ``K`` layers (without and with ``Lpp``) and for
   ``--compile-layers`` (default ``K / 4``) layers without ``Lpp``: first call minus a
   steady-state call (tracing, lowering and XLA compilation), and directly, ``lower()`` +
   ``compile()`` of a fresh jitted function. The layers run as one ``lax.scan`` over stacked
   parameters, so it should not grow with ``K``.
3. Seconds per training step: ``value_and_grad`` of the loss ``-mean SSIM`` with respect to
   the ``nnx.Param`` state of a layers-only model (no ``Lpp``) plus an ``optax.adam`` update,
   jitted, on ``--train-batch`` images of ``--train-size`` pixels.
4. Achieved FLOP/s of the inference as a fraction of the machine's float32 matmul rate
   (``--matmul-size`` squared matrices, ``2 n^3`` flops, timed in the same run). The FLOPs come
   from XLA's cost analysis of the compiled forward pass, which (checked in the run, see the
   footnotes) counts the body of the ``lax.scan`` once rather than ``K`` times, and prices an FFT
   at ``8 N prod(log2 n_i)`` flops. Both corrections are reported next to the raw count:
   ``+ (K - 1)`` x the cost analysis of one standalone layer, and the FFTs re-priced at the
   textbook ``2.5 N log2 N`` (real transforms) / ``5 N log2 N`` (complex ones).

Times are medians over ``--repeats`` runs after a warm-up call, measured after
``block_until_ready``.

    python benchmarks/bench_irestnet.py --json results/bench_irestnet.json
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fail, markdown_table, write_json  # noqa: E402
from bench_core import machine_info, time_call  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from jaxrestore.kernels import gaussian  # noqa: E402
from jaxrestore.metrics import ssim  # noqa: E402
from jaxrestore.models.irestnet import IRestNet, IRestNetConfig, as_function  # noqa: E402
from jaxrestore.operators import Blur  # noqa: E402

KERNEL_SIZE = 25
KERNEL_STD = 1.6  # GaussA
NOISE_STD = 0.008
LEARNING_RATE = 1e-3


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def blur_problem(batch: int, size: int, seed: int = 0):
    """``(x, y, ops)``: smooth random images ``x``, operators built per image by ``vmap`` (all with
    the GaussA kernel, circular correlation as in the published model) and ``y = A x + noise``."""
    return jax.block_until_ready(_blur_problem(batch, size, seed))


@partial(jax.jit, static_argnums=(0, 1, 2))
def _blur_problem(batch: int, size: int, seed: int):
    # one compile instead of one per eager op
    k_x, k_n = jax.random.split(jax.random.key(seed))
    kernel = jnp.asarray(gaussian(KERNEL_SIZE, KERNEL_STD), jnp.float32)
    kernels = jnp.broadcast_to(kernel, (batch,) + kernel.shape)
    ops = jax.vmap(lambda k: Blur.from_kernel(k, (size, size), "correlation"))(kernels)
    coarse = jax.random.uniform(k_x, (batch, max(size // 8, 1), max(size // 8, 1), 3))
    x = jax.image.resize(coarse, (batch, size, size, 3), "linear")
    y = jax.vmap(lambda op, v: op(v))(ops, x) + NOISE_STD * jax.random.normal(k_n, x.shape)
    return x, jnp.clip(y, 0.0, 1.0), ops


def build_model(num_layers: int, use_lpp: bool) -> IRestNet:
    model = IRestNet(IRestNetConfig(num_layers=num_layers, use_lpp=use_lpp), rngs=nnx.Rngs(0))
    model.eval()  # BatchNorm of Lpp on its running statistics
    return model


# --------------------------------------------------------------------------------------------
# FLOP accounting
# --------------------------------------------------------------------------------------------


def xla_cost(compiled) -> dict | None:
    """``flops``, ``transcendentals`` and ``bytes accessed`` from XLA's cost analysis of a compiled
    function; ``None`` where this JAX version or backend does not report ``flops``. Older JAX
    returns a list with one dict per device program, newer a dict."""
    try:
        ca = compiled.cost_analysis()
    except Exception:  # noqa: BLE001  (unsupported on some backends)
        return None
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else None
    if not ca or "flops" not in ca:
        return None
    return {"flops": float(ca["flops"]), "transcendentals": float(ca.get("transcendentals", 0.0)),
            "bytes_accessed": float(ca.get("bytes accessed", 0.0))}


_FFT_LINE = re.compile(r"=\s*(\w+)\[([\d,]*)\]\S*\s+fft\(.*?fft_type=(\w+),\s*fft_length=\{([\d,]+)\}")


def fft_flops(hlo_text: str) -> dict:
    """The FFT instructions of an (optimised) HLO module, priced two ways: as XLA's cost analysis
    does (``8 x prod(floor(log2 n_i)) x`` elements of the operand, ``HloCostAnalysis::HandleFft``)
    and by the textbook count (``2.5 N log2 N`` per real transform, ``5 N log2 N`` per complex
    one, ``N = prod(n_i)``). An instruction inside a loop body appears, and is counted, once."""
    count, xla, textbook = 0, 0.0, 0.0
    for line in hlo_text.splitlines():
        m = _FFT_LINE.search(line)
        if not m:
            continue
        out_dims = [int(d) for d in m.group(2).split(",") if d]
        fft_type = m.group(3)
        lengths = [int(d) for d in m.group(4).split(",")]
        n = math.prod(lengths)
        batch = math.prod(out_dims[: len(out_dims) - len(lengths)])
        if fft_type == "IRFFT":  # operand is the half spectrum
            operand = batch * math.prod(lengths[:-1]) * (lengths[-1] // 2 + 1)
        else:  # RFFT: real input of n points; FFT / IFFT: same shape in and out
            operand = batch * n
        xla += 8.0 * math.prod(int(math.log2(ln)) for ln in lengths) * operand
        per_point = 2.5 if fft_type in ("RFFT", "IRFFT") else 5.0
        textbook += batch * per_point * n * math.log2(n)
        count += 1
    return {"instructions": count, "xla_flops": xla, "textbook_flops": textbook}


def fft_check(size: int) -> dict:
    """XLA's cost analysis of ``rfft2`` of one ``size x size x 3`` image against the textbook
    ``2.5 N log2 N`` per channel (``N = size^2``)."""
    x = jnp.zeros((size, size, 3), jnp.float32)
    compiled = jax.jit(lambda a: jnp.fft.rfft2(a, axes=(0, 1))).lower(x).compile()
    cost = xla_cost(compiled)
    n = size * size
    textbook = 3 * 2.5 * n * math.log2(n)
    parsed = fft_flops(compiled.as_text())
    out = {"shape": [size, size, 3], "textbook_flops": textbook, "parsed": parsed}
    if cost is None:
        out.update(xla_flops=None, ratio_xla_over_textbook=None)
    else:
        out.update(xla_flops=cost["flops"], ratio_xla_over_textbook=cost["flops"] / textbook)
    return out


def layer_cost(model: IRestNet, y, ops) -> dict | None:
    """Cost analysis (and FFT pricing) of one standalone layer on the batch: what the forward
    pass's cost analysis is missing ``K - 1`` times when it counts the scan body once."""
    graphdef, state = nnx.split(model.layer(0))
    config = model.config
    sigma = jnp.full((y.shape[0],), 0.01, y.dtype)

    def layer_fn(state, x, aty, ops, sigma):
        return nnx.merge(graphdef, state)(x, aty, ops, sigma, config)

    compiled = jax.jit(layer_fn).lower(state, y, y, ops, sigma).compile()
    cost = xla_cost(compiled)
    if cost is None:
        return None
    return {**cost, "fft": fft_flops(compiled.as_text())}


def flop_rates(fwd_cost: dict | None, layer: dict | None, num_layers: int, median_s: float,
               peak_flops_per_s: float) -> dict:
    """Three FLOP counts of one forward call and the rate and fraction of peak each implies."""
    if fwd_cost is None:
        return {"available": False}
    counts = {"xla_raw": fwd_cost["flops"]}
    bytes_accessed = None
    if layer is not None:
        counts["scan_corrected"] = fwd_cost["flops"] + (num_layers - 1) * layer["flops"]
        bytes_accessed = fwd_cost["bytes_accessed"] + (num_layers - 1) * layer["bytes_accessed"]
        fft_xla = fwd_cost["fft"]["xla_flops"] + (num_layers - 1) * layer["fft"]["xla_flops"]
        fft_textbook = fwd_cost["fft"]["textbook_flops"] + (num_layers - 1) * layer["fft"]["textbook_flops"]
        counts["scan_and_fft_corrected"] = counts["scan_corrected"] - fft_xla + fft_textbook
        fft_share = fft_xla / counts["scan_corrected"]
    else:
        fft_share = None
    rates = {k: {"flops_per_call": v, "gflops_per_s": v / median_s / 1e9,
                 "fraction_of_peak_matmul": v / median_s / peak_flops_per_s} for k, v in counts.items()}
    return {"available": True, **rates, "fft_share_of_scan_corrected_xla_flops": fft_share,
            "scan_corrected_bytes_accessed_per_call": bytes_accessed,
            "scan_corrected_gbytes_per_s": None if bytes_accessed is None else bytes_accessed / median_s / 1e9}


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


def _strip(timing: dict) -> dict:
    return {k: v for k, v in timing.items() if k != "out"}


def bench_matmul(n: int, repeats: int) -> dict:
    a = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(2), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    t = time_call(lambda: matmul(a, b), max(repeats, 5))
    flops = 2.0 * n**3
    return {"n": n, "dtype": "float32", "flops": flops, **_strip(t),
            "gflops_per_s": flops / t["median_s"] / 1e9}


def bench_forward(model: IRestNet, y, ops, use_lpp: bool, repeats: int) -> dict:
    """Time the jitted forward pass. Compile time two ways: its first call (trace + lower +
    compile + run) minus the median steady-state call, and directly, ``lower()`` then
    ``compile()`` of a fresh jitted function (a new function misses the in-memory compile cache,
    so this compiles again; its result gives the cost analysis)."""
    apply_fn, state = as_function(model)

    def make():
        return jax.jit(lambda state, y, ops: apply_fn(state, y, ops, use_lpp=use_lpp))

    fwd = make()
    t = time_call(lambda: fwd(state, y, ops), repeats)
    out = np.asarray(t["out"])
    fresh = make()
    t0 = time.perf_counter()
    lowered = fresh.lower(state, y, ops)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    cost = xla_cost(compiled)
    if cost is not None:
        cost["fft"] = fft_flops(compiled.as_text())
    batch = y.shape[0]
    return {"num_layers": model.config.num_layers, "use_lpp": use_lpp, "batch": batch,
            "image_shape": list(y.shape[1:]), **_strip(t),
            "images_per_s": batch / t["median_s"],
            "first_minus_median_s": t["first_s"] - t["median_s"],
            "aot_trace_lower_s": t1 - t0, "aot_compile_s": t2 - t1, "aot_total_s": t2 - t0,
            "output_finite": bool(np.isfinite(out).all()), "cost": cost}


def bench_train_step(num_layers: int, batch: int, size: int, repeats: int) -> dict:
    """``value_and_grad`` of ``-mean SSIM`` w.r.t. the ``nnx.Param`` state of a layers-only
    iRestNet, plus ``optax.adam``, in one jitted step; the state is carried from step to step."""
    x, y, ops = blur_problem(batch, size, seed=1)
    model = IRestNet(IRestNetConfig(num_layers=num_layers, use_lpp=False), rngs=nnx.Rngs(1))
    apply_fn, state = as_function(model)
    params, rest = nnx.split_state(state, nnx.Param, ...)
    optimizer = optax.adam(LEARNING_RATE)
    traces = [0]

    def loss_fn(params, rest, y, ops, x):
        restored = apply_fn(nnx.merge_state(params, rest), y, ops, use_lpp=False)
        return -jnp.mean(ssim(restored, x))

    @jax.jit
    def train_step(params, opt_state, rest, y, ops, x):
        traces[0] += 1  # Python side effect: once per trace
        loss, grads = jax.value_and_grad(loss_fn)(params, rest, y, ops, x)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    carry = {"params": params, "opt_state": optimizer.init(params), "losses": []}

    def step():
        carry["params"], carry["opt_state"], loss = train_step(carry["params"], carry["opt_state"], rest, y, ops, x)
        carry["losses"].append(loss)
        return loss

    t = time_call(step, repeats)
    losses = [float(v) for v in carry["losses"]]
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    return {"num_layers": num_layers, "use_lpp": False, "batch": batch, "image_shape": [size, size, 3],
            "loss": "-mean SSIM (jaxrestore.metrics.ssim)", "optimizer": f"optax.adam({LEARNING_RATE})",
            "trainable_parameters": n_params, **_strip(t), "first_minus_median_s": t["first_s"] - t["median_s"],
            "images_per_s": batch / t["median_s"], "losses": losses,
            "losses_finite": bool(np.isfinite(losses).all()), "traces": traces[0]}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# One layer piece by piece, against the machine's own limits
# --------------------------------------------------------------------------------------------


def _alternate(fns: dict, repeats: int) -> dict:
    """Median seconds of each jitted no-argument call, timed in turns (one call of each per round)
    after a warm-up call of each, so that every part sees the same machine state."""
    for f in fns.values():
        jax.block_until_ready(f())
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def bench_parts(model: IRestNet, y, ops, repeats: int, matmul_flops_per_s: float) -> list[dict]:
    """Seconds per image of the parts of one layer (channels first, as the scan runs them), of one
    layer, of the ``K`` layers and of ``Lpp``, beside a floor built from this machine's limits:
    each FFT round trip at the measured ``rfft2 + irfft2`` time of the batch, every other FLOP of
    XLA's cost analysis at the measured matmul rate (elementwise work is memory-bound, so the floor
    is optimistic for it)."""
    from jaxrestore.models.irestnet import _gradient_spread_cf, _gram_cf
    from jaxrestore.prox import barrier_prox
    from jaxrestore.regularizers import tv_smooth_grad

    n = y.shape[0]
    config = model.config
    graphdef, state = nnx.split(model.layer(0))
    yc = jnp.moveaxis(y, -1, -3)
    atyc = jnp.moveaxis(jax.vmap(lambda op, v: op.adjoint(v))(ops, y), -1, -3)
    sigma = jnp.full((n,), NOISE_STD, y.dtype)
    alpha = jnp.full((n, 1, 1, 1), 1e-3, y.dtype)
    lpp_gd, lpp_state = nnx.split(model.lpp)
    apply_fn, full_state = as_function(model)
    parts = {
        "fft round trip (rfft2 + irfft2)": (lambda x: jnp.fft.irfft2(jnp.fft.rfft2(x), s=x.shape[-2:]), (yc,)),
        "L_mu (barrier weight network)": (lambda st, x: nnx.merge(graphdef, st).barrier(x, channels_first=True), (state, yc)),
        "eta (gradient spread)": (lambda x: jax.vmap(_gradient_spread_cf)(x), (yc,)),
        "data gradient H^T H x": (lambda x: jax.vmap(_gram_cf)(ops, x), (yc,)),
        "TV gradient": (lambda x: jax.vmap(jax.vmap(lambda v: tv_smooth_grad(v, config.delta, config.tv_gradient)))(x), (yc,)),
        "barrier prox": (lambda x: barrier_prox(x, alpha, config.beta), (yc,)),
        "one layer": (lambda st, x: nnx.merge(graphdef, st)(x, atyc, ops, sigma, config, channels_first=True), (state, yc)),
        f"{config.num_layers} layers": (lambda st, x: apply_fn(st, x, ops, use_lpp=False), (full_state, y)),
        "Lpp": (lambda st, x: nnx.merge(lpp_gd, st)(x), (lpp_state, y)),
    }
    jitted = {k: jax.jit(f) for k, (f, _) in parts.items()}
    medians = _alternate({k: (lambda k=k: jitted[k](*parts[k][1])) for k in parts}, repeats)
    fft_s = medians["fft round trip (rfft2 + irfft2)"]
    rows = []
    for k, (f, args) in parts.items():
        if k.endswith(" layers"):  # the cost analysis counts the scan body once: K x one layer
            one = rows[-1]
            rows.append({"part": k, "s_per_image": medians[k] / n, "fft_round_trips": config.num_layers * one["fft_round_trips"],
                         "other_gflop": None if one["other_gflop"] is None else config.num_layers * one["other_gflop"],
                         "floor_s_per_image": None if one["floor_s_per_image"] is None
                         else config.num_layers * one["floor_s_per_image"]})
            continue
        compiled = jitted[k].lower(*args).compile()
        cost, ffts = xla_cost(compiled), fft_flops(compiled.as_text())
        round_trips = ffts["instructions"] / 2
        other = None if cost is None else max(cost["flops"] - ffts["xla_flops"], 0.0)
        floor = fft_s if k.startswith("fft round trip") else \
            None if other is None else round_trips * fft_s + other / matmul_flops_per_s
        rows.append({"part": k, "s_per_image": medians[k] / n, "floor_s_per_image": None if floor is None else floor / n,
                     "fft_round_trips": round_trips, "other_gflop": None if other is None else other / 1e9})
    return rows


def parts_rows(parts: list[dict]) -> list[list]:
    out = []
    for r in parts:
        floor = r["floor_s_per_image"]
        ratio = "-" if not floor else f"{r['s_per_image'] / floor:.1f}x"
        out.append([r["part"], f"{r['s_per_image'] * 1e3:.3f}", "-" if floor is None else f"{floor * 1e3:.3f}", ratio,
                    f"{r['fft_round_trips']:g} FFT round trips + {r['other_gflop'] or 0:.3f} GFLOP"])
    return out


PARTS_HEADER = ["part (channels first)", "ms per image", "floor ms per image", "time / floor", "work"]


def _ms(t: dict) -> str:
    return f"{1e3 * t['median_s']:.1f} ({1e3 * t['min_s']:.1f}-{1e3 * t['max_s']:.1f})"


def _lpp(use_lpp: bool) -> str:
    return "with Lpp" if use_lpp else "no Lpp"


def table_rows(res: dict, device_note: str | None) -> list[list]:
    rows = []
    note = device_note or ""
    for f in res["inference"]:
        h, w, c = f["image_shape"]
        rows.append([f"inference, K = {f['num_layers']}, {_lpp(f['use_lpp'])}",
                     f"batch {f['batch']} x {h}x{w}x{c}, GaussA, jit(as_function)", _ms(f),
                     f"{f['images_per_s']:.2f} img/s", note])
    for f in res["compile"]:
        rows.append([f"compile, K = {f['num_layers']}, {_lpp(f['use_lpp'])}",
                     f"first call {f['first_s']:.2f} s - steady {f['median_s']:.2f} s = "
                     f"{f['first_minus_median_s']:.2f} s [d]", _ms(f),
                     f"{f['aot_total_s']:.2f} s (trace+lower {f['aot_trace_lower_s']:.2f} s, "
                     f"compile {f['aot_compile_s']:.2f} s)", note])
    tr = res["train"]
    h, w, c = tr["image_shape"]
    rows.append([f"training step, K = {tr['num_layers']}, layers only (no Lpp)",
                 f"batch {tr['batch']} x {h}x{w}x{c}, grad of -SSIM + adam, jit", _ms(tr),
                 f"{tr['median_s']:.3f} s/step (first call - median {tr['first_minus_median_s']:.1f} s)", note])
    mm = res["matmul"]
    rows.append([f"peak matmul, {mm['n']}x{mm['n']} float32", "jit(jnp.matmul), 2 n^3 flops", _ms(mm),
                 f"{mm['gflops_per_s']:.1f} GFLOP/s", note])
    labels = {"xla_raw": "XLA cost analysis as reported [a]",
              "scan_corrected": "+ (K-1) x one layer [b]",
              "scan_and_fft_corrected": "+ (K-1) x one layer, FFTs at textbook count [c]"}
    for f in res["inference"]:
        r = f["flop_rate"]
        what = f"inference FLOP rate, K = {f['num_layers']}, {_lpp(f['use_lpp'])}"
        if not r["available"]:
            rows.append([what, "XLA cost analysis reports no 'flops'", _ms(f), "-", note])
            continue
        for key, label in labels.items():
            if key in r:
                v = r[key]
                rows.append([what, f"{label}: {v['flops_per_call'] / 1e9:.2f} GFLOP/call", _ms(f),
                             f"{v['gflops_per_s']:.2f} GFLOP/s = {v['fraction_of_peak_matmul']:.3f} of peak matmul",
                             note])
            what = ""
    return rows


def footnotes(res: dict) -> list[str]:
    lines = []
    fc = res["fft_check"]
    h, w, c = fc["shape"]
    if fc["xla_flops"] is None:
        lines.append("FFT check: XLA's cost analysis reports no 'flops' on this backend.")
    else:
        lines.append(
            f"FFT check: XLA's cost analysis of jit(rfft2) on one {h}x{w}x{c} image counts "
            f"{fc['xla_flops'] / 1e6:.1f} MFLOP against the textbook 3 x 2.5 N log2 N = "
            f"{fc['textbook_flops'] / 1e6:.2f} MFLOP (N = {h * w}): FFTs are counted, but "
            f"{fc['ratio_xla_over_textbook']:.1f}x too high (XLA prices an FFT at 8 x prod(log2 n_i) per operand "
            f"element, a product of the logs instead of their sum; the parsed-HLO formula here gives "
            f"{fc['parsed']['xla_flops'] / 1e6:.1f} MFLOP).")
    sc = res["scan_check"]
    if sc["xla_flops_K"] is not None and sc["xla_flops_K_small"] is not None:
        counts = (f"{sc['xla_flops_K'] / 1e9:.4f} GFLOP for K = {sc['K']} and "
                  f"{sc['xla_flops_K_small'] / 1e9:.4f} GFLOP for K = {sc['K_small']}")
        if sc["body_counted_once"]:
            lines.append(f"[a] The forward pass's cost analysis counts the lax.scan body once, not K times: "
                         f"it reports the same {counts}. So [a] leaves out K - 1 layers.")
        else:
            lines.append(f"[a] The forward pass's cost analysis reports {counts}: not the same, so it is not "
                         f"simply counting the scan body once here (XLA removes a loop of one iteration); "
                         f"[b] and [c] assume it does, as it does for loops of more iterations.")
    for f in res["inference"]:
        r = f["flop_rate"]
        if r.get("available") and r.get("fft_share_of_scan_corrected_xla_flops") is not None:
            lines.append(
                f"[b] = [a] + (K - 1) x the cost analysis of one standalone layer "
                f"({res['layer_cost']['flops'] / 1e9:.3f} GFLOP per call on the batch). With XLA's FFT pricing, "
                f"FFTs are {100 * r['fft_share_of_scan_corrected_xla_flops']:.0f}% of [b] for K = {f['num_layers']}, "
                f"{_lpp(f['use_lpp'])}.")
            break
    lines.append("[c] = [b] with every FFT instruction of the compiled HLO re-priced at 2.5 N log2 N (real) or "
                 "5 N log2 N (complex): the closest of the three to the arithmetic done. XLA counts an "
                 "elementwise op as 1 flop per element and transcendentals (exp, log, cos, ...) apart, not in "
                 "'flops'.")
    for f in res["inference"]:
        r = f["flop_rate"]
        if r.get("available") and r.get("scan_corrected_gbytes_per_s") is not None and not f["use_lpp"]:
            lines.append(f"Memory traffic, K = {f['num_layers']}, {_lpp(f['use_lpp'])}: XLA's 'bytes accessed' "
                         f"(+ (K - 1) x one layer) is {r['scan_corrected_bytes_accessed_per_call'] / 1e9:.1f} GB "
                         f"per call = {r['scan_corrected_gbytes_per_s']:.1f} GB/s at the median time.")
    no_lpp, lpp = res["inference"]
    if lpp["cost"] is not None and no_lpp["cost"] is not None:
        extra_s = lpp["median_s"] - no_lpp["median_s"]
        extra_flops = lpp["cost"]["flops"] - no_lpp["cost"]["flops"]
        if extra_s > 0:
            lines.append(f"Lpp by difference: {extra_flops / 1e9:.1f} GFLOP per call (the convolutions) in "
                         f"{extra_s:.2f} s more = {extra_flops / extra_s / 1e9:.1f} GFLOP/s = "
                         f"{extra_flops / extra_s / (res['matmul']['gflops_per_s'] * 1e9):.2f} of peak matmul "
                         f"(a difference of two noisy medians).")
    lines.append("[d] First call minus the median steady-state call, as asked; where the steady-state calls "
                 "spread (min-max) by more than the compile time, this difference is noise, and the direct "
                 "measurement in the result column (lower() + compile() of a fresh jit) is the one to read.")
    tr = res["train"]
    lines.append(f"Training: loss over the {len(tr['losses'])} warm-up + timed steps "
                 f"{tr['losses'][0]:.4f} -> {tr['losses'][-1]:.4f}; {tr['trainable_parameters']} trainable parameters; "
                 f"step traced {tr['traces']} time(s).")
    return lines


HEADER = ["measurement", "configuration", "median ms (min-max)", "result", "note"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8, help="inference: images per batch")
    ap.add_argument("--size", type=int, default=256, help="inference: image height and width")
    ap.add_argument("--layers", type=int, default=40, help="K, the number of unfolded layers")
    ap.add_argument("--compile-layers", type=int, default=None,
                    help="the smaller K whose compile time is compared (default K / 4, at least 1)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median reported)")
    ap.add_argument("--train-batch", type=int, default=4, help="training step: images per batch")
    ap.add_argument("--train-size", type=int, default=128, help="training step: image height and width")
    ap.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n float32 matmul for the peak rate")
    ap.add_argument("--device-note", default=None, help="free text put in the note column (e.g. the GPU model)")
    ap.add_argument("--json", help="write the numbers to this JSON file")
    args = ap.parse_args(argv)
    for name in ("batch", "size", "layers", "repeats", "train_batch", "train_size", "matmul_size"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    small_k = args.compile_layers if args.compile_layers is not None else max(args.layers // 4, 1)
    if small_k < 1:
        fail(f"--compile-layers must be >= 1, got {small_k}")
    for name in ("size", "train_size"):
        if getattr(args, name) < KERNEL_SIZE:
            fail(f"--{name.replace('_', '-')} {getattr(args, name)} is smaller than the {KERNEL_SIZE}x{KERNEL_SIZE} kernel")

    machine = machine_info()
    print(f"devices: {machine['devices']} (backend {machine['backend']})")
    print(f"jax {machine['jax']}, numpy {machine['numpy']}, python {machine['python']}, {machine['platform']}")
    print(f"cpu_count {machine['cpu_count']} (usable {machine['usable_cpus']}), "
          f"load average at start {machine['load_average_at_start']}")
    if args.device_note:
        print(f"device note: {args.device_note}")

    t_start = time.perf_counter()
    K = args.layers
    _, y, ops = blur_problem(args.batch, args.size)

    print(f"inference, K = {K} ...", flush=True)
    model = build_model(K, use_lpp=True)
    inference = [bench_forward(model, y, ops, use_lpp, args.repeats) for use_lpp in (False, True)]
    layer = layer_cost(model, y, ops)

    print(f"compile time, K = {small_k} ...", flush=True)
    small = build_model(small_k, use_lpp=False)
    compile_small = bench_forward(small, y, ops, False, args.repeats)

    print("peak matmul ...", flush=True)
    matmul = bench_matmul(args.matmul_size, args.repeats)
    peak = matmul["gflops_per_s"] * 1e9
    for f in inference:
        f["flop_rate"] = flop_rates(f["cost"], layer, K, f["median_s"], peak)
    fft = fft_check(args.size)
    cost_k, cost_small = inference[0]["cost"], compile_small["cost"]
    scan_check = {"K": K, "K_small": small_k,
                  "xla_flops_K": None if cost_k is None else cost_k["flops"],
                  "xla_flops_K_small": None if cost_small is None else cost_small["flops"]}
    scan_check["body_counted_once"] = (cost_k is not None and cost_small is not None
                                       and cost_k["flops"] == cost_small["flops"])

    print("one layer piece by piece ...", flush=True)
    parts = bench_parts(model, y, ops, max(args.repeats, 5), peak)

    print(f"training step, K = {K} ...", flush=True)
    train = bench_train_step(K, args.train_batch, args.train_size, args.repeats)

    not_finite = [f"K={f['num_layers']} {_lpp(f['use_lpp'])}" for f in inference + [compile_small]
                  if not f["output_finite"]]
    if not_finite:
        print(f"warning: non-finite output from {not_finite}", file=sys.stderr)
    if train["traces"] != 1:
        print(f"warning: the training step was traced {train['traces']} times; expected once", file=sys.stderr)
    if not train["losses_finite"]:
        print("warning: non-finite training loss", file=sys.stderr)

    results = {
        "machine": machine,
        "config": {k: getattr(args, k) for k in ("batch", "size", "layers", "repeats", "train_batch",
                                                  "train_size", "matmul_size", "device_note")}
                  | {"compile_layers": small_k, "kernel": f"gaussian({KERNEL_SIZE}, {KERNEL_STD})",
                     "convention": "correlation"},
        "inference": inference,
        "compile": [{k: f[k] for k in ("num_layers", "use_lpp", "first_s", "median_s", "min_s", "max_s",
                                       "first_minus_median_s", "aot_trace_lower_s", "aot_compile_s",
                                       "aot_total_s")}
                    for f in (inference[0], compile_small, inference[1])],
        "layer_cost": layer,
        "train": train,
        "matmul": matmul,
        "fft_check": fft,
        "scan_check": scan_check,
        "parts": parts,
    }
    rows = table_rows(results, args.device_note)
    notes = footnotes(results)
    results["table"] = {"header": HEADER, "rows": rows, "footnotes": notes}
    results["total_s"] = time.perf_counter() - t_start
    try:
        results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        results["machine"]["load_average_at_end"] = None
    print()
    print(markdown_table(HEADER, rows))
    print()
    for line in notes:
        print(f"- {line}")
    print(f"\none layer piece by piece (batch {args.batch}, {args.size}x{args.size}; floor: FFT round trips at the "
          f"measured time, other FLOPs at the measured {matmul['gflops_per_s']:.0f} GFLOP/s matmul rate):\n")
    print(markdown_table(PARTS_HEADER, parts_rows(parts)))
    print(f"\nmedian of {args.repeats} runs after a warm-up call; total {results['total_s']:.1f} s; "
          f"load average at end {results['machine']['load_average_at_end']}")
    if args.json:
        write_json(args.json, results)
        print(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
