"""``jaxrestore restore``: the options every method shares, the checks that an option belongs to
the chosen method, and the dispatch to the method's module:

* :mod:`~jaxrestore.cli.classic`: ``var``, ``wiener``, ``irestnet`` (a known blur);
* :mod:`~jaxrestore.cli.admm`: ``pnp-admm``, ``suppa`` (a known blur, or ``--scale``);
* :mod:`~jaxrestore.cli.reg`: ``reg-gd`` (a blur, ``--scale 2`` or an inpainting mask);
* :mod:`~jaxrestore.cli.golf`: ``golf`` (blind: no kernel);
* :mod:`~jaxrestore.cli.batch`: ``--kernels KDIR``, one kernel per image (var, wiener, pnp-admm).

A method module has ``METHODS`` (its ``--method`` names), ``OPTIONS`` (``dest -> flag`` of the
options only its methods take), ``add_options(parser)`` and ``restore(args)``; adding a method is
adding such a module to :data:`MODULES`.
"""

from __future__ import annotations

import argparse

from jaxrestore.batch import WIENER_LAM_SCALE
from jaxrestore.cli import admm, batch, classic, golf, reg
from jaxrestore.cli.common import add_blur_options, positive

MODULES = (classic, admm, reg, golf)


def add_parser(sub) -> None:
    methods = [m for module in MODULES for m in module.METHODS]
    r = sub.add_parser(
        "restore", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="deblur (or super-resolve, or inpaint) an image or a folder: VAR, Wiener, iRestNet, PnP-ADMM, SUPPA, "
             "PnP-ReG; Golf (blind)",
        description="Deblur INPUT with a known blur (non-blind), or super-resolve it (--scale, pnp-admm/suppa/reg-gd),\n"
                    "or inpaint it (--mask/--keep, reg-gd), or deblur it without the kernel (--method golf).\n\n"
                    "noise std: --sigma, else the preset's fixed one, else estimate_sigma(y) (printed).\n"
                    "var: projected FISTA on 1/2||Ax - y||^2 + lam TV_delta(x), x in [0, 1]. lam, delta and\n"
                    "  iterations: the options when given, else the preset's tuned values (gaussB: lam scaled\n"
                    "  by sigma / 0.03), else (no preset, or a --sigma other than the preset's) the rule\n"
                    "  var_params_for_sigma(sigma).\n"
                    f"wiener: closed-form 1/2||Ax - y||^2 + lam/2 ||grad x||^2, lam default {WIENER_LAM_SCALE:g} sigma^2.\n"
                    "irestnet: the unfolded interior-point network (shipped weights for --preset, or --weights).\n"
                    "pnp-admm: scaled ADMM with our DRUNet denoiser, DPIR's sigma schedule (--iterations, --lam).\n"
                    "suppa: a trained unrolled ADMM model (--weights suppa_<mode>_<task>.npz); fixed-point modes\n"
                    "  report their iterations and residual, and say when they did not converge.\n"
                    "reg-gd: PnP gradient descent with the learned regularising gradient G (PnP-ReG), for a blur,\n"
                    "  --scale 2 or inpainting (--mask FILE or --keep P --seed N).\n"
                    "golf: blind deblurring (no kernel): the Golf Optimizer's first step G1, then --iterations\n"
                    "  (default 3) steps of its learned prior gradient G2 (shipped golf_cpu-long, or --weights).\n"
                    "--kernels KDIR: each image with its own kernel KDIR/<stem>.npy or .png (var, wiener,\n"
                    "  pnp-admm; no preset, so the parameters follow the noise level), all kernels checked first.\n"
                    "Results are clipped to [0, 1] and written as 8-bit images.")
    r.add_argument("input", metavar="INPUT", help="blurred image file, or folder of images")
    r.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                   help="output image (or folder: one .png per input, same names)")
    r.add_argument("--method", choices=methods, default="var", help="restoration method (default var)")
    r.add_argument("--weights", metavar="FILE", help="the trained model to use instead of the shipped one: irestnet: "
                   "weights saved by 'jaxrestore train' (default: the weights shipped for --preset); pnp-admm: a DRUNet "
                   "file, ours (.npz) or a PyTorch state dict (.pth: KAIR's drunet_color.pth, deepinv's); suppa: "
                   "suppa_<mode>_<task>.npz; reg-gd: reg_<name>.npz; golf: golf_<name>.npz")
    r.add_argument("--scale", type=int, metavar="S", help="pnp-admm/suppa/reg-gd: super-resolution by S (pnp-admm/suppa: "
                   "2, 3, 4; reg-gd: 2): the forward model is the blur (default: bicubic) followed by S-fold decimation")
    add_blur_options(r, required=False).add_argument(
        "--kernels", metavar="KDIR", help="one kernel per image: KDIR/<image stem>.npy (summing to 1) or .png (a PSF "
        "image, normalised to sum 1); methods var, wiener, pnp-admm, restored in batches (see --chunk-size)")
    r.add_argument("--sigma", type=float, metavar="S", help="noise std on the [0, 1] scale (default: see above)")
    r.add_argument("--lam", type=float, help="regularisation weight (default: see above)")
    r.add_argument("--delta", type=float, help="VAR: TV smoothing delta (default: see above)")
    r.add_argument("--iterations", type=int, metavar="N", help="number of iterations (default: the method's tuned value)")
    for module in MODULES:
        module.add_options(r)
    r.add_argument("--chunk-size", type=int, metavar="N", help="--kernels: images of one size restored per compiled "
                   "call (default 8; rounded up to a multiple of the device count)")
    r.add_argument("--skip-bad", action="store_true", help="folders: leave out unreadable or too-small images (each "
                   "named on stderr, a summary at the end) instead of stopping before any output")
    r.add_argument("--reference", metavar="GT",
                   help="ground truth (image, or folder with the same names) to print PSNR and SSIM against")
    r.set_defaults(run=run)


def _check_method_options(args) -> None:
    """An option that only other methods take is an error, not silently ignored."""
    for module in MODULES:
        for dest, flag in module.OPTIONS.items():
            value = getattr(args, dest, None)
            if value is not None and value is not False and args.method not in module.METHODS:
                raise ValueError(f"{flag} works with --method {' or '.join(module.METHODS)}, not {args.method}")


def run(args) -> int:
    if args.method in golf.METHODS:  # blind: it checks that nothing of the kernel-based methods was given
        return golf.restore(args)
    for name in ("sigma", "lam", "delta"):
        positive(getattr(args, name), f"--{name}")
    if args.iterations is not None and args.iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {args.iterations}")
    _check_method_options(args)
    if args.chunk_size is not None and args.kernels is None:
        raise ValueError("--chunk-size works with --kernels (one kernel per image)")
    if args.kernels is not None:
        return batch.restore(args)
    module = next(m for m in MODULES if args.method in m.METHODS)
    return module.restore(args)
