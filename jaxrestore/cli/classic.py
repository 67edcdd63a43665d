"""``jaxrestore restore --method var | wiener | irestnet``: the known-blur methods of the iRestNet
paper's comparison. The restorations are jitted once per image size (the blur operators are
cached by size), so a folder of same-size images compiles once."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrestore.batch import WIENER_LAM_SCALE
from jaxrestore.cli.common import (Report, blur_model, has_blur, inputs, load_reference, noise_level, outputs,
                                   references, say)
from jaxrestore.data import load_image
from jaxrestore.presets import Preset, var_params_for_sigma
from jaxrestore.solvers import projected_gradient, run, wiener

METHODS = ("var", "wiener", "irestnet")
OPTIONS: dict[str, str] = {}


def add_options(parser) -> None:
    """var, wiener and irestnet use the shared options only."""


@functools.partial(jax.jit, static_argnames="iterations")
def var_restore(op, y, lam, delta, iterations):
    """VAR: projected FISTA on ``1/2 ||A x - y||^2 + lam R(x)`` over ``[0, 1]^n``."""
    return run(projected_gradient(op, lam, delta), y, num_iters=iterations).x


@jax.jit
def wiener_restore(op, y, lam):
    return jnp.clip(wiener(op, y, lam), 0.0, 1.0)


def irestnet_runner(model):
    """A jitted single-image iRestNet restorer through the pure (apply_fn, state) boundary; the
    noise level is estimated from y inside the model, as it was in training."""
    from jaxrestore.models.irestnet import as_function

    apply_fn, state = as_function(model)
    one = jax.jit(lambda state, y, op: apply_fn(state, y[None], jax.tree.map(lambda a: a[None], op))[0])
    return lambda y, op: one(state, y, op)


def _irestnet_model(args, preset):
    from jaxrestore.models import pretrained
    from jaxrestore.models.irestnet_io import load_weights

    if args.weights:
        return load_weights(args.weights), f"weights {args.weights}"
    if preset is None:
        raise ValueError("--method irestnet needs --preset (its shipped weights) or --weights FILE")
    return pretrained.irestnet(preset.name), f"shipped weights for {preset.name}"


def var_params(args, preset: Preset | None, sigma: float, src) -> tuple[float, float, int]:
    """``(lam, delta, iterations)``: the options when given, else the preset's tuned values for
    a fixed-noise preset (unless --sigma names another noise level) or its sigma-scaled lam
    (gaussB, whose noise level varies per image), else ``var_params_for_sigma(sigma)``."""
    chosen = (args.lam, args.delta, args.iterations)
    if None not in chosen:
        return chosen
    tuned = preset is not None and preset.var.get("lam") is not None
    if tuned and preset.var.get("sigma_exponent"):
        base = (preset.var_lambda(sigma), preset.var["delta"], preset.var["iterations"])
    elif tuned and preset.noise_std is not None and (args.sigma is None or args.sigma == preset.noise_std):
        base = (preset.var["lam"], preset.var["delta"], preset.var["iterations"])
    else:
        if not sigma > 0:
            raise ValueError(f"{src}: the estimated noise std is {sigma:.3g}; give --sigma (or --lam, --delta and --iterations)")
        base = var_params_for_sigma(sigma)
        if preset is not None and preset.var.get("iterations"):
            base = (base[0], base[1], preset.var["iterations"])
    return tuple(c if c is not None else b for c, b in zip(chosen, base))


def restore(args) -> int:
    if args.scale is not None:
        raise ValueError(f"--scale (super-resolution) works with --method pnp-admm, suppa or reg-gd, not {args.method}")
    if not has_blur(args):
        raise ValueError("give the blur with one of --preset, --kernel or --kernel-shape")
    blur = blur_model(args)
    srcs, is_folder = inputs(args.input, skip_bad=args.skip_bad, min_size=np.shape(blur.kernel))
    dsts = outputs(srcs, is_folder, args.output)
    refs = references(args.reference, srcs, is_folder)
    say(f"blur: {blur.description}; method {args.method}")
    if args.method == "irestnet":
        model, origin = _irestnet_model(args, blur.preset)
        restore_irestnet = irestnet_runner(model)
        say(f"iRestNet: {origin}, {model.config.num_layers} layers")
    with Report(args.method, len(srcs), is_folder) as report:
        for src, dst, ref in zip(srcs, dsts, refs):
            y = load_image(src)
            gt = load_reference(ref, src, y.shape)
            op = blur.operator(y.shape, src)
            sigma, how = noise_level(args, blur.preset, y)
            if args.method == "var":
                lam, delta, iterations = var_params(args, blur.preset, sigma, src)
                x = var_restore(op, jnp.asarray(y), lam, delta, iterations)
                params = f"lam {lam:.3g}, delta {delta:g}, {iterations} iterations"
            elif args.method == "irestnet":
                x = restore_irestnet(jnp.asarray(y), op)
                params = "(noise level estimated inside the network)"
            else:
                if args.lam is None and not sigma > 0:
                    raise ValueError(f"{src}: the estimated noise std is {sigma:.3g}; give --sigma or --lam")
                lam = args.lam if args.lam is not None else WIENER_LAM_SCALE * sigma**2
                x = wiener_restore(op, jnp.asarray(y), lam)
                params = f"lam {lam:.3g}"
            report.done(src, dst, y, np.asarray(x), gt, f"noise std {sigma:.4g} ({how}); {args.method} {params}")
    return 0
