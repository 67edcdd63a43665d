"""``jaxrestore restore --method pnp-admm | suppa``: PnP-ADMM with our DRUNet in DPIR's schedule,
or a trained unrolled ADMM model (SUPPA), for deblurring or, with ``--scale``, super-resolution."""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxrestore import kernels
from jaxrestore.cli.common import (Report, blur_model, has_blur, inputs, load_reference, noise_level, outputs,
                                   references, say)
from jaxrestore.data import load_image

METHODS = ("pnp-admm", "suppa")
OPTIONS = {"x8": "--x8 (the denoiser's self-ensemble)"}


def add_options(parser) -> None:
    g = parser.add_argument_group("pnp-admm, suppa")
    g.add_argument("--x8", action="store_true", help="average the denoiser over the 8 rotations/flips of the image in "
                   "every iteration (DPIR's self-ensemble; 8x slower; PnP deblurring +0.1 dB, the shipped x2 SR model "
                   "+0.2 dB on Set5)")


def load_drunet(path):
    """A DRUNet from ``--weights``: our ``.npz`` files, or a PyTorch state dict (``.pth``/``.pt``:
    KAIR's ``drunet_color.pth`` or a deepinv checkpoint), read without torch."""
    from jaxrestore.models import drunet

    if Path(path).suffix.lower() in (".pth", ".pt"):
        return drunet.load_torch(path)
    return drunet.load_weights(path)


@functools.partial(jax.jit, static_argnames=("denoiser", "num_iters"))
def _pnp(op, y, net, noise, sigma_max, sigma_min, lam, *, denoiser, num_iters):
    from jaxrestore.solvers.admm import pnp_admm

    return jnp.clip(pnp_admm(op, denoiser, net, y, noise_sigma=noise, num_iters=num_iters, sigma_max=sigma_max,
                             sigma_min=sigma_min, lam=lam), 0.0, 1.0)


@functools.partial(jax.jit, static_argnums=(0, 1), static_argnames=("x8",))
def _suppa(config, graphdef, params, op, y, *, x8: bool = False):
    from jaxrestore.models.unrolled import solve

    x, info = solve(config, graphdef, params, jax.tree.map(lambda a: a[None], op), y[None], x8=x8)
    return jnp.clip(x[0], 0.0, 1.0), info


def _operator(args, blur, shape, src: Path):
    """The forward model for an observation of ``shape``: the blur, or (``--scale s``) blur or
    bicubic (no antialiasing) followed by s-fold decimation."""
    from jaxrestore.operators import Downsample

    if args.scale is None:
        return blur.operator(shape, src)
    s = args.scale
    hw = (shape[0] * s, shape[1] * s)
    kernel, convention = (kernels.bicubic(s, antialias=False), "convolution") if blur is None else (blur.kernel, blur.convention)
    try:
        return Downsample.from_kernel(kernel, hw, s, convention)
    except ValueError as e:
        raise ValueError(f"{src}: {e}") from None


def _pnp_setup(args, task):
    from jaxrestore.models import pretrained
    from jaxrestore.models.drunet import as_denoiser, self_ensemble
    from jaxrestore.protocols.suppa import PNP_PARAMS

    if args.weights:
        model, origin = load_drunet(args.weights), f"weights {args.weights}"
    else:
        model, origin = pretrained.drunet("small"), "the shipped denoiser (drunet_small)"
    denoiser, net = as_denoiser(model)
    if args.x8:
        denoiser = self_ensemble(denoiser)
        origin += ", x8 self-ensemble"
    settings = dict(PNP_PARAMS[task])
    if args.iterations is not None:
        settings["num_iters"] = args.iterations
    if args.lam is not None:
        settings["lam"] = args.lam
    smin = settings["sigma_min"]
    end = "the noise level" if smin is None else f"{smin * 255:.3g}/255"
    say(f"PnP-ADMM: {origin}; {settings['num_iters']} iterations, lam {settings['lam']:g}, "
        f"sigma {settings['sigma_max'] * 255:.3g}/255 -> {end}")
    return denoiser, net, settings


def _suppa_setup(args, task):
    from jaxrestore.models import pretrained, unrolled

    path = Path(args.weights) if args.weights else pretrained.shipped_suppa(task)
    if path is None:
        how = f"`jaxrestore train suppa/{'suppa' if task == 'deblur' else 'explicit'}-{task}`"
        raise ValueError(f"no shipped SUPPA model for {task}; train one with {how} and pass --weights FILE")
    config, graphdef, params, meta = unrolled.load(path)
    say(f"{config.mode} model {path.name} (trained for {meta.get('task', '?')}); "
        + (f"{config.iterations} iterations" if config.mode == "explicit" else f"fixed point to tol {config.tol:g}, "
           f"at most {config.max_iters} iterations") + (", x8 self-ensemble" if args.x8 else ""))
    return config, graphdef, params


def restore(args) -> int:
    if args.scale is not None and args.scale not in (2, 3, 4):
        raise ValueError(f"--scale must be 2, 3 or 4, got {args.scale}")
    if not has_blur(args) and args.scale is None:
        raise ValueError("give the blur with one of --preset, --kernel or --kernel-shape (or --scale for super-resolution)")
    blur = blur_model(args) if has_blur(args) else None
    task = "deblur" if args.scale is None else f"sr{args.scale}"
    srcs, is_folder = inputs(args.input, skip_bad=args.skip_bad)
    dsts = outputs(srcs, is_folder, args.output)
    refs = references(args.reference, srcs, is_folder)
    what = blur.description if blur is not None else "bicubic (no antialiasing)"
    say(f"forward model: {what}{f', then decimation by {args.scale}' if args.scale else ''}; method {args.method}")
    if args.method == "pnp-admm":
        denoiser, net, settings = _pnp_setup(args, task)
    else:
        config, graphdef, params = _suppa_setup(args, task)
    with Report(args.method, len(srcs), is_folder, with_input=False) as report:
        for src, dst, ref in zip(srcs, dsts, refs):
            y = load_image(src)
            op = _operator(args, blur, y.shape, src)
            gt = load_reference(ref, src, op.shape)
            if args.method == "pnp-admm":
                if args.sigma is not None or args.scale is None:
                    sigma, how = noise_level(args, blur.preset if blur is not None else None, y)
                else:
                    sigma, how = 0.0, "super-resolution default"
                smin = settings["sigma_min"]
                x = _pnp(op, jnp.asarray(y), net, jnp.float32(sigma), jnp.float32(settings["sigma_max"]),
                         None if smin is None else jnp.float32(smin), jnp.float32(settings["lam"]), denoiser=denoiser,
                         num_iters=int(settings["num_iters"]))
                line = f"noise std {sigma:.4g} ({how})"
            else:
                x, info = _suppa(config, graphdef, params, op, jnp.asarray(y), x8=args.x8)
                if not bool(info.finite):
                    raise ValueError(f"{src}: the {config.mode} iteration produced non-finite values after "
                                     f"{int(info.iterations)} iterations (is the model meant for this forward model?)")
                conv = "" if config.mode == "explicit" else (f"; {int(info.iterations)} iterations, residual "
                                                             f"{float(info.residual):.2e}" +
                                                             ("" if bool(info.converged) else " (NOT converged)"))
                line = f"{args.method}{conv}"
            report.done(src, dst, y, np.asarray(x), gt, line)
    return 0
