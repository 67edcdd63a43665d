"""``jaxrestore degrade``: blur an image (or every image of a folder) and add Gaussian noise, or
(``--keep P``) apply a random inpainting mask."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from jaxrestore.cli.common import (add_blur_options, blur_model, degrade_one, has_blur, inputs, outputs, positive,
                                   progress, save_npy, say)
from jaxrestore.data import load_image, save_image


def add_parser(sub) -> None:
    d = sub.add_parser(
        "degrade", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="blur an image (or a folder of images) and add Gaussian noise",
        description="Blur INPUT (an image, or every image of a folder) circularly and add white Gaussian noise.\n\n"
                    "The result is written as an 8-bit image, so it is clipped to [0, 1] and quantised to\n"
                    "1/255 steps: it is not exactly A x + noise (for exact values use the library).")
    d.add_argument("input", metavar="INPUT", help="image file, or folder of images")
    d.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                   help="output image (or folder: one .png per input, same names)")
    add_blur_options(d, required=False)
    d.add_argument("--keep", type=float, metavar="P", help="inpainting instead of a blur: keep each pixel with "
                   "probability P (a Bernoulli mask from --seed, shared over channels; missing pixels become 0); "
                   "restore with 'restore --method reg-gd --keep P --seed N' or --mask")
    d.add_argument("--save-mask", metavar="FILE.png", help="--keep: also save the mask (white = observed)")
    d.add_argument("--sigma", type=float, metavar="S",
                   help="noise std on the [0, 1] scale (default: the preset's; gaussB draws one per image)")
    d.add_argument("--seed", type=int, default=0, metavar="N",
                   help="seed of the numpy generator that draws the noise, images in file-name order (default 0)")
    d.add_argument("--save-kernel", metavar="FILE.npy", help="also save the kernel used")
    d.add_argument("--skip-bad", action="store_true", help="folders: leave out unreadable or too-small images instead of "
                   "stopping before any output")
    d.set_defaults(run=run)


def _inpaint(args) -> int:
    from jaxrestore.cli.reg import bernoulli_mask

    if has_blur(args):
        raise ValueError("--keep (inpainting) takes no blur")
    sigma = args.sigma or 0.0
    srcs, is_folder = inputs(args.input, skip_bad=args.skip_bad)
    dsts = outputs(srcs, is_folder, args.output)
    images = [load_image(src) for src in srcs]  # all readable before anything is written
    masks = [bernoulli_mask(x.shape, args.keep, args.seed) for x in images]
    if args.save_mask:
        if len({x.shape[:2] for x in images}) > 1:
            raise ValueError("--save-mask needs images of one size (one mask)")
        save_image(Path(args.save_mask), masks[0])
    say(f"inpainting: Bernoulli mask keeping {args.keep:g} of the pixels (seed {args.seed}); noise std {sigma:g}")
    rng = np.random.default_rng(args.seed + 1)
    with progress(len(srcs), is_folder, "degrade") as bar:
        for x, m, dst in zip(images, masks, dsts):
            y = m[..., None] * (x + sigma * rng.standard_normal(x.shape))
            save_image(dst, y)
            say(f"{dst}: {float(m.mean()):.3f} of the pixels kept")
            bar.update()
    return 0


def run(args) -> int:
    positive(args.sigma, "--sigma")
    if args.keep is not None:
        return _inpaint(args)
    if args.save_mask:
        raise ValueError("--save-mask goes with --keep (inpainting)")
    if not has_blur(args):
        raise ValueError("give the blur with one of --preset, --kernel or --kernel-shape (or --keep P for inpainting)")
    blur = blur_model(args)
    if args.sigma is None and blur.preset is None:
        raise ValueError("give the noise level with --sigma (only a --preset carries one)")
    srcs, is_folder = inputs(args.input, skip_bad=args.skip_bad, min_size=np.shape(blur.kernel))
    dsts = outputs(srcs, is_folder, args.output)
    if args.save_kernel:
        save_npy(Path(args.save_kernel), blur.kernel)
    rng = np.random.default_rng(args.seed)
    if args.sigma is not None:
        noise = f"noise std {args.sigma:g}"
    elif blur.preset.noise_std is not None:
        noise = f"noise std {blur.preset.noise_std:g}"
    else:
        noise = "noise std drawn per image in [{:g}, {:g}]".format(*blur.preset.noise_range)
    say(f"blur: {blur.description}; {noise}; seed {args.seed}")
    with progress(len(srcs), is_folder, "degrade") as bar:
        for src, dst in zip(srcs, dsts):
            x = load_image(src)
            op = blur.operator(x.shape, src)
            sigma = args.sigma if args.sigma is not None else blur.preset.noise_level(rng)
            save_image(dst, degrade_one(op, x, sigma, rng))
            say(f"{dst}: noise std {sigma:.4g}")
            bar.update()
    return 0
