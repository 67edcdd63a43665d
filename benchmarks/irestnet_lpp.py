"""What iRestNet's post-processing ``Lpp`` does, per weights file: SSIM, PSNR and colour of the
layers' output ``x_K`` and of the final output, on the iRestNet test protocol (GaussA by default).

    python benchmarks/irestnet_lpp.py runs/irestnet/cpu-gaussA/irestnet_gaussA.npz other.npz --limit 20

Per file and stage it prints the mean SSIM (the paper's protocol), the mean PSNR (full image,
clipped to [0, 1]), the mean error of each colour channel (output - truth, averaged over pixels
and images: a colour cast shows up here and barely in SSIM), and the mean per-pixel spread of the
three channels relative to the truth's (below 1: colours are washed out). With no file, the
weights shipped in the package are used. Files are read with
:func:`jaxrestore.models.irestnet_io.load_weights` (the training script's exports).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_data, fail, markdown_table, write_json  # noqa: E402

from jaxrestore.metrics import ssim_irestnet  # noqa: E402
from jaxrestore.presets import load_preset  # noqa: E402
from jaxrestore.protocols.irestnet import degrade_set, load_test_images, restore_irestnet  # noqa: E402


def describe(gt: np.ndarray, est: np.ndarray) -> dict:
    """SSIM, PSNR, per-channel mean error and relative channel spread of ``est`` against ``gt``
    (both ``(N, H, W, 3)``)."""
    clipped = np.clip(est, 0.0, 1.0)
    psnr = [10.0 * np.log10(1.0 / np.mean((e - g) ** 2)) for g, e in zip(gt, clipped)]
    return {
        "ssim": float(np.mean([ssim_irestnet(g, e) for g, e in zip(gt, est)])),
        "psnr": float(np.mean(psnr)),
        "channel_error": [float(v) for v in np.mean(clipped - gt, axis=(0, 1, 2))],
        "spread_ratio": float(np.mean(np.std(clipped, axis=-1)) / np.mean(np.std(gt, axis=-1))),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", nargs="*", help="iRestNet weights files (default: the shipped ones for --setting)")
    ap.add_argument("--data", default=default_data("bsds500", "val"), help="folder of test images")
    ap.add_argument("--setting", default="gaussA", help="degradation preset (default gaussA)")
    ap.add_argument("--limit", type=int, help="first N images (sorted names)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the protocol's noise generator")
    ap.add_argument("--json", help="write {'n_images', 'rows': [{'weights', 'stage', 'ssim', 'psnr', ...}]}")
    args = ap.parse_args(argv)
    if not Path(args.data).is_dir():
        fail(f"data folder not found: {args.data} (pass --data)")
    if args.limit is not None and args.limit < 1:
        fail(f"--limit must be >= 1, got {args.limit}")
    for w in args.weights:
        if not Path(w).is_file():
            fail(f"weights file not found: {w}")
    try:
        from jaxrestore.models import pretrained
        from jaxrestore.models.irestnet_io import load_weights

        preset = load_preset(args.setting)
        models = {w: load_weights(w) for w in args.weights} or {"shipped": pretrained.irestnet(preset.name)}
        names, gt = load_test_images(args.data, args.limit)
        deg = degrade_set(names, gt, preset, seed=args.seed)
    except ValueError as e:
        fail(str(e))

    rows, table = [], []
    for label, model in models.items():
        if not model.config.use_lpp:
            fail(f"{label} has no Lpp (config.use_lpp is false)")
        for stage, use_lpp in (("x_K", False), ("output", True)):
            est = restore_irestnet(model, deg.y, preset.kernel(), preset.convention, use_lpp=use_lpp)
            r = {"weights": label, "stage": stage, "lpp_residual": model.config.lpp_residual, **describe(deg.gt, est)}
            rows.append(r)
            table.append([label, r["lpp_residual"], stage, f"{r['ssim']:.4f}", f"{r['psnr']:.2f}",
                          " / ".join(f"{v:+.4f}" for v in r["channel_error"]), f"{r['spread_ratio']:.3f}"])
    print(f"\niRestNet {preset.name}: layers' output x_K and final output on {len(names)} images of {args.data}\n")
    print(markdown_table(["weights", "Lpp residual", "stage", "SSIM", "PSNR (dB)", "mean error R / G / B",
                          "channel spread / truth's"], table))
    out = {"setting": preset.name, "n_images": len(names), "data": str(args.data), "seed": args.seed, "rows": rows}
    if args.json:
        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
