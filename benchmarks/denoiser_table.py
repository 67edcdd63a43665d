"""Gaussian denoising PSNR of our DRUNet beside the published DRUNet (Zhang et al., TPAMI 2021,
Table 3: colour CBSD68).

Adds white Gaussian noise of std ``sigma/255`` (seeded per image) to each image of ``--data``
(restricted to the CBSD68 subset when ``--subset`` names the id list), denoises it with the noise
level given, and prints the mean PSNR (RGB, outputs clipped to [0, 1], whole image) per sigma.

    python benchmarks/denoiser_table.py --data ../shared/data/bsds500/val \\
        --subset ../shared/data/bsds500/CBSD68_subset_names.txt --json results/denoiser.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_data, fail, markdown_table, write_json  # noqa: E402

from jaxrestore.data import list_images, load_image  # noqa: E402
from jaxrestore.metrics import psnr  # noqa: E402
from jaxrestore.models.drunet import as_denoiser, load_weights  # noqa: E402

# Zhang et al., TPAMI 2021, Table 3: DRUNet on colour CBSD68
PUBLISHED = {15: 34.30, 25: 31.69, 50: 28.51}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=default_data("bsds500", "val"), help="folder of clean images")
    p.add_argument("--subset", default=default_data("bsds500", "CBSD68_subset_names.txt"),
                   help="text file of image ids to keep (default: the CBSD68 ids; 'none' keeps all)")
    p.add_argument("--weights", help="DRUNet weights file (default: the shipped drunet_small)")
    p.add_argument("--sigmas", default="15,25,50", help="noise stds on the 0..255 scale")
    p.add_argument("--limit", type=int, help="first N images only")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    try:
        sigmas = [float(s) for s in args.sigmas.split(",")]
    except ValueError:
        fail(f"bad --sigmas {args.sigmas!r}")
    folder = Path(args.data)
    if not folder.is_dir():
        fail(f"data folder not found: {folder}")
    paths = list_images(folder)
    if args.subset and args.subset != "none":
        sub = Path(args.subset)
        if not sub.is_file():
            fail(f"subset list not found: {sub}")
        keep = {line.strip() for line in sub.read_text().splitlines() if line.strip()}
        paths = [q for q in paths if q.stem in keep]
    if args.limit:
        paths = paths[: args.limit]
    if not paths:
        fail(f"no images in {folder} (after --subset/--limit)")
    try:
        if args.weights:
            model, name = load_weights(args.weights), args.weights
        else:
            from jaxrestore.models.pretrained import drunet

            model, name = drunet("small"), "drunet_small (shipped)"
    except ValueError as e:
        fail(str(e))
    denoiser, params = as_denoiser(model)
    run = jax.jit(lambda params, y, s: jnp.clip(denoiser(params, y, s), 0.0, 1.0))
    results = {s: [] for s in sigmas}
    noisy = {s: [] for s in sigmas}
    t0 = time.perf_counter()
    for i, path in enumerate(tqdm(paths, desc="denoise", unit="img", file=sys.stderr)):
        x = load_image(path).astype(np.float32)
        for j, s in enumerate(sigmas):
            rng = np.random.default_rng(1000 * i + j)
            y = (x + (s / 255.0) * rng.standard_normal(x.shape)).astype(np.float32)
            out = run(params, jnp.asarray(y), jnp.float32(s / 255.0))
            results[s].append(float(psnr(out, jnp.asarray(x))))
            noisy[s].append(float(psnr(jnp.asarray(y), jnp.asarray(x))))
    seconds = time.perf_counter() - t0
    rows = [[f"{s:g}", float(np.mean(noisy[s])), float(np.mean(results[s])), PUBLISHED.get(int(s))] for s in sigmas]
    print(f"{len(paths)} images of {folder}; model {name}; {seconds:.1f} s")
    print(markdown_table(["sigma (/255)", "noisy PSNR", "ours PSNR", "DRUNet published (CBSD68)"], rows))
    if args.json:
        write_json(args.json, {"n_images": len(paths), "model": name,
                               "psnr": {f"{s:g}": float(np.mean(results[s])) for s in sigmas},
                               "noisy_psnr": {f"{s:g}": float(np.mean(noisy[s])) for s in sigmas},
                               "published": {str(k): v for k, v in PUBLISHED.items()}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
