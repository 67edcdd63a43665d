"""Table 1 of the iRestNet paper (Corbineau et al. 2019): mean SSIM per setting and method.

Degrades the images of ``--data`` with the iRestNet test protocol (256x256 centre crops,
float64 circular cross-correlation, seeded noise; see ``jaxrestore.protocols.irestnet``),
restores them with each method, and prints a Markdown table of mean SSIM (the paper's
scikit-image protocol on ``[6:250, 6:250]``) beside the paper's numbers, then one of mean PSNR.

    python benchmarks/irestnet_table1.py --data ../shared/data/bsds500/val --json results/table1.json

The paper's numbers are on the 200 BSDS500 *test* images; ``../shared/data`` holds the 100
*validation* images, so the comparison is close but not image-for-image.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_data, fail, markdown_table, write_json  # noqa: E402

from jaxrestore.metrics import ssim_irestnet  # noqa: E402
from jaxrestore.presets import Preset, load_preset  # noqa: E402
from jaxrestore.protocols.irestnet import (  # noqa: E402
    DegradedSet,
    degrade_set,
    estimate_sigmas,
    load_test_images,
    restore_irestnet,
    restore_var,
)

SETTINGS = ["gaussA", "gaussB", "gaussC", "motion", "square"]


def method_blurred(deg: DegradedSet, preset: Preset, args) -> np.ndarray:
    return deg.y


def method_var(deg: DegradedSet, preset: Preset, args) -> np.ndarray:
    v = preset.var
    lam = preset.var_lambda(estimate_sigmas(deg.y))  # per image where the preset scales lam with sigma_hat
    return restore_var(deg.y, preset.kernel(args.kernel_dir), preset.convention, lam, v["delta"], v["iterations"])


def method_irestnet(deg: DegradedSet, preset: Preset, args) -> np.ndarray:
    """iRestNet: the published weights from ``--weights DIR`` (``<setting>_layers.npz``,
    ``<setting>_lpp.npz``: the authors' TV variant and cross-correlation), else our own weights
    shipped in the package."""
    from jaxrestore.models.irestnet import load_published

    if args.weights:
        folder = Path(args.weights)
        lpp = folder / f"{preset.name}_lpp.npz"
        model = load_published(folder / f"{preset.name}_layers.npz", lpp if lpp.is_file() else None)
        convention = "correlation"
    else:
        from jaxrestore.models import pretrained

        model, convention = pretrained.irestnet(preset.name), preset.convention
    return restore_irestnet(model, deg.y, preset.kernel(args.kernel_dir), convention)


# name -> restore(degraded set, preset, args) -> (N, 256, 256, 3); later issues add methods here.
METHODS: dict[str, Callable] = {"blurred": method_blurred, "var": method_var, "irestnet": method_irestnet}


def plot_gain_over_var(scores, path, method="irestnet") -> None:
    """The paper's Fig. 4: per-image SSIM gain of ``method`` over VAR, sorted, one curve per
    setting; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxrestore.data import atomic_open

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for setting, by_method in scores.items():
        gain = np.sort(np.asarray(by_method[method]) - np.asarray(by_method["var"]))[::-1]
        ax.plot(np.arange(1, len(gain) + 1), gain, label=f"{setting} (mean {gain.mean():+.3f})")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("image (sorted by gain)")
    ax.set_ylabel(f"SSIM({method}) - SSIM(VAR)")
    ax.set_title(f"Per-image SSIM gain of {method} over VAR")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def _psnr(gt, est) -> float:
    return float(10.0 * np.log10(1.0 / np.mean((np.clip(est, 0.0, 1.0) - gt) ** 2)))


def evaluate(data, settings, methods, limit=None, seed=0, kernel_dir=None, args=None, progress=True):
    """Per-image SSIM (the paper's protocol) and PSNR (full image, output clipped to [0, 1]) per
    setting and method, and seconds per method."""
    names, gt = load_test_images(data, limit)
    scores: dict[str, dict[str, list[float]]] = {}
    psnrs: dict[str, dict[str, list[float]]] = {}
    timing: dict[str, dict[str, float]] = {}
    bar = tqdm(total=len(settings) * len(methods), desc="settings x methods", disable=not progress, file=sys.stderr)
    for setting in settings:
        preset = load_preset(setting)
        deg = degrade_set(names, gt, preset, seed=seed, kernel_dir=kernel_dir)
        scores[setting], psnrs[setting], timing[setting] = {}, {}, {}
        for m in methods:
            t0 = time.perf_counter()
            est = METHODS[m](deg, preset, args)
            timing[setting][m] = time.perf_counter() - t0
            scores[setting][m] = [ssim_irestnet(g, e) for g, e in zip(deg.gt, est)]
            psnrs[setting][m] = [_psnr(g, e) for g, e in zip(deg.gt, est)]
            bar.set_postfix_str(f"{setting}/{m}: {np.mean(scores[setting][m]):.3f}")
            bar.update()
    bar.close()
    return names, scores, psnrs, timing


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=default_data("bsds500", "val"), help="folder of test images")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--methods", default="blurred,var", help=f"comma-separated, from {sorted(METHODS)}")
    ap.add_argument("--limit", type=int, help="first N images (sorted names)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the protocol's noise generator")
    ap.add_argument("--kernel-dir", help="folder with irestnet_25x25.npz (motion setting)")
    ap.add_argument("--weights", help="folder with the published <setting>_layers.npz / <setting>_lpp.npz "
                    "(method irestnet); default: our own weights shipped in the package")
    ap.add_argument("--json", help="write {'n_images', 'settings': {setting: {method: mean SSIM}}, 'psnr': {...}}")
    ap.add_argument("--plot", help="PNG of the per-image SSIM gain of iRestNet over VAR, sorted (paper's Fig. 4); "
                    "needs methods var and irestnet")
    args = ap.parse_args(argv)

    settings = [s for s in args.settings.split(",") if s]
    methods = [m for m in args.methods.split(",") if m]
    if not Path(args.data).is_dir():
        fail(f"data folder not found: {args.data} (pass --data)")
    for m in methods:
        if m not in METHODS:
            fail(f"unknown method {m!r}; available: {', '.join(sorted(METHODS))}")
    if args.plot and not {"var", "irestnet"} <= set(methods):
        fail("--plot needs --methods to include var and irestnet")
    if args.weights and not Path(args.weights).is_dir():
        fail(f"weights folder not found: {args.weights}")
    try:
        presets = {s: load_preset(s) for s in settings}
        for p in presets.values():
            p.kernel(args.kernel_dir)
        names, scores, psnrs, timing = evaluate(args.data, settings, methods, args.limit, args.seed, args.kernel_dir, args)
    except ValueError as e:
        fail(str(e))

    header = ["method"] + settings
    rows = []
    for m in methods:
        rows.append([m] + [f"{np.mean(scores[s][m]):.3f} ({presets[s].paper.get(m, '-')})" for s in settings])
    print(f"\nMean SSIM on {len(names)} images of {args.data} (paper's Table 1 in parentheses, 200 BSDS500 test images)\n")
    print(markdown_table(header, rows))
    print("\nMean PSNR (dB; full 256x256 image, output clipped to [0, 1]; the paper reports SSIM only)\n")
    print(markdown_table(header, [[m] + [f"{np.mean(psnrs[s][m]):.2f}" for s in settings] for m in methods]))
    print("\nseconds per setting: " + ", ".join(f"{s}: " + "/".join(f"{m} {timing[s][m]:.1f}" for m in methods) for s in settings))
    out = {
        "n_images": len(names),
        "data": str(args.data),
        "seed": args.seed,
        "settings": {s: {m: float(np.mean(scores[s][m])) for m in methods} for s in settings},
        "psnr": {s: {m: float(np.mean(psnrs[s][m])) for m in methods} for s in settings},
        "paper": {s: {m: presets[s].paper.get(m) for m in methods} for s in settings},
        "per_image": {s: {m: dict(zip(names, map(float, scores[s][m]))) for m in methods} for s in settings},
    }
    if args.json:
        write_json(args.json, out)
    if args.plot:
        plot_gain_over_var(scores, args.plot)
        print(f"wrote {args.plot}")
    return out


if __name__ == "__main__":
    main()
