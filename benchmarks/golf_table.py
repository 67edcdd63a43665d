"""The Golf Optimizer's table (blind deblurring; ../shared/PROTOCOLS.md section 4): mean PSNR and
SSIM of the blurred input, the first step ``G1`` alone and ``G1`` + ``K`` steps of ``G2``, plus
the non-blind upper bound (PnP-ADMM given the true kernel) where the pair folder has kernels; the
model's size and its time per image, beside the paper's GoPro numbers.

    python benchmarks/make_blind_pairs.py --images ../shared/data/bsds500/val --out pairs/bsds_val --seed 1 --skip 8
    python benchmarks/golf_table.py --pairs pairs/bsds_val --json results/golf_bsds_val.json
    python benchmarks/golf_table.py --pairs ../shared/data/gopro_pairs --json results/golf_gopro.json

``--pairs`` is a pair folder in any layout of :func:`jaxrestore.data.blind.pair_paths` (``blur/``
and ``sharp/`` with the same names, optionally ``kernels/<stem>.npy`` and ``pairs.json`` with the
noise std per image; the GoPro layout; or ``<name>_blur<N>.png`` beside ``<name>_sharp<N>.png``).
Scores: PSNR (RGB, full image, output clipped to [0, 1]) and SSIM (:func:`jaxrestore.metrics.ssim`).
``pnp-admm-true-kernel``: our PnP-ADMM with the shipped DRUNet and the image's own kernel; the
pairs are linear ("valid") blurs, so the blurred image is padded by the kernel size (edge values)
for the circular model and the result cropped back; noise std from ``pairs.json``, else estimated.

Time: ``golf-3`` on this machine's default JAX device, warm (compiled once), median of 3 calls, on
random images of 256x256 and 1280x720 (a GoPro frame; untiled below 2 megapixels, as the CLI).
The paper's 16.94 ms is on a GTX 1080 Ti.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from _common import fail, markdown_table, write_json  # noqa: E402
from jaxrestore.data import load_image  # noqa: E402
from jaxrestore.data.blind import pair_paths  # noqa: E402
from jaxrestore.metrics import psnr, ssim  # noqa: E402
from jaxrestore.models.golf import count_parameters, deblur, load_golf, split  # noqa: E402

PAPER = {"psnr": 28.06, "ssim": 0.85, "mb": {"g1": 1.78, "g2": 0.46, "total": 2.24}, "ms": 16.94,
         "params": {"g1": 466348, "g2": 120188}}
ITERATIONS = {"g1": 0, "golf-1": 1, "golf-3": 3, "golf-10": 10}


def _model(path):
    if path:
        return load_golf(path), str(path)
    from jaxrestore.models import pretrained

    return pretrained.golf(), f"the shipped golf_{pretrained.DEFAULT_GOLF}"


def _true_kernel(y: np.ndarray, kernel: np.ndarray, sigma: float | None) -> np.ndarray:
    from jaxrestore.batch import restore_batch

    pad = max(kernel.shape)
    yp = np.pad(y, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    kw = {} if sigma is None else {"sigma": max(sigma, 1.0 / 255.0)}  # a floor: the padded border is not the true one
    x = restore_batch("pnp-admm", [yp], [kernel], normalize=True, **kw)[0]
    return np.asarray(x)[pad:pad + y.shape[0], pad:pad + y.shape[1]]


def _time(model, shape) -> float:
    y = jax.random.uniform(jax.random.key(0), shape, jnp.float32)
    jax.block_until_ready(deblur(model, y, iterations=3)[0])
    times = []
    for _ in range(3):
        t = time.perf_counter()
        jax.block_until_ready(deblur(model, y, iterations=3)[0])
        times.append(time.perf_counter() - t)
    return 1000.0 * float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True, help="pair folder (see above)")
    ap.add_argument("--limit", type=int, help="first N pairs (sorted names)")
    ap.add_argument("--models", help="a golf_*.npz (default: the shipped one, jaxrestore.models.pretrained.DEFAULT_GOLF)")
    ap.add_argument("--no-upper-bound", action="store_true", help="skip pnp-admm-true-kernel even when kernels exist")
    ap.add_argument("--no-timing", action="store_true", help="skip the ms-per-image rows")
    ap.add_argument("--figure", help="also write a PNG of centre crops: blurred | g1 | golf-3 | sharp, one row per image")
    ap.add_argument("--figure-rows", type=int, default=3, help="images in the figure (default 3, the first ones)")
    ap.add_argument("--figure-crop", type=int, default=192, help="crop size in the figure (default 192)")
    ap.add_argument("--json", help="write {'n_images', 'psnr', 'ssim', 'params', 'mb', 'ms_per_image'}")
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        fail(f"--limit must be >= 1, got {args.limit}")
    try:
        pairs = pair_paths(args.pairs)[: args.limit]
        model, origin = _model(args.models)
    except ValueError as e:
        fail(str(e))
    root = Path(args.pairs)
    kernels_dir = root / "kernels"
    noise = json.loads((root / "pairs.json").read_text())["images"] if (root / "pairs.json").is_file() else {}
    upper = kernels_dir.is_dir() and not args.no_upper_bound
    methods = ["blurred", *ITERATIONS] + (["pnp-admm-true-kernel"] if upper else [])
    scores = {m: {"psnr": [], "ssim": []} for m in methods}
    panels = []
    for b, s in tqdm(pairs, desc="golf table", unit="img", file=sys.stderr, disable=None):
        y, x = load_image(b), load_image(s)
        if y.shape != x.shape:
            fail(f"{b} is {y.shape[:2]} but {s} is {x.shape[:2]}")
        outs = {"blurred": y}
        for name, k in ITERATIONS.items():
            outs[name] = np.clip(np.asarray(deblur(model, jnp.asarray(y), iterations=k)[0]), 0.0, 1.0)
        if upper:
            kp = kernels_dir / f"{b.stem}.npy"
            if not kp.is_file():
                fail(f"{kernels_dir} has no kernel {kp.name} for {b.name} (or pass --no-upper-bound)")
            sigma = noise.get(b.name, {}).get("noise_std")
            outs["pnp-admm-true-kernel"] = _true_kernel(y, np.load(kp), None if sigma is None else sigma / 255.0)
        if args.figure and len(panels) < args.figure_rows:
            from jaxrestore.data.images import center_crop

            c = min(args.figure_crop, *y.shape[:2])
            tiles = [center_crop(np.asarray(v, np.float32), c) for v in (y, outs["g1"], outs["golf-3"], x)]
            gap = np.ones((c, 4, 3), np.float32)
            panels.append(np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1))
        for m in methods:
            scores[m]["psnr"].append(float(psnr(jnp.asarray(outs[m]), jnp.asarray(x))))
            scores[m]["ssim"].append(float(ssim(jnp.asarray(outs[m]), jnp.asarray(x))))
    mean = {metric: {m: float(np.mean(scores[m][metric])) for m in methods} for metric in ("psnr", "ssim")}
    _, params = split(model)
    counts = {"g1": count_parameters(params["G1"]), "g2": count_parameters(params["G2"])}
    mb = {k: v * 4 / 2**20 for k, v in counts.items()}
    mb["total"] = mb["g1"] + mb["g2"]
    print(f"{len(pairs)} pairs from {root}; model: {origin}\n")
    rows = [[m, mean["psnr"][m], mean["ssim"][m],
             f"{PAPER['psnr']} / {PAPER['ssim']} (GoPro)" if m == "golf-3" else "-"] for m in methods]
    print(markdown_table(["method", "PSNR (dB)", "SSIM", "paper PSNR / SSIM"], rows))
    print()
    print(markdown_table(["network", "parameters", "MB (float32)", "paper parameters", "paper MB"],
                         [["G1", counts["g1"], mb["g1"], PAPER["params"]["g1"], PAPER["mb"]["g1"]],
                          ["G2", counts["g2"], mb["g2"], PAPER["params"]["g2"], PAPER["mb"]["g2"]],
                          ["total", counts["g1"] + counts["g2"], mb["total"], sum(PAPER["params"].values()), PAPER["mb"]["total"]]]))
    ms = {}
    if not args.no_timing:
        device = jax.devices()[0]
        for label, shape in (("256x256", (256, 256, 3)), ("1280x720", (720, 1280, 3))):
            ms[label] = _time(model, shape)
        print()
        print(markdown_table(["golf-3, one image", f"ms ({device.platform}: {device.device_kind})", "paper ms (GTX 1080 Ti, GoPro frame)"],
                             [["256x256", ms["256x256"], "-"], ["1280x720", ms["1280x720"], PAPER["ms"]]]))
    if args.figure and panels:
        from jaxrestore.data import save_image

        width = max(p.shape[1] for p in panels)
        rows = [np.pad(p, ((0, 4), (0, width - p.shape[1]), (0, 0)), constant_values=1.0) for p in panels]
        save_image(args.figure, np.concatenate(rows, axis=0)[:-4])
        print(f"\nfigure: {args.figure} (blurred | g1 | golf-3 | sharp, centre crops)")
    if args.json:
        write_json(args.json, {"n_images": len(pairs), "pairs": str(root), "model": origin, "psnr": mean["psnr"],
                               "ssim": mean["ssim"], "params": counts, "mb": mb, "ms_per_image": ms, "paper": PAPER})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
