"""``jaxrestore demo``: degrade the bundled sample image with the gaussA preset and restore it
with Wiener, VAR and the shipped iRestNet; no download needed."""

from __future__ import annotations

import argparse
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxrestore.batch import WIENER_LAM_SCALE
from jaxrestore.cli.common import degrade_one, markdown, quality
from jaxrestore.cli.classic import irestnet_runner, var_restore, wiener_restore
from jaxrestore.data import sample_image, save_image
from jaxrestore.operators import Blur
from jaxrestore.presets import load_preset

COMPARISON_GAP = 4  # white pixels between the panels of comparison.png


def add_parser(sub) -> None:
    m = sub.add_parser(
        "demo", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="degrade and restore a bundled image, no download needed",
        description="Degrade the bundled sample image (scikit-image's astronaut, 256x256) with the gaussA\n"
                    "preset (Gaussian std 1.6, noise std 0.008, seed 0), restore it with Wiener, VAR and\n"
                    "iRestNet (the package's own trained gaussA weights), write clean/degraded/wiener/var/\n"
                    "irestnet.png and comparison.png, and print PSNR and SSIM.")
    m.add_argument("-o", "--output", default="jaxrestore_demo", metavar="DIR",
                   help="output folder (default ./jaxrestore_demo)")
    m.add_argument("--iterations", type=int, metavar="N", help="VAR iterations (default: the preset's)")
    m.add_argument("--size", type=int, default=256, metavar="PX", help="crop of the sample image (<= 256, default 256)")
    m.add_argument("--no-irestnet", action="store_true", help="leave out the iRestNet row (classical methods only)")
    m.set_defaults(run=run)


def run(args) -> int:
    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    if not 32 <= args.size <= 256:
        raise ValueError(f"--size must be between 32 and 256 (the sample image is 256x256; the blur is 25x25), got {args.size}")
    out = Path(args.output)
    preset = load_preset("gaussA")
    x = sample_image(args.size)
    op = Blur.from_kernel(preset.kernel(), x.shape, preset.convention)
    sigma = preset.noise_level()
    y = degrade_one(op, x, sigma, np.random.default_rng(0)).astype(np.float32)
    lam, delta, iterations = preset.var["lam"], preset.var["delta"], args.iterations or preset.var["iterations"]
    y_j = jnp.asarray(y)
    results = {
        "degraded": np.clip(y, 0.0, 1.0),
        "wiener": np.asarray(wiener_restore(op, y_j, WIENER_LAM_SCALE * sigma**2)),
        "var": np.asarray(var_restore(op, y_j, lam, delta, iterations)),
    }
    if not args.no_irestnet:
        from jaxrestore.models import pretrained

        results["irestnet"] = np.asarray(irestnet_runner(pretrained.irestnet(preset.name))(y_j, op))
    files = {"clean": x, **results}
    for name, img in files.items():
        save_image(out / f"{name}.png", img)
    gap = np.ones((x.shape[0], COMPARISON_GAP, 3), np.float32)
    shown = list(files)
    panels = [files[k] for k in shown]
    save_image(out / "comparison.png", np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1))
    print(f"{preset.name}: {preset.description}, seed 0; sample image {x.shape[0]}x{x.shape[1]}")
    print(f"wiener lam {WIENER_LAM_SCALE * sigma**2:.3g}; var lam {lam:g}, delta {delta:g}, {iterations} iterations"
          + ("" if args.no_irestnet else f"; irestnet: our shipped {preset.name} weights"))
    print(f"wrote {', '.join(k + '.png' for k in files)} and comparison.png ({' | '.join(shown)}) to {out}\n")
    rows = [[name, *(float(v) for v in quality(jnp.asarray(img), jnp.asarray(x)))] for name, img in results.items()]
    print(markdown(["method", "PSNR (dB)", "SSIM"], rows))
    return 0
