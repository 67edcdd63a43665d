"""Tuning grids of the PnP-ReG protocol (``jaxrestore.protocols.reg``): mean PSNR per parameter
value and setting, on ``bsds500/val`` images that are *not* in CBSD68 (the test set), centre
crops, seed ``i`` for image ``i``. The chosen values are written by hand into the module's
``TV_PARAMS`` / ``PNP_PARAMS`` / ``REG_PARAMS`` with these grids in comments.

    python benchmarks/tune_reg.py --grid tv --settings k2_2.55,k2_7.65,keep0.2,x2
    python benchmarks/tune_reg.py --grid pnp --settings k2_2.55,keep0.1
    python benchmarks/tune_reg.py --grid reg --settings k2_2.55,k5_7.65 --mu 0.004,0.01 --sigma-scale 1 --model runs/reg/cpu/reg_cpu.npz

``--grid reg`` runs PnP-GD for the largest of ``--iterations`` once per (mu, sigma) and reads the
PSNR after every iteration count of the list off the same run.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_data, fail, markdown_table  # noqa: E402

from jaxrestore.protocols import reg as protocol  # noqa: E402


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def tuning_set(data, setting_names, n_images: int, crop: int, kernels12):
    """{setting: (gts, ys, ops)} on the first ``n_images`` val images not in CBSD68."""
    val = Path(data) / "bsds500" / "val"
    names = protocol.tuning_names(val, Path(data) / "bsds500" / "CBSD68_subset_names.txt")[:n_images]
    out = {}
    for name in setting_names:
        s = protocol.setting(name)
        _, gts = protocol.load_images(val, names=names, crop=crop, factor=s.factor)
        obs = [protocol.degrade(s, g, i, kernels12=kernels12) for i, g in enumerate(gts)]
        out[name] = (gts, [o[0] for o in obs], [o[1] for o in obs])
    return names, out


def mean_psnr(gts, xs) -> float:
    return float(np.mean([protocol.score(g, x) for g, x in zip(gts, xs)]))


def print_grid(title, keys, columns, cells):
    """``cells[(key, column)] -> PSNR``: rows = parameter values, one column per setting."""
    rows = [[k] + [cells.get((k, c)) for c in columns] for k in keys]
    print(f"\n{title}\n")
    print(markdown_table(["params"] + list(columns), rows))
    for c in columns:
        best = max(keys, key=lambda k: cells.get((k, c), -np.inf))
        print(f"best {c}: {best} {cells[(best, c)]:.3f}")
    sys.stdout.flush()


def grid_tv(data_sets, args):
    lams = floats(args.lam) if args.lam else [1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4]
    its = ints(args.iterations) if args.iterations else [500]
    cells, keys = {}, []
    for lam, it in itertools.product(lams, its):
        key = f"lam {lam:g}, {it} it"
        keys.append(key)
        for name, (gts, ys, ops) in data_sets.items():
            cells[(key, name)] = mean_psnr(gts, protocol.restore_tv(name, ys, ops, lam=lam, iterations=it))
    return keys, cells


def grid_pnp(data_sets, args):
    from jaxrestore.models import pretrained
    from jaxrestore.models.drunet import as_denoiser

    den, params = as_denoiser(pretrained.drunet("small"))
    its = ints(args.iterations) if args.iterations else [8, 16]
    lams = floats(args.lam) if args.lam else [0.23, 0.5]
    smaxs = floats(args.sigma_max) if args.sigma_max else [49.0]
    smins = floats(args.sigma_min) if args.sigma_min else [0.0]  # 0: the noise level
    cells, keys = {}, []
    for it, lam, smax, smin in itertools.product(its, lams, smaxs, smins):
        key = f"{it} it, lam {lam:g}, {smax:g} -> {f'{smin:g}' if smin else 'noise'}"
        keys.append(key)
        for name, (gts, ys, ops) in data_sets.items():
            xs = protocol.restore_pnp(name, ys, ops, den, params, num_iters=it, lam=lam, sigma_max=smax / 255,
                                      sigma_min=smin / 255 if smin else None)
            cells[(key, name)] = mean_psnr(gts, xs)
    return keys, cells


def grid_reg(data_sets, args):
    if not args.model:
        fail("--grid reg needs --model FILE (e.g. runs/reg/cpu/reg_cpu.npz)")
    grad_fn, params = protocol.load_gradient(args.model)
    its = ints(args.iterations) if args.iterations else [100, 200, 300]
    mus = floats(args.mu) if args.mu else [0.004, 0.01, 0.02]
    scales = floats(args.sigma_scale) if args.sigma_scale else [1.0]
    cells, keys = {}, [f"mu {m:g}, sigma x{sc:g}, {it} it" for m, sc, it in itertools.product(mus, scales, its)]
    for mu, sc in itertools.product(mus, scales):
        for name, (gts, ys, ops) in data_sets.items():
            s = protocol.setting(name)
            # noiseless settings: the scale multiplies 1/255 (the authors' inpainting sigma_r)
            sigma = dict(sigma_scale=sc) if s.noise > 0 else dict(sigma_r=sc / 255)
            traj = protocol.reg_psnr_trajectory(name, ys, ops, gts, grad_fn, params, mu=mu, iterations=max(its),
                                                optimizer=args.optimizer, **sigma)
            for it in its:
                # the trace is float32 on device; the table's score is float64 on the clipped output: same to ~1e-4 dB
                cells[(f"mu {mu:g}, sigma x{sc:g}, {it} it", name)] = float(traj[:, it - 1].mean())
            print(f"  {name} mu {mu:g} sigma x{sc:g}: " + ", ".join(f"{it}: {traj[:, it - 1].mean():.3f}" for it in its),
                  flush=True)
    return keys, cells


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", required=True, choices=("tv", "pnp", "reg"))
    ap.add_argument("--settings", required=True, help="comma-separated setting names (e.g. k2_2.55,keep0.2,x2)")
    ap.add_argument("--data", default=default_data(), help="the shared data folder (default ../shared/data)")
    ap.add_argument("--images", type=int, default=3, help="first N val images not in CBSD68 (default 3)")
    ap.add_argument("--crop", type=int, default=256, help="centre crop size (default 256)")
    ap.add_argument("--lam", help="tv: lam values; pnp: lam values")
    ap.add_argument("--iterations", help="iteration counts")
    ap.add_argument("--sigma-max", help="pnp: sigma_max values (/255)")
    ap.add_argument("--sigma-min", help="pnp: sigma_min values (/255; 0 = the noise level)")
    ap.add_argument("--mu", help="reg: step sizes (Adam learning rates)")
    ap.add_argument("--sigma-scale", help="reg: sigma_r as multiples of the noise std (of 1/255 when noiseless)")
    ap.add_argument("--optimizer", default="adam", choices=("adam", "gd"))
    ap.add_argument("--model", help="reg: PnP-ReG weights file")
    args = ap.parse_args(argv)

    settings = [s for s in args.settings.split(",") if s]
    try:
        for s in settings:
            protocol.setting(s)
        kernels12 = protocol.load_kernels12(Path(args.data) / "kernels") if any(
            protocol.setting(s).task == "deblur" for s in settings) else None
        names, data_sets = tuning_set(args.data, settings, args.images, args.crop, kernels12)
    except ValueError as e:
        fail(str(e))
    t0 = time.process_time()
    keys, cells = {"tv": grid_tv, "pnp": grid_pnp, "reg": grid_reg}[args.grid](data_sets, args)
    cpu = time.process_time() - t0
    print_grid(f"{args.grid} grid: mean PSNR (dB, RGB, clipped) on {len(names)} val images not in CBSD68 "
               f"({', '.join(names)}), centre {args.crop}x{args.crop} crops; CPU time {cpu:.0f} s", keys, settings, cells)
    for name, (gts, ys, _) in data_sets.items():
        if protocol.setting(name).task != "sr2":
            print(f"observation {name}: {mean_psnr(gts, ys):.3f}")
    return keys, cells


if __name__ == "__main__":
    main()
