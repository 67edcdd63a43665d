"""Tune the VAR baseline (projected gradient on TV (13)) for mean SSIM, per iRestNet setting.

For each smoothing ``delta`` of a small grid, a golden-section search over ``log10(lam)`` finds
the ``lam`` of best mean SSIM (paper protocol) on the first ``--limit`` images of ``--data``;
the best pair is printed (and written to ``--json``) for ``configs/presets/<setting>.yaml``.
For a setting whose noise level varies per image (GaussB), ``lam`` may also scale with each
image's estimated noise level as ``(sigma_hat / sigma_ref) ** p``; ``p`` is searched too.

    python benchmarks/tune_var.py --data ../shared/data/bsds500/val --limit 30 --json results/var_tuning.json
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_data, fail, markdown_table, write_json  # noqa: E402

from jaxrestore.metrics import ssim_irestnet  # noqa: E402
from jaxrestore.presets import load_preset  # noqa: E402
from jaxrestore.protocols.irestnet import degrade_set, estimate_sigmas, load_test_images, restore_var  # noqa: E402

SETTINGS = ["gaussA", "gaussB", "gaussC", "motion", "square"]


def golden_max(f, lo, hi, evals):
    """Maximise a unimodal ``f`` on ``[lo, hi]`` with ``evals`` evaluations; returns (x, f(x), log)."""
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    log = [(c, fc), (d, fd)]
    for _ in range(evals - 2):
        if fc >= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
            log.append((c, fc))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
            log.append((d, fd))
    return max(log, key=lambda t: t[1]) + (log,)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=default_data("bsds500", "val"))
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--limit", type=int, default=30)
    ap.add_argument("--deltas", default="0.005,0.01,0.02")
    ap.add_argument("--log-lam-range", default="-7,-3.5")
    ap.add_argument("--evals", type=int, default=7, help="SSIM evaluations per golden-section search")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--sigma-exponents", default="0,1,2",
                    help="for settings whose noise level varies per image (GaussB): lam_i = lam * (sigma_hat_i / "
                         "sigma_ref)^p with sigma_ref the middle of the noise range; each p is searched")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if not Path(args.data).is_dir():
        fail(f"data folder not found: {args.data}")
    names, gt = load_test_images(args.data, args.limit)
    lo, hi = (float(v) for v in args.log_lam_range.split(","))
    results, rows = {}, []
    for setting in args.settings.split(","):
        preset = load_preset(setting)
        deg = degrade_set(names, gt, preset)
        kernel = preset.kernel()
        best = None
        t0 = time.time()
        varying = preset.noise_range is not None
        sigma_ref = float(np.mean(preset.noise_range)) if varying else None
        exponents = [float(p) for p in args.sigma_exponents.split(",")] if varying else [0.0]
        sigma_hat = estimate_sigmas(deg.y)
        for delta in (float(d) for d in args.deltas.split(",")):
            for p in exponents:
                def score(loglam):
                    lam = 10.0**loglam * (sigma_hat / sigma_ref) ** p if p else 10.0**loglam
                    x = restore_var(deg.y, kernel, preset.convention, lam, delta, args.iterations)
                    s = float(np.mean([ssim_irestnet(g, e) for g, e in zip(deg.gt, x)]))
                    print(f"  {setting} delta={delta:g} p={p:g} lam={10**loglam:.3e} ssim={s:.4f}", flush=True)
                    return s

                loglam, s, _ = golden_max(score, lo, hi, args.evals)
                if best is None or s > best[3]:
                    best = (10.0**loglam, delta, p, s)
        lam, delta, p, s = best
        results[setting] = {"lam": float(f"{lam:.3g}"), "delta": delta, "ssim": s}
        if p:
            results[setting].update(sigma_exponent=p, sigma_ref=sigma_ref)
        rows.append([setting, f"{lam:.3g}", delta, f"{p:g}" if p else "-", s, f"{time.time() - t0:.0f}"])
        print(f"{setting}: lam={lam:.3g} delta={delta} sigma exponent={p:g} mean SSIM {s:.4f}", flush=True)
    print(markdown_table(["setting", "lam", "delta", "sigma exponent", f"SSIM (first {len(names)})", "seconds"], rows))
    if args.json:
        write_json(args.json, {"n_images": len(names), "iterations": args.iterations, "settings": results})


if __name__ == "__main__":
    main()
