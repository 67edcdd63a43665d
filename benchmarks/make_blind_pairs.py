"""Build a folder of blind-deblurring test pairs from any folder of sharp images, with our
camera-shake generator (the same distribution the shipped Golf model was trained on):

    python benchmarks/make_blind_pairs.py --images ../shared/data/bsds500/val --out pairs/bsds_val --seed 1 --skip 8

For image ``i`` (sorted names) a kernel is drawn by :func:`jaxrestore.data.blind.motion_kernels`
from ``fold_in(key(seed), i)`` (``--size`` 31, trajectory length bound uniform in
``[--min-length, size - 3]``), the image is blurred by *linear* convolution and only the part that
saw no border is kept (``H - size + 1`` by ``W - size + 1``: what a camera records), white
Gaussian noise of std uniform in ``[0, --noise]`` (0..255 scale) is added, and the script writes
``OUT/blur/<stem>.png`` (8-bit), ``OUT/sharp/<stem>.png`` (the matching centre of the sharp
image), ``OUT/kernels/<stem>.npy`` (the kernel, convolution convention) and ``OUT/pairs.json``
(seed, noise std per image). ``benchmarks/golf_table.py --pairs OUT`` scores methods on it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from _common import default_data, fail, write_json  # noqa: E402
from jaxrestore.data import list_images, load_image, save_image  # noqa: E402
from jaxrestore.data.atomic import atomic_open  # noqa: E402
from jaxrestore.data.blind import blur_valid, motion_kernels  # noqa: E402


def make_pair(x: np.ndarray, key, size: int, min_length: float, noise_max: float):
    """``(blurred, sharp, kernel, sigma)`` for one sharp image ``x`` ``(H, W, 3)``."""
    k_kernel, k_sigma, k_noise = jax.random.split(key, 3)
    kernel = motion_kernels(k_kernel, 1, size, min_length)[0]
    y = blur_valid(jnp.asarray(x), kernel)
    sigma = noise_max * float(jax.random.uniform(k_sigma))
    y = y + sigma * jax.random.normal(k_noise, y.shape, y.dtype)
    r = size // 2
    return np.clip(np.asarray(y), 0.0, 1.0), x[r:x.shape[0] - r, r:x.shape[1] - r], np.asarray(kernel, np.float64), sigma


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=default_data("bsds500", "val"), help="folder of sharp images (default ../shared/data/bsds500/val)")
    ap.add_argument("--out", required=True, help="output folder (blur/, sharp/, kernels/, pairs.json)")
    ap.add_argument("--seed", type=int, default=1, help="kernel and noise seed (default 1; training used 0)")
    ap.add_argument("--skip", type=int, default=0, help="leave out the first N images (sorted names): e.g. 8, the "
                    "val images golf/cpu selected its model on")
    ap.add_argument("--limit", type=int, help="at most N images (after --skip)")
    ap.add_argument("--size", type=int, default=31, help="kernel size (odd, default 31)")
    ap.add_argument("--min-length", type=float, default=5.0, help="smallest trajectory length bound in px (default 5)")
    ap.add_argument("--noise", type=float, default=2.55, help="largest noise std on the 0..255 scale (default 2.55)")
    args = ap.parse_args(argv)
    if args.size < 5 or args.size % 2 == 0:
        fail(f"--size must be odd and >= 5, got {args.size}")
    if not 0 < args.min_length <= args.size - 3:
        fail(f"--min-length must be in (0, {args.size - 3}], got {args.min_length}")
    if not 0 <= args.noise < 255:
        fail(f"--noise must be in [0, 255), got {args.noise}")
    if args.skip < 0:
        fail(f"--skip must be >= 0, got {args.skip}")
    if args.limit is not None and args.limit < 1:
        fail(f"--limit must be >= 1, got {args.limit}")
    try:
        paths = list_images(args.images)[args.skip:][: args.limit]
    except ValueError as e:
        fail(str(e))
    if not paths:
        fail(f"no images in {args.images}")
    out = Path(args.out)
    key = jax.random.key(args.seed)
    record = {"seed": args.seed, "skip": args.skip, "size": args.size, "min_length": args.min_length, "noise_max": args.noise,
              "images": {}}
    for i, p in enumerate(tqdm(paths, desc="pairs", unit="img", file=sys.stderr, disable=None)):
        x = load_image(p)
        if x.shape[-1] != 3:
            x = np.repeat(x[..., :1], 3, axis=-1)
        if min(x.shape[:2]) < 2 * args.size:
            fail(f"{p} is {x.shape[0]}x{x.shape[1]}: too small for {args.size}x{args.size} kernels")
        y, sharp, kernel, sigma = make_pair(x, jax.random.fold_in(key, args.skip + i), args.size, args.min_length, args.noise / 255.0)
        save_image(out / "blur" / f"{p.stem}.png", y)
        save_image(out / "sharp" / f"{p.stem}.png", sharp)
        (out / "kernels").mkdir(parents=True, exist_ok=True)
        with atomic_open(out / "kernels" / f"{p.stem}.npy", "wb") as f:
            np.save(f, kernel)
        record["images"][f"{p.stem}.png"] = {"source": p.name, "noise_std": sigma * 255.0}
    write_json(out / "pairs.json", record)
    print(f"wrote {len(paths)} pairs to {out} (blur/, sharp/, kernels/, pairs.json)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
