"""``jaxrestore restore --method reg-gd``: PnP gradient descent with the learned regularising
gradient (PnP-ReG), for the three tasks of its protocol (:mod:`jaxrestore.protocols.reg`):

* deblurring: ``--preset`` / ``--kernel`` / ``--kernel-shape``; noise ``--sigma`` or estimated;
* super-resolution x2: ``--scale 2`` (default forward model: the authors' antialiased bicubic,
  ``a = -0.75``; or the blur given, then decimation);
* inpainting: ``--mask FILE`` (``.png``: white = observed, or ``.npy`` in ``[0, 1]``, the image's
  size) or ``--keep P --seed N``, which rebuilds the Bernoulli mask that ``jaxrestore degrade
  --keep P --seed N`` applied.

Defaults (step size, iterations, ``sigma_r``) are the protocol's tuned values for our shipped
``G`` (``jaxrestore/weights/reg_cpu.npz``, or ``--weights reg_*.npz``). Glue only: the math is
:func:`jaxrestore.solvers.pnp_gd`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxrestore.cli.common import (Report, blur_model, has_blur, inputs, load_reference, noise_level, outputs,
                                   positive, references, say)
from jaxrestore.data import load_image
from jaxrestore.operators import Downsample, Inpaint
from jaxrestore.solvers import pnp_gd, run

METHODS = ("reg-gd",)
OPTIONS = {"mask": "--mask", "keep": "--keep", "mu": "--mu"}

REPRESENTATIVE = {"deblur": "k2_2.55", "inpaint": "keep0.2", "sr2": "x2"}  # whose tuned values the CLI uses


def bernoulli_mask(shape, keep: float, seed: int) -> np.ndarray:
    """The ``(H, W)`` 0/1 mask keeping each pixel with probability ``keep`` (``(0, 1]``), from
    ``numpy.random.default_rng(seed)``: the same mask for ``degrade --keep`` and ``restore --keep``."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"--keep must be in (0, 1], got {keep}")
    return (np.random.default_rng(seed).random(tuple(shape[:2])) < keep).astype(np.float32)


def load_mask(path, shape) -> np.ndarray:
    """An ``(H, W)`` mask in ``[0, 1]`` from a ``.npy`` array or an image (``.png``: gray level / 255;
    colour images must be gray)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"mask file not found: {p}")
    if p.suffix.lower() == ".npy":
        try:
            m = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read mask {p}: {' '.join(str(e).split())}") from None
        m = np.asarray(m, np.float64)
    else:
        m = load_image(p)
        if m.ndim == 3:
            if not np.allclose(m, m[..., :1]):
                raise ValueError(f"mask {p} has colour; a mask is one gray level per pixel (white = observed)")
            m = m[..., 0]
    if m.ndim != 2:
        raise ValueError(f"mask {p} must be 2-D (H, W), got shape {m.shape}")
    if tuple(m.shape) != tuple(shape[:2]):
        raise ValueError(f"mask {p} is {m.shape[0]}x{m.shape[1]} but the image is {shape[0]}x{shape[1]}")
    if not np.all(np.isfinite(m)) or m.min() < 0 or m.max() > 1:
        raise ValueError(f"mask {p} must hold values in [0, 1], got [{np.nanmin(m):.3g}, {np.nanmax(m):.3g}]")
    return m.astype(np.float32)


@functools.partial(jax.jit, static_argnames=("grad_fn", "iterations"))
def _reg_gd(op, y, g_params, sigma_r, mu, *, grad_fn, iterations):
    return jnp.clip(run(pnp_gd(op, grad_fn, sigma=sigma_r, mu=mu), y, g_params, num_iters=iterations).x, 0.0, 1.0)


def _task(args) -> str:
    if args.mask is not None or args.keep is not None:
        if args.mask is not None and args.keep is not None:
            raise ValueError("give the inpainting mask with --mask FILE or --keep P (with --seed), not both")
        if args.scale is not None or has_blur(args):
            raise ValueError("inpainting (--mask/--keep) takes no blur or --scale")
        return "inpaint"
    if args.scale is not None:
        if args.scale != 2:
            raise ValueError(f"--method reg-gd does super-resolution by 2 (the PnP-ReG protocol), got --scale {args.scale}")
        return "sr2"
    if not has_blur(args):
        raise ValueError("reg-gd needs the degradation: a blur (--preset, --kernel or --kernel-shape), --scale 2, or an "
                         "inpainting mask (--mask FILE or --keep P)")
    return "deblur"


def add_options(parser) -> None:
    g = parser.add_argument_group("reg-gd (PnP gradient descent with the learned regularising gradient)")
    g.add_argument("--mask", metavar="FILE", help="inpainting: the mask (.png, white = observed; or .npy in [0, 1])")
    g.add_argument("--keep", type=float, metavar="P", help="inpainting: rebuild the Bernoulli mask of "
                   "'degrade --keep P --seed N' (with --seed)")
    g.add_argument("--seed", type=int, default=0, metavar="N", help="--keep: the seed the mask was drawn with (default 0)")
    g.add_argument("--mu", type=float, metavar="MU", help="step size (Adam's learning rate on x; default: the tuned value)")


def restore(args) -> int:
    """``restore --method reg-gd`` for deblurring, x2 super-resolution or inpainting."""
    from jaxrestore.models import pretrained
    from jaxrestore.models.reg import as_gradient, load_pair
    from jaxrestore.protocols import reg as protocol

    positive(args.mu, "--mu")
    task = _task(args)
    base = protocol.reg_settings(REPRESENTATIVE[task])
    rep = protocol.setting(REPRESENTATIVE[task])
    mu = args.mu if args.mu is not None else base["mu"]
    iterations = args.iterations if args.iterations is not None else base["iterations"]
    if iterations < 1:
        raise ValueError(f"--iterations must be >= 1, got {iterations}")
    if args.weights:
        pair, origin = load_pair(args.weights), f"weights {args.weights}"
    else:
        pair, origin = pretrained.reg("cpu"), "the shipped regulariser (reg_cpu)"
    grad_fn, g_params = as_gradient(pair.G)
    blur = blur_model(args) if task != "inpaint" and has_blur(args) else None
    srcs, is_folder = inputs(args.input, skip_bad=args.skip_bad)
    dsts = outputs(srcs, is_folder, args.output)
    refs = references(args.reference, srcs, is_folder)
    if task == "inpaint":
        what = f"inpainting, mask {args.mask}" if args.mask else f"inpainting, Bernoulli mask keeping {args.keep:g} (seed {args.seed})"
    elif task == "sr2":
        what = (blur.description if blur else "bicubic a=-0.75, antialiased") + ", then decimation by 2"
    else:
        what = blur.description
    say(f"forward model: {what}; reg-gd with {origin}: Adam on x, step {mu:g}, {iterations} iterations, "
        "dihedral cycle")
    # every input and its mask checked before anything is computed
    images = []
    for src in srcs:
        y = load_image(src)
        mask = None
        if task == "inpaint":
            mask = load_mask(args.mask, y.shape) if args.mask else bernoulli_mask(y.shape, args.keep, args.seed)
        images.append((y, mask))
    with Report("reg-gd", len(srcs), is_folder, with_input=False) as report:
        for src, dst, ref, (y, mask) in zip(srcs, dsts, refs, images):
            if task == "inpaint":
                op = Inpaint.create(jnp.asarray(mask))
                sigma_r = args.sigma if args.sigma is not None else base["sigma_r"]
                how = "given" if args.sigma is not None else "the protocol's, noiseless"
            else:
                if task == "sr2":
                    kernel = blur.kernel if blur else protocol.setting_kernel(rep)
                    conv = blur.convention if blur else "convolution"
                    op = Downsample.from_kernel(jnp.asarray(kernel, jnp.float32), (2 * y.shape[0], 2 * y.shape[1]), 2, conv)
                else:
                    op = blur.operator(y.shape)
                noise, how = noise_level(args, blur.preset if blur else None, y)
                sigma_r = max(noise, 0.5 / 255) * base["sigma_r"] / rep.noise  # the tuned multiple of the noise level
            gt = load_reference(ref, src, op.shape)
            x = np.asarray(_reg_gd(op, jnp.asarray(y), g_params, jnp.float32(sigma_r), jnp.float32(mu), grad_fn=grad_fn,
                                   iterations=int(iterations)))
            report.done(src, dst, y, x, gt, f"sigma_r {sigma_r * 255:.3g}/255 ({how})")
    return 0


__all__ = ["restore", "add_options", "bernoulli_mask", "load_mask"]
